"""Many machines: keep this replica's models folder on the database's `current` pointer.

With STUDENTPERF_MODEL_SOURCE=database, the models folder is this replica's own cache. Before
the model is loaded at start-up, and then on every poll of the hot reloader
(inference_service.reload), `sync` downloads the version the pointer names if the folder lacks
it, its SHA-256 checked before a byte reaches the disk (studentperf.model_store); the reloader
then loads it, and only once it loaded moves the local `current` link (a new pod's init
container links the first version a folder gets), so a restart never starts on a version this
replica found it could not serve (another pass mark, another library). A version whose
bytes do not match what the trainer recorded is refused: logged once, counted in
studentperf_inference_model_artifacts_refused (and studentperf_inference_model_pointer_refused
is 1 until the pointer names another version), and the old version keeps serving; it is tried
again only when the pointer moves. An unreachable database is logged once and retried on the
next poll: the replica serves what it has meanwhile. So is a database that stops answering
(a failover that leaves the connection half-open sends no error): every statement is bounded
by COMMAND_TIMEOUT_S, and the connection is dropped and made again on the next poll; without
the bound one poll would wait for the kernel to give up on the connection, and the replica
would follow nothing, not even its local link, for as long.

A new replica has no version of its own to keep serving when the pointer's version does not load
or is refused: `earlier_versions` and `fetch_version` let it fall back to one the pointer's
version replaced (inference_service.reload), downloaded and checked as the pointer's is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from inference_service.metrics import InferenceMetrics
from studentperf.config import mask_dsn
from studentperf.model_store import (
    ArtifactRefused,
    download_version,
    fetch_current,
    replaced_versions,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# Per statement: long enough for a part of a version (model_store.DOWNLOAD_PART_BYTES, 1 MiB)
# on a slow link, so a model of any size arrives part by part; far below a dead connection's
# wait.
COMMAND_TIMEOUT_S = 30.0
# A goodbye the database does not answer in this time is cut short (asyncpg terminates).
CLOSE_TIMEOUT_S = 1.0
# What a lost or refusing database raises: the connection is dropped, made again next time.
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class ModelFollower:
    def __init__(
        self,
        database_url: str,
        models_dir: str,
        metrics: InferenceMetrics | None = None,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self._url = database_url
        self._command_timeout_s = command_timeout_s
        self._models = Path(models_dir)
        self._metrics = metrics
        self._conn: asyncpg.Connection | None = None
        # The version last refused and why, until the pointer moves.
        self._refusal: ArtifactRefused | None = None
        self._problem = ""  # the last reason the database could not be read, logged once

    async def sync(self) -> str | None:
        """Follows the pointer once; returns the version it names, now in the folder (None:
        none, or the database could not be read: the folder's own link then says what to
        serve)."""
        refused = self._refusal.version if self._refusal is not None else None
        try:
            followed = await fetch_current(await self._connect(), self._models, refused=refused)
        except ArtifactRefused as err:
            self._refusal = err
            log.error("model source: %s; still serving the current model", err)
            if self._metrics is not None:
                self._metrics.artifact_refused()
            return None
        except _DATABASE_ERRORS as err:
            self._drop()
            why = f"no answer within {self._command_timeout_s:g} s" if _silent(err) else err
            problem = f"cannot read the model pointer in {mask_dsn(self._url)}: {why}"
            if problem != self._problem:
                self._problem = problem
                log.warning("model source: %s; serving what %s holds", problem, self._models)
            return None
        self._problem = ""
        if followed is None:
            if self._refusal is None and self._metrics is not None:
                self._metrics.pointer_followed()  # nothing promoted yet
            return None
        self._refusal = None
        if self._metrics is not None:
            self._metrics.pointer_followed()
        if followed.downloaded:
            log.info("model source: downloaded version %s, hashes checked", followed.version)
        return followed.version

    @property
    def refusal(self) -> ArtifactRefused | None:
        """Why the pointer's version was refused unread, while the pointer still names it."""
        return self._refusal

    async def earlier_versions(self, version: str, most: int) -> list[str]:
        """The versions `version` replaced when promoted, nearest first, at most `most`
        (studentperf.model_store.replaced_versions). Raises what the database raises."""
        with self._dropped_on_failure():
            return await replaced_versions(await self._connect(), version, most)

    async def fetch_version(self, version: str) -> Path:
        """Makes the folder hold `version`, downloaded and checked if missing, as for the
        pointer's version; returns its folder. Raises ArtifactRefused (nothing written: not
        counted, since the pointer does not name it) or what the database raises."""
        with self._dropped_on_failure():
            await download_version(await self._connect(), version, self._models)
        return self._models / version

    @contextlib.contextmanager
    def _dropped_on_failure(self) -> Iterator[None]:
        """Lets the database's errors through, dropping the connection they came on."""
        try:
            yield
        except _DATABASE_ERRORS:
            self._drop()
            raise

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._url, timeout=CONNECT_TIMEOUT_S, command_timeout=self._command_timeout_s
            )
        return self._conn

    def _drop(self) -> None:
        """Forgets a connection that failed, without a goodbye it may never answer."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # A failure to say goodbye leaves it terminated by asyncpg: nothing more to do.
            with contextlib.suppress(
                asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError
            ):
                await conn.close(timeout=CLOSE_TIMEOUT_S)


def _silent(error: BaseException) -> bool:
    """A statement that timed out: asyncpg's TimeoutError carries no text of its own."""
    return isinstance(error, TimeoutError) and not str(error)
