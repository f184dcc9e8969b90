"""Which spool folder each server process owns, and how no folder is ever left behind.

One process (STUDENTPERF_WORKERS=1) spools into STUDENTPERF_SPOOL_DIR itself. N workers spool
into `<spool_dir>/worker-<i>`, slot i's folder: a worker that dies is replaced by one that
reopens the same folder and replays what it left. The supervisor holds the lock of spool_dir
itself (as one process does), so one process and a set of workers never share a folder.

When the worker count changes, some folders have no owner any more: `<spool_dir>/worker-<j>`
for j >= N (workers lowered, or one process after workers), or spool_dir's own segments (workers
after one process). Before anything serves, `gather_orphans` moves their segment files into a
folder that is owned, after that folder's own segments, so they are replayed like any other.
A segment file holds its destination and frames (inference_service.spool), so it reads the
same in any folder; a rename is atomic, so a crash mid-way leaves each segment in one folder or
the other, never lost and never in both.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from studentperf.durable import fsync_path, hold_folder_lock_once_free

log = logging.getLogger(__name__)

_SLOT = re.compile(r"worker-(\d+)")
_SEGMENT = "*.spool"


def slot_folder(spool_dir: Path, slot: int) -> Path:
    return spool_dir / f"worker-{slot}"


def owned_folders(spool_dir: Path, workers: int) -> list[Path]:
    """The folders a service of `workers` processes spools into."""
    if workers == 1:
        return [spool_dir]
    return [slot_folder(spool_dir, i) for i in range(workers)]


@dataclass(frozen=True)
class Moved:
    source: Path
    target: Path
    segments: int


def gather_orphans(spool_dir: Path, workers: int, patience_s: float = 0.0) -> list[Moved]:
    """Moves every segment of a folder no process of this service owns into one it owns.

    The caller holds spool_dir's lock; this takes each orphan folder's and each target's,
    waiting up to `patience_s` for a process that still runs there (a worker of a supervisor
    that was killed, finishing its calls), then raising FolderInUse, a ConfigError.
    """
    owned = owned_folders(spool_dir, workers)
    sources: list[Path] = []
    if workers > 1 and any(spool_dir.glob(_SEGMENT)):
        sources.append(spool_dir)
    if spool_dir.is_dir():
        for child in sorted(spool_dir.iterdir(), key=lambda p: p.name):
            if child.is_dir() and _SLOT.fullmatch(child.name) and child not in owned:
                sources.append(child)
    moved = []
    for number, source in enumerate(sources):
        target = owned[number % len(owned)]
        count = _move_segments(source, target, spool_dir, patience_s)
        if count:
            moved.append(Moved(source, target, count))
            log.warning(
                "spool: moved %d segment(s) from %s (no process owns it with %d worker(s)) "
                "into %s, to be replayed from there",
                count,
                source,
                workers,
                target,
            )
        if source != spool_dir:
            _remove_if_empty(source)
    return moved


def _move_segments(source: Path, target: Path, spool_dir: Path, patience_s: float) -> int:
    # spool_dir's lock is the caller's already; a slot folder's is taken here.
    def hold(folder: Path) -> int | None:
        if folder == spool_dir:
            return None
        return hold_folder_lock_once_free(folder, "spool folder", patience_s)

    source_lock = hold(source)
    try:
        segments = sorted(source.glob(_SEGMENT))
        if not segments:
            return 0
        target_lock = hold(target)
        try:
            next_seq = 1 + max((int(p.stem) for p in target.glob(_SEGMENT)), default=-1)
            for segment in segments:
                segment.rename(target / f"{next_seq:012d}.spool")
                next_seq += 1
            fsync_path(target)
            fsync_path(source)
        finally:
            if target_lock is not None:
                os.close(target_lock)
        return len(segments)
    finally:
        if source_lock is not None:
            os.close(source_lock)


def _remove_if_empty(folder: Path) -> None:
    """Removes an emptied slot folder; one holding anything else (a leftover of an
    interrupted rewrite, say) stays, and holds no segment."""
    with suppress(OSError):
        (folder / "LOCK").unlink()
        folder.rmdir()
