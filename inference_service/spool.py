"""A bounded, durable, ordered local spool of Kafka records, for when the broker is away.

Records are appended to segment files as checksummed frames. Appends from concurrent calls
are written and fsync'd together (group commit), so the hot path pays one fsync per flush, not
per call; `append` returns only once its records are on disk. A replayer takes the oldest
segment, sends its records in order, and deletes the file only when every record in it has
been acknowledged: a crash at any point means some records are sent again (the recorder writes
each prediction once), never that one is lost.

One process owns a spool folder at a time: `open` takes an exclusive lock on it (see
studentperf.durable.hold_folder_lock) and a second process refuses to start, naming the holder.

Each segment records the destination its events were meant for (`Destination`: the Kafka
cluster's id and the topic), so a spool is never replayed into another cluster or topic: see
`refusal`, which the replayer applies, and `set_aside`, which keeps a refused segment's file.

Segment layout: the 8-byte MAGIC, a header `[u32 length][u32 crc32][destination as JSON]`,
then frames of `[FRAME_MARK][u32 body length][u32 crc32 of length and body][body]`, where body
is `[u16 key length][key][u32 value length][value][u16 header count]` followed by
`[u16 name length][name][u32 value length][value]` per header. The 4-byte mark before each
frame lets a reader find the frames after a damaged one: it scans forward to the next mark
whose frame checks, skipping (and counting) the damaged bytes, rather than losing every frame
after them. A torn frame at the end of a segment (a crash mid-write, before its call was
answered) is cut off when the spool opens.

EraseStudent drops a student's records from every segment on disk (`drop_key`): a segment
holding any is rewritten without them (written aside, fsync'd, renamed over), so their data
neither stays in the spool nor is replayed.

Segments of the first format (MAGIC_V1: no destination, no frame marks) are still read, but as
of no known destination, so they are refused rather than replayed: the format-1 default folder
was the repository's `spool/`, shared by tests and development services alike. Someone who
knows where a refused segment's events belong (a format-1 segment, or a cluster rebuilt under a
new id) labels it for that destination with `python -m inference_service.spool adopt`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from studentperf.config import ConfigError
from studentperf.durable import fsync_path, hold_folder_lock
from studentperf.envelope import KafkaRecord

log = logging.getLogger(__name__)

MAGIC = b"SPSPOOL2"
MAGIC_V1 = b"SPSPOOL1"
FRAME_MARK = b"\xa5SPf"
_HEAD = struct.Struct(">II")  # length, crc32
_SUFFIX = ".spool"
# A record's key (Spool has a `bytes` property, which hides the type inside the class).
RecordKey = bytes


class SpoolFull(Exception):
    """The spool holds as much as it may; nothing more is accepted until it drains."""


@dataclass(frozen=True)
class Destination:
    """Where a segment's events are meant to go.

    `cluster_id` is empty when the segment was written before the service had reached Kafka;
    the bootstrap servers it was configured with then stand in for the cluster.
    """

    topic: str
    bootstrap_servers: str
    cluster_id: str = ""

    def describe(self) -> str:
        cluster = f"cluster {self.cluster_id}" if self.cluster_id else "a cluster not yet reached"
        return f"topic {self.topic!r} at {cluster} (bootstrap {self.bootstrap_servers})"

    def encode(self) -> bytes:
        body = json.dumps(
            {
                "topic": self.topic,
                "cluster_id": self.cluster_id,
                "bootstrap_servers": self.bootstrap_servers,
            }
        ).encode()
        return _HEAD.pack(len(body), zlib.crc32(body)) + body


def refusal(written_for: Destination | None, sending_to: Destination) -> str | None:
    """Why a segment must not be sent to `sending_to`, or None when it may.

    `sending_to` is a connected producer's destination, so its cluster id is known. A segment
    whose cluster id is not known goes only where the same bootstrap servers lead.
    """
    if written_for is None:
        return "it does not say which cluster and topic it was written for"
    if written_for.topic != sending_to.topic:
        return f"it was written for {written_for.describe()}"
    if written_for.cluster_id:
        if written_for.cluster_id != sending_to.cluster_id:
            return f"it was written for {written_for.describe()}"
        return None
    if written_for.bootstrap_servers != sending_to.bootstrap_servers:
        return f"it was written for {written_for.describe()}"
    return None


def encode_frame(record: KafkaRecord) -> bytes:
    parts = [struct.pack(">H", len(record.key)), record.key]
    parts += [struct.pack(">I", len(record.value)), record.value]
    parts.append(struct.pack(">H", len(record.headers)))
    for name, value in record.headers:
        encoded = name.encode()
        parts += [struct.pack(">H", len(encoded)), encoded, struct.pack(">I", len(value)), value]
    body = b"".join(parts)
    length = struct.pack(">I", len(body))
    return FRAME_MARK + length + struct.pack(">I", zlib.crc32(length + body)) + body


def _decode_body(body: bytes) -> KafkaRecord:
    at = 0

    def take(size_format: str) -> bytes:
        nonlocal at
        (size,) = struct.unpack_from(size_format, body, at)
        at += struct.calcsize(size_format)
        chunk = body[at : at + size]
        at += size
        return chunk

    key = take(">H")
    value = take(">I")
    (count,) = struct.unpack_from(">H", body, at)
    at += 2
    headers = [(take(">H").decode(), take(">I")) for _ in range(count)]
    return KafkaRecord(key=key, value=value, headers=headers)


@dataclass
class SegmentContents:
    """What a segment file holds: its destination, its readable records, and its damage."""

    destination: Destination | None
    records: list[KafkaRecord] = field(default_factory=list)
    end: int = 0  # where the last readable frame ends: what follows is a torn tail
    damaged_bytes: int = 0  # skipped between readable frames
    damaged_regions: int = 0


def _frame_at(data: bytes, at: int) -> tuple[bytes, int] | None:
    """The body of the frame starting at `at` and where it ends, or None if it does not check."""
    if data[at : at + len(FRAME_MARK)] != FRAME_MARK:
        return None
    head = at + len(FRAME_MARK)
    if head + _HEAD.size > len(data):
        return None
    length, crc = _HEAD.unpack_from(data, head)
    start = head + _HEAD.size
    body = data[start : start + length]
    if len(body) < length or zlib.crc32(data[head : head + 4] + body) != crc:
        return None
    return body, start + length


def _read_header(data: bytes) -> tuple[Destination | None, int]:
    at = len(MAGIC)
    if at + _HEAD.size > len(data):
        return None, at
    length, crc = _HEAD.unpack_from(data, at)
    body = data[at + _HEAD.size : at + _HEAD.size + length]
    if len(body) < length or zlib.crc32(body) != crc:
        return None, at
    try:
        found = json.loads(body)
        destination = Destination(
            topic=found["topic"],
            bootstrap_servers=found["bootstrap_servers"],
            cluster_id=found["cluster_id"],
        )
    except (ValueError, KeyError, TypeError):
        return None, at
    return destination, at + _HEAD.size + length


def read_segment(path: Path) -> SegmentContents:
    """The segment's destination and readable records; damaged frames are skipped, counted."""
    data = path.read_bytes()
    if data.startswith(MAGIC_V1):
        return _read_v1(data)
    destination, at = _read_header(data)
    contents = SegmentContents(destination, end=at)
    while at < len(data):
        frame = _frame_at(data, at)
        if frame is not None:
            body, at = frame
            contents.records.append(_decode_body(body))
            contents.end = at
            continue
        found = data.find(FRAME_MARK, at + 1)
        while found != -1 and _frame_at(data, found) is None:
            found = data.find(FRAME_MARK, found + 1)
        if found == -1:
            break  # nothing readable after this point: a torn tail, or damage to the end
        contents.damaged_bytes += found - at
        contents.damaged_regions += 1
        at = found
    return contents


