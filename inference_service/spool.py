"""A bounded, durable, ordered local spool of Kafka records, for when the broker is away.

Records are appended to segment files as checksummed frames (their format:
inference_service.spool_segments). Appends from concurrent calls are written and fsync'd
together (group commit), so the hot path pays one fsync per flush, not per call; `append`
returns only once its records are on disk. A replayer takes the oldest segment, sends its
records in order, and deletes the file only when every record in it has been acknowledged: a
crash at any point means some records are sent again (the recorder writes each prediction
once), never that one is lost.

One process owns a spool folder at a time: `open` takes an exclusive lock on it (see
studentperf.durable.hold_folder_lock) and a second process refuses to start, naming the holder.

Each segment records the destination its events were meant for, so a spool is never replayed
into another cluster or topic: the replayer applies `refusal`, and `set_aside` keeps a refused
segment's file. Someone who knows where such a segment's events belong labels it with
`python -m inference_service.spool adopt` (inference_service.spool_adopt).

EraseStudent drops a student's records from every segment on disk (`drop_key`): a segment
holding any is rewritten without them (written aside, fsync'd, renamed over), so their data
neither stays in the spool nor is replayed.

Why this module is over 300 lines: it is one class, `Spool`, whose methods (opening, group
commit, draining, erasing) share one piece of state (the active segment and its file, the
sealed list, the pending appends, the flusher task) and the rule of who may touch the active
file when; splitting the class would spread that rule over modules.

The names of the segment format (Destination, refusal, read_segment, ...) are re-exported here
for the service's own modules, which know the spool as one thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference_service.spool_adopt import main
from inference_service.spool_segments import (
    MAGIC,
    MAGIC_V1,
    SUFFIX,
    Destination,
    SegmentContents,
    encode_frame,
    read_segment,
    refusal,
    rewrite_segment,
    unlink_durably,
    write_durably,
)
from studentperf.durable import fsync_path, hold_folder_lock
from studentperf.envelope import KafkaRecord

__all__ = [
    "MAGIC",
    "MAGIC_V1",
    "Destination",
    "SegmentContents",
    "Spool",
    "SpoolFull",
    "encode_frame",
    "main",
    "read_segment",
    "refusal",
]

log = logging.getLogger(__name__)

# A record's key (Spool has a `bytes` property, which hides the type inside the class).
RecordKey = bytes


class SpoolFull(Exception):
    """The spool holds as much as it may; nothing more is accepted until it drains."""


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as error:  # the disk is failing already; the next open cuts the tail
        log.error("spool: could not cut a failed write back to %d bytes: %r", size, error)


@dataclass
class _Segment:
    path: Path
    records: int
    size: int
    destination: Destination | None


class Spool:
    """See the module docstring. One process owns a spool directory at a time."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        destination: Destination,
        segment_bytes: int = 8 << 20,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._destination = destination
        self._sealed: list[_Segment] = []
        self._set_aside: list[_Segment] = []  # refused for this destination; files kept
        self._active: _Segment | None = None
        self._active_file: int | None = None
        self._lock: int | None = None
        self._next_seq = 0
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._writing: list[tuple[bytes, int, asyncio.Future[None]]] = []  # the flush's batch
        self._flusher: asyncio.Task[None] | None = None
        self._reserved = 0  # bytes accepted but not yet flushed
        self._seal_requested = False  # the replayer wants the active segment closed
        # The last records offered did not fit, and nothing has fit or drained since: `bytes`
        # alone cannot tell, as a refused append leaves it short of `max_bytes`.
        self.full = False
        self.changed = asyncio.Event()  # set on every append, for the replayer
        # Damage found on disk: bytes skipped between readable frames, and how many places.
        self.damaged_bytes = 0
        self.damaged_regions = 0

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        max_bytes: int,
        destination: Destination,
        segment_bytes: int = 8 << 20,
    ) -> Spool:
        """Opens (creating) the spool, recovering what a previous process left in it.

        Raises studentperf.durable.FolderInUse when another process holds the folder.
        """
        spool = cls(
            directory, max_bytes=max_bytes, destination=destination, segment_bytes=segment_bytes
        )
        spool._lock = await asyncio.to_thread(hold_folder_lock, directory, "spool folder")
        try:
            await asyncio.to_thread(spool._recover)
        except BaseException:
            spool._release()
            raise
        if spool.records:
            log.warning(
                "spool %s holds %d event(s) from before; they will be sent when Kafka answers, "
                "each segment only to the cluster and topic it was written for",
                directory,
                spool.records,
            )
        return spool

    def _recover(self) -> None:
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            contents = read_segment(path)
            if contents.end < path.stat().st_size:
                log.warning("spool %s: cutting a torn tail at byte %d", path.name, contents.end)
                with path.open("r+b") as file:
                    file.truncate(contents.end)
                    os.fsync(file.fileno())
            self._count_damage(path, contents.damaged_bytes, contents.damaged_regions)
            if contents.records:
                segment = _Segment(path, len(contents.records), contents.end, contents.destination)
                self._sealed.append(segment)
            else:
                path.unlink()
            self._next_seq = max(self._next_seq, int(path.stem) + 1)

    def _count_damage(self, path: Path, damaged_bytes: int, regions: int) -> None:
        if not regions:
            return
        self.damaged_bytes += damaged_bytes
        self.damaged_regions += regions
        log.error(
            "spool %s: skipped %d damaged byte(s) in %d place(s) (corrupted on disk); the "
            "readable frames around them are kept",
            path.name,
            damaged_bytes,
            regions,
        )

    @property
    def destination(self) -> Destination:
        """Written into every new segment; the publisher adds the cluster id once it knows it."""
        return self._destination

    @destination.setter
    def destination(self, destination: Destination) -> None:
        if destination != self._destination:
            # What is appended from now on must not sit under the old label.
            self._seal_requested = True
            self._destination = destination

    # -- depth -------------------------------------------------------------------------------

    @property
    def records(self) -> int:
        active = self._active.records if self._active else 0
        return sum(s.records for s in self._sealed) + active

    @property
    def bytes(self) -> int:
        active = self._active.size if self._active else 0
        return sum(s.size for s in self._sealed) + active + self._reserved

    @property
    def empty(self) -> bool:
        # _reserved covers a batch being written: taken off _pending, not yet counted.
        return self.records == 0 and not self._pending and self._reserved == 0

    @property
    def set_aside_records(self) -> int:
        """Events kept on disk in segments refused for this destination (not counted above)."""
        return sum(s.records for s in self._set_aside)

    # -- appending ---------------------------------------------------------------------------

    async def append(self, records: Sequence[KafkaRecord]) -> None:
        """Returns once the records are fsync'd to disk; raises SpoolFull when there is no room."""
        frames = b"".join(encode_frame(r) for r in records)
        if self.bytes + len(frames) > self.max_bytes:
            raise self._full()
        self.full = False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((frames, len(records), done))
        self._reserved += len(frames)
        if self._flusher is None or self._flusher.done():
            # Flushes serve every appender: not the first one's request and trace ids.
            self._flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        await asyncio.shield(done)

    def _full(self) -> SpoolFull:
        self.full = True
        return SpoolFull(
            f"the local spool is full ({self.records} events, {self.bytes} of "
            f"{self.max_bytes} bytes) while Kafka is unreachable"
        )

    async def _flush(self) -> None:
        # Only this task touches the active segment's file while it runs; list and counter
        # updates stay on the event loop's thread. A failed write fails its own batch and cuts
        # off the torn bytes it may have left, so nothing appended later sits behind them
        # unreadable. Should anything else fail, no append is left waiting forever.
        try:
            await self._flush_pending()
        except Exception as error:
            waiting, self._pending = self._pending, []
            for frames, _, done in waiting:
                self._reserved -= len(frames)
                if not done.done():
                    done.set_exception(error)
            log.exception("spool flush failed")

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self._writing = batch
            data = b"".join(frames for frames, _, _ in batch)
            try:
                if self._seal_requested:
                    self._seal_requested = False
                    self._seal_active()
                new_segment = self._active is None or self._active.size >= self.segment_bytes
                # `append` refused what could not fit, but without knowing which batch would
                # need a new segment, whose opening takes room too: a batch fits on disk here,
                # or is refused whole.
                needed = len(data) + (self._opening_size() if new_segment else 0)
                if self.bytes - self._reserved + needed > self.max_bytes:
                    raise self._full()
                if new_segment:
                    fd, segment = await asyncio.to_thread(self._create_segment, self._next_seq)
                    self._next_seq += 1
                    self._seal_active()
                    self._active_file, self._active = fd, segment
                assert self._active_file is not None and self._active is not None
                await asyncio.to_thread(write_durably, self._active_file, data)
            except SpoolFull as full:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(full)
                continue
            except Exception as error:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                log.error("spool write failed: %r", error)
                if self._active_file is not None and self._active is not None:
                    intact = self._active.size
                    await asyncio.to_thread(_truncate_quietly, self._active_file, intact)
                continue  # the appends queued meanwhile get their own try
            finally:
                self._reserved -= len(data)
                self._writing = []  # its appends are answered, or are about to be
            self._active.records += sum(n for _, n, _ in batch)
            self._active.size += len(data)
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)
            self.changed.set()

    def _create_segment(self, seq: int) -> tuple[int, _Segment]:
        path = self.directory / f"{seq:012d}{SUFFIX}"
        destination = self.destination
        # A file of this number can only be one whose opening failed (the number moves on once
        # a segment is open): it holds no record, and an opening appended to a torn one would
        # make the segment unreadable, the records written to it after set aside unsent.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        opening = MAGIC + destination.encode()
        try:
            write_durably(fd, opening)
            fsync_path(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return fd, _Segment(path, 0, len(opening), destination)

    def _opening_size(self) -> int:
        """How many bytes a segment created now starts with: the magic and its destination."""
        return len(MAGIC + self.destination.encode())

    def _seal_active(self) -> None:
        if self._active_file is not None:
            os.close(self._active_file)
            self._active_file = None
        if self._active is not None:
            self._sealed.append(self._active)
            self._active = None

    # -- draining ----------------------------------------------------------------------------

    async def oldest(self) -> tuple[Path, Destination | None, list[KafkaRecord]] | None:
        """The oldest segment: its path, destination and records.

        Seals the active segment if it is all there is.
        """
        while not self._sealed:
            if self._flusher is None or self._flusher.done():
                # No flush can start before the next await: the active file is ours to close.
                if self._active is None or self._active.records == 0:
                    return None
                self._seal_active()
                break
            # A flush owns the active file: ask it to seal at its next write.
            self._seal_requested = True
            await asyncio.wait([self._flusher], timeout=0.05)
        segment = self._sealed[0]
        contents = await asyncio.to_thread(read_segment, segment.path)
        if len(contents.records) < segment.records:
            # Only a disk that changed bytes under us gets here: say so loudly, send what is
            # readable rather than hold up every later event behind it.
            self._count_damage(
                segment.path, contents.damaged_bytes, max(contents.damaged_regions, 1)
            )
        return segment.path, segment.destination, contents.records

    async def delete(self, path: Path) -> None:
        """Forgets a segment whose records have all been acknowledged."""
        assert self._sealed and self._sealed[0].path == path, "segments drain oldest first"
        self._sealed.pop(0)
        self.full = False  # room again
        await asyncio.to_thread(path.unlink)

    # -- erasing -----------------------------------------------------------------------------

    async def drop_key(
        self,
        key: RecordKey,
        sent: MutableMapping[Path, int] | None = None,
        changed: set[Path] | None = None,
    ) -> int:
        """Removes from disk every spooled record keyed `key` (a student's events, for
        EraseStudent), in every segment, set-aside ones too; returns how many.

        `sent` is the replayer's progress (of a segment, how many records were acknowledged):
        as each segment is rewritten, its entry becomes how many of the records kept come
        before that point, and the segment's path is added to `changed`; at once, so that
        both hold whatever happens to the segments after it (an error, a cancelled caller).

        The caller keeps the replayer out meanwhile (delivery.DurablePublisher.forget). The
        active segment is sealed first (appends made meanwhile go to a new one). Each rewritten
        segment is written aside, fsync'd and renamed over the old file, so a crash leaves
        either the old segment or the new one, never a torn one.
        """
        await self._seal_the_active_segment()
        sent = {} if sent is None else sent
        changed = set() if changed is None else changed
        dropped = 0
        for group in (self._sealed, self._set_aside):
            for segment in list(group):
                contents = await asyncio.to_thread(read_segment, segment.path)
                kept = [r for r in contents.records if r.key != key]
                if len(kept) == len(contents.records):
                    continue
                dropped += len(contents.records) - len(kept)
                if kept:
                    segment.size = await asyncio.to_thread(
                        rewrite_segment, segment.path, segment.destination, kept
                    )
                    segment.records = len(kept)
                else:
                    group.remove(segment)
                    await asyncio.to_thread(unlink_durably, segment.path)
                changed.add(segment.path)
                if segment.path in sent:
                    done = contents.records[: sent[segment.path]]
                    sent[segment.path] = sum(1 for r in done if r.key != key)
        return dropped

    async def _seal_the_active_segment(self) -> None:
        """Seals the segment that holds every append made before now, so that it can be
        rewritten. A flush in progress owns its file: it is asked to seal it at its next write,
        and later appends go to a new segment; waiting for the flusher to end instead would wait
        as long as calls keep coming."""
        earlier = [done for _, _, done in (*self._writing, *self._pending) if not done.done()]
        if earlier:
            await asyncio.wait(earlier)  # written (or failed) by the flushes under way
        target = self._active
        while target is not None and self._active is target:
            if self._flusher is None or self._flusher.done():
                self._seal_requested = False
                self._seal_active()  # no flush can start before the next await
                return
            self._seal_requested = True
            await asyncio.wait([self._flusher], timeout=0.05)

    def set_aside(self, path: Path, why: str) -> None:
        """Stops offering a segment that must not be sent here; its file stays as it is."""
        assert self._sealed and self._sealed[0].path == path, "segments drain oldest first"
        segment = self._sealed.pop(0)
        self._set_aside.append(segment)
        self.full = False  # no longer counted: room again
        log.error(
            "spool %s: not sending its %d event(s) to %s: %s. The file is kept: to deliver "
            "them, run a service configured for that destination with STUDENTPERF_SPOOL_DIR "
            "pointing at a folder holding this file (move it there while no service runs), or, "
            "if you know they belong here, label it for this destination with `python -m "
            "inference_service.spool adopt` (see --help); if they are not wanted (a test's, "
            "say), delete the file",
            segment.path,
            segment.records,
            self.destination.describe(),
            why,
        )

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._seal_active()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the lock
            self._lock = None


if __name__ == "__main__":
    raise SystemExit(main())
