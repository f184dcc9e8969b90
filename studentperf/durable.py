"""Making a file's or a folder's contents survive a crash (fsync by path); owning a folder."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from studentperf.config import ConfigError

log = logging.getLogger(__name__)
# How often a folder held by a process that is stopping is tried again.
_RETRY_S = 0.2


def fsync_path(path: Path) -> None:
    """fsyncs a file, or a folder (so the names of the files created in it persist)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FolderInUse(ConfigError):
    """Another process holds a folder this process must own alone; the message names it."""


def hold_folder_lock(folder: Path, what: str) -> int:
    """Takes an exclusive lock on `folder` for as long as the returned descriptor stays open.

    The lock file records who holds it (pid, host, start time), so a refusal names the holder.
    flock locks belong to the open file, so the kernel drops one when its holder dies (even by
    SIGKILL): a crash never leaves a folder locked.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "LOCK"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        holder = _holder(path)
        raise FolderInUse(
            f"the {what} {folder} is in use by another process ({holder}); each process needs "
            "a folder of its own: stop that one or give this one another folder"
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    started = datetime.now(UTC).isoformat(timespec="seconds")
    holder_text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started})
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, holder_text.encode() + b"\n", 0)
    return descriptor


def hold_folder_lock_once_free(
    folder: Path,
    what: str,
    patience_s: float,
    keep_waiting: Callable[[], bool] = lambda: True,
) -> int | None:
    """hold_folder_lock, tried again for up to `patience_s` while another process holds the
    folder: for a folder only a process that is stopping can hold (a worker of a supervisor
    that was killed finishing its calls); raises FolderInUse when it still holds it then.
    None when `keep_waiting()`, asked between tries, says the wait is no longer wanted."""
    deadline = time.monotonic() + patience_s
    waited = False
    while True:
        try:
            return hold_folder_lock(folder, what)
        except FolderInUse as busy:
            if time.monotonic() >= deadline:
                raise
            if not waited:
                log.warning("%s; waiting up to %.0f s for it to let go", busy, patience_s)
                waited = True
        time.sleep(_RETRY_S)
        if not keep_waiting():
            return None


def _holder(path: Path) -> str:
    try:
        found = json.loads(path.read_text())
        return f"pid {found['pid']} on {found['host']}, since {found['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded"
