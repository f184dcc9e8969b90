"""Hot reload: serve the version `models/current` points to, without a restart.

Every `interval_s` the link is resolved (a readlink and a stat: no new dependency, no inotify).
When it names another version, that version is loaded and warmed up in a worker thread, off the
event loop, and only then handed to `install` (PredictionCore.use_model): one attribute
assignment on the event loop, between calls. A version that fails to load (unreadable, another
pass mark, another feature schema) is logged once and the current model stays; it is tried
again only when the link moves.

With a `follower` (inference_service.model_follower, STUDENTPERF_MODEL_SOURCE=database), each
poll first brings the folder's link to the database's pointer, so a version promoted on another
machine is loaded on the same poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from inference_service.model import ServedModel, load_served_model
from inference_service.model_follower import ModelFollower
from studentperf.model_artifact import CURRENT, ModelArtifactError, resolve_version_dir

log = logging.getLogger(__name__)


def watches(model_path: str) -> bool:
    """Whether `model_path` is a models folder (with `current`), not one fixed version."""
    return (Path(model_path) / CURRENT).is_symlink()


class ModelReloader:
    def __init__(
        self,
        model_path: str,
        *,
        expected_pass_mark: float,
        serving: ServedModel,
        install: Callable[[ServedModel], None],
        interval_s: float = 1.0,
        follower: ModelFollower | None = None,
    ) -> None:
        self._follower = follower
        self._root = model_path
        self._pass_mark = expected_pass_mark
        self._install = install
        self._interval_s = interval_s
        self._seen = Path(serving.path)  # the version directory last acted on
        self._problem = ""  # the last reason the link could not be followed, logged once
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="model-reloader")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._follower is not None:
            await self._follower.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # the watcher must outlive any surprise, e.g. a vanished folder
                log.exception("model reload: unexpected error; still serving the current model")

    async def check(self) -> bool:
        """Loads and installs the linked version if it is new; returns whether it did."""
        if self._follower is not None:
            await self._follower.sync()
        try:
            target = resolve_version_dir(self._root)
        except ModelArtifactError as err:
            if str(err) != self._problem:
                log.warning("model reload: %s; still serving the current model", err)
                self._problem = str(err)
            return False
        self._problem = ""
        if target == self._seen:
            return False
        self._seen = target
        try:
            model = await asyncio.to_thread(self._load, target)
        except Exception as err:  # whatever is wrong with that version, keep serving this one
            log.error(
                "model reload: cannot serve %s (%s); still serving the current model",
                target.name,
                err,
            )
            return False
        self._install(model)
        log.info("model reload: now serving %s", model.version)
        return True

    def _load(self, target: Path) -> ServedModel:
        model = load_served_model(str(target), expected_pass_mark=self._pass_mark)
        model.warm_up()
        return model