def _read_v1(data: bytes) -> SegmentContents:
    """A first-format segment: frames without marks, and no destination."""
    contents = SegmentContents(None, end=len(MAGIC_V1))
    at = len(MAGIC_V1)
    while at + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, at)
        body = data[at + _HEAD.size : at + _HEAD.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        contents.records.append(_decode_body(body))
        at += _HEAD.size + length
        contents.end = at
    return contents


def _write_durably(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


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
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
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
            self.full = True
            raise SpoolFull(
                f"the local spool is full ({self.records} events, {self.bytes} of "
                f"{self.max_bytes} bytes) while Kafka is unreachable"
            )
        self.full = False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((frames, len(records), done))
        self._reserved += len(frames)
        if self._flusher is None or self._flusher.done():
            # Flushes serve every appender: not the first one's request and trace ids.
            self._flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        await asyncio.shield(done)

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
            data = b"".join(frames for frames, _, _ in batch)
            try:
                if self._seal_requested:
                    self._seal_requested = False
                    self._seal_active()
                if self._active is None or self._active.size >= self.segment_bytes:
                    fd, segment = await asyncio.to_thread(self._create_segment, self._next_seq)
                    self._next_seq += 1
                    self._seal_active()
                    self._active_file, self._active = fd, segment
                assert self._active_file is not None and self._active is not None
                await asyncio.to_thread(_write_durably, self._active_file, data)
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
            self._active.records += sum(n for _, n, _ in batch)
            self._active.size += len(data)
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)
            self.changed.set()

    def _create_segment(self, seq: int) -> tuple[int, _Segment]:
        path = self.directory / f"{seq:012d}{_SUFFIX}"
        destination = self.destination
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        opening = MAGIC + destination.encode()
        _write_durably(fd, opening)
        fsync_path(self.directory)
        return fd, _Segment(path, 0, len(opening), destination)

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
        self, key: RecordKey, sent: Mapping[Path, int] | None = None
    ) -> tuple[int, dict[Path, int]]:
        """Removes from disk every spooled record keyed `key` (a student's events, for
        EraseStudent), in every segment, set-aside ones too; returns how many, and for each
        segment in `sent` (records already acknowledged, the replayer's progress) how many of
        the records kept come before that point.

        The caller keeps the replayer out meanwhile (delivery.DurablePublisher.forget). The
        active segment is sealed first; appends made meanwhile go to a new segment. Each
        rewritten segment is written aside, fsync'd and renamed over the old file, so a crash
        leaves either the old segment or the new one, never a torn one.
        """
        while self._flusher is not None and not self._flusher.done():
            self._seal_requested = True  # a flush owns the active file: it seals it
            await asyncio.wait([self._flusher], timeout=0.05)
        self._seal_active()  # no flush can start before the next await
        sent = dict(sent or {})
        progress: dict[Path, int] = {}
        dropped = 0
        for group in (self._sealed, self._set_aside):
            for segment in list(group):
                contents = await asyncio.to_thread(read_segment, segment.path)
                kept = [r for r in contents.records if r.key != key]
                if len(kept) == len(contents.records):
                    continue
                dropped += len(contents.records) - len(kept)
                if segment.path in sent:
                    done = contents.records[: sent[segment.path]]
                    progress[segment.path] = sum(1 for r in done if r.key != key)
                if kept:
                    segment.size = await asyncio.to_thread(
                        _rewrite, segment.path, segment.destination, kept
                    )
                    segment.records = len(kept)
                else:
                    group.remove(segment)
                    await asyncio.to_thread(_unlink_durably, segment.path)
        return dropped, progress

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


