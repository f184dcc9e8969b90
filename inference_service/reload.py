"""Hot reload: serve the version `models/current` points to, without a restart.

Every `interval_s` the link is resolved (a readlink and a stat: no new dependency, no inotify).
When it names another version, that version is loaded and warmed up in a worker thread, off the
event loop, and only then handed to `install` (PredictionCore.use_model): one attribute
assignment on the event loop, between calls. A version that fails to load (unreadable, another
pass mark, another feature schema) is logged once and the current model stays; it is tried
again only when the link moves.

With a `follower` (inference_service.model_follower, STUDENTPERF_MODEL_SOURCE=database), each
poll first brings the version the database's pointer names into the folder, so a version
promoted on another machine is loaded on the same poll; the folder's link is moved to it only
once it loaded. The pointer alone says what to serve: while it cannot be read, a worker keeps
what it serves. The link is what a restarted worker starts on (`load_at_start`) when the
pointer's version does not load or the database does not answer: a version this replica loaded.
A new replica has no such version (its folder holds the pointer's version at most): it falls
back to the newest version the pointer's version replaced that it can load (`FALLBACK_VERSIONS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from inference_service.metrics import InferenceMetrics
from inference_service.model import ServedModel, load_served_model
from inference_service.model_follower import ModelFollower
from studentperf.model_artifact import (
    CURRENT,
    ModelArtifactError,
    linked_version,
    resolve_version_dir,
    set_current,
)

log = logging.getLogger(__name__)


def watches(model_path: str) -> bool:
    """Whether `model_path` is a models folder (with `current`), not one fixed version."""
    return (Path(model_path) / CURRENT).is_symlink()


# How many versions back a replica with nothing of its own goes, from the pointer's version,
# for one it can load. Each step downloads and unpickles a version, so the start waits for
# every one tried; and each is older than the last, replaced for a reason: a pointer whose last
# few versions all fail here (another scikit-learn in this image, a pass mark no version of
# late was trained for) is a fault for an operator, not one to serve around with a stale model.
FALLBACK_VERSIONS = 3


async def load_at_start(
    models_dir: str, *, expected_pass_mark: float, follower: ModelFollower | None
) -> tuple[ServedModel, Path | None]:
    """The model a server starts with, and the version it found it could not load (None: none).

    With a follower, the version the database's pointer names, if it loads (the folder's link
    then moves to it); otherwise, or while the database cannot be read, the version the link
    names; and when that does not load either (a new replica's folder), the newest version the
    pointer's version replaced that loads (`fall_back`). What loads nowhere raises the pointer's
    version's own reason.
    """
    if follower is None:
        return load_served_model(models_dir, expected_pass_mark=expected_pass_mark), None
    followed = await follower.sync()
    if followed is None:
        try:
            return load_served_model(models_dir, expected_pass_mark=expected_pass_mark), None
        except Exception:
            refusal = follower.refusal
            if refusal is None:
                raise  # nothing promoted yet, or the database cannot be read: no walk either
            # Refused unread, and nothing of this replica's own loads (a new one). The refusal
            # stays counted, its gauge 1 while the pointer names it: operators still see it.
            model = await fall_back(
                models_dir, follower, refusal.version, refusal, expected_pass_mark
            )
            return model, None
    target = (Path(models_dir) / followed).resolve()
    try:
        model = load_served_model(str(target), expected_pass_mark=expected_pass_mark)
    except Exception as err:  # whatever is wrong with that version, serve the last good one
        try:
            model = load_served_model(models_dir, expected_pass_mark=expected_pass_mark)
        except Exception:
            return await fall_back(models_dir, follower, followed, err, expected_pass_mark), target
        log.error(
            "cannot serve %s, the version the database's pointer names (%s); serving %s, "
            "the last version this replica loaded",
            followed,
            err,
            model.version,
        )
        return model, target
    await asyncio.to_thread(_link, models_dir, followed)
    return model, None


async def fall_back(
    models_dir: str,
    follower: ModelFollower,
    pointed: str,
    why: Exception,
    expected_pass_mark: float,
) -> ServedModel:
    """The newest of the (at most FALLBACK_VERSIONS) versions `pointed` replaced that downloads,
    hashes right and loads, linked as the folder's current; raises `why`, the pointer's
    version's reason, when none does. Each is downloaded only when the one before failed."""
    try:
        earlier = await follower.earlier_versions(pointed, FALLBACK_VERSIONS)
    except Exception as err:
        log.error(
            "cannot serve %s, the version the database's pointer names (%s), and cannot read "
            "which versions it replaced (%s)",
            pointed,
            why,
            err,
        )
        raise why from None
    tried = []
    for back, version in enumerate(earlier, start=1):
        try:
            folder = await follower.fetch_version(version)
            model = load_served_model(str(folder.resolve()), expected_pass_mark=expected_pass_mark)
        except Exception as err:  # refused, unreadable, not loadable here: try the next
            tried.append(f"{version} ({err})")
            continue
        log.error(
            "cannot serve %s, the version the database's pointer names (%s); this replica "
            "has no version it loaded before, so it serves %s instead, the version %s "
            "replaced %d promotion(s) back%s; it follows the pointer again once that names "
            "a version that loads",
            pointed,
            why,
            model.version,
            pointed,
            back,
            f", after {'; '.join(tried)}" if tried else "",
        )
        await asyncio.to_thread(_link, models_dir, version)
        return model
    log.error(
        "cannot serve %s, the version the database's pointer names (%s), nor %s: nothing to "
        "start on",
        pointed,
        why,
        f"the versions it replaced ({'; '.join(tried)})"
        if tried
        else "a version it replaced (no promotion to it recorded)",
    )
    raise why from None


def _link(models_dir: str, version: str) -> None:
    """Points the folder's link at a version that loaded, for the next start."""
    if linked_version(models_dir) == version:
        return
    try:
        set_current(models_dir, version)
    except (OSError, ModelArtifactError) as err:
        # The version serves all the same; a restart starts on the older one, then follows.
        log.warning("model reload: cannot link %s as current (%s)", version, err)


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
        failed: Path | None = None,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self._follower = follower
        self._metrics = metrics
        self._root = model_path
        self._pass_mark = expected_pass_mark
        self._install = install
        self._interval_s = interval_s
        self._serving = Path(serving.path)
        self._failed = failed  # the version that last failed to load: not tried until replaced
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
        followed = await self._follower.sync() if self._follower is not None else None
        if followed is not None:
            target = (Path(self._root) / followed).resolve()
        elif self._follower is not None:
            # The pointer cannot be read (or names a refused version): keep what serves. The
            # link is for a start only; a worker beside this one may have moved it back.
            return False
        else:
            try:
                target = resolve_version_dir(self._root)
            except ModelArtifactError as err:
                if str(err) != self._problem:
                    log.warning("model reload: %s; still serving the current model", err)
                    self._problem = str(err)
                return False
            self._problem = ""
        if target == self._serving:
            # Named again (a rollback, say): a version that failed is tried again if named again.
            self._failed = None
            self._named_unloadable(False)
            return False
        if target == self._failed:
            return False
        try:
            model = await asyncio.to_thread(self._load, target)
        except Exception as err:  # whatever is wrong with that version, keep serving this one
            self._failed = target
            self._named_unloadable(True)
            log.error(
                "model reload: cannot serve %s (%s); still serving the current model",
                target.name,
                err,
            )
            return False
        if followed is not None:
            await asyncio.to_thread(_link, self._root, followed)
        self._serving, self._failed = target, None
        self._install(model)
        self._named_unloadable(False)
        log.info("model reload: now serving %s", model.version)
        return True

    def _named_unloadable(self, unloadable: bool) -> None:
        if self._metrics is not None:
            self._metrics.named_unloadable(unloadable)

    def _load(self, target: Path) -> ServedModel:
        model = load_served_model(str(target), expected_pass_mark=self._pass_mark)
        model.warm_up()
        return model