def _rewrite(path: Path, destination: Destination | None, records: Sequence[KafkaRecord]) -> int:
    """Replaces the segment at `path` with one holding `records` (written aside, fsync'd,
    renamed); returns its size. A first-format segment (no destination) stays in that format."""
    if destination is None:
        bodies = [encode_frame(r)[len(FRAME_MARK) + _HEAD.size :] for r in records]
        data = MAGIC_V1 + b"".join(_HEAD.pack(len(b), zlib.crc32(b)) + b for b in bodies)
    else:
        data = MAGIC + destination.encode() + b"".join(encode_frame(r) for r in records)
    aside = path.with_suffix(".rewriting")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_durably(fd, data)
    finally:
        os.close(fd)
    os.replace(aside, path)
    fsync_path(path.parent)
    return len(data)


def _unlink_durably(path: Path) -> None:
    path.unlink()
    fsync_path(path.parent)


def adopt(segment: Path, destination: Destination) -> int:
    """Rewrites a segment as written for `destination`; returns how many events it holds.

    Takes the folder's lock, so it refuses while a service uses the folder. The new file
    replaces the old one only once it is on disk (written aside, fsync'd, renamed).
    """
    lock = hold_folder_lock(segment.parent, "spool folder")
    try:
        contents = read_segment(segment)
        aside = segment.with_suffix(".adopting")
        data = MAGIC + destination.encode() + b"".join(encode_frame(r) for r in contents.records)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_durably(fd, data)
        finally:
            os.close(fd)
        os.replace(aside, segment)
        fsync_path(segment.parent)
        return len(contents.records)
    finally:
        os.close(lock)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference_service.spool",
        description="Label spool segments for the Kafka cluster and topic their events belong to, "
        "so a service for that destination sends them. Run it while no service uses the folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    adopting = commands.add_parser("adopt", help="label segment files for a destination")
    adopting.add_argument("segments", nargs="+", type=Path, help="the .spool files")
    adopting.add_argument("--topic", required=True)
    adopting.add_argument("--bootstrap-servers", required=True)
    adopting.add_argument(
        "--cluster-id",
        default="",
        help="the cluster's id (the service's refusal names it); without it the segment goes "
        "wherever these bootstrap servers lead",
    )
    args = parser.parse_args(argv)
    destination = Destination(args.topic, args.bootstrap_servers, args.cluster_id)
    try:
        for segment in args.segments:
            count = adopt(segment, destination)
            print(f"{segment}: {count} event(s) now for {destination.describe()}")
    except (ConfigError, OSError) as error:
        print(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
