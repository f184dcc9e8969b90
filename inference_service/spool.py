"""A bounded, durable, ordered local spool of Kafka records, for when the broker is away.

Records are appended to segment files as checksummed frames. Appends from concurrent calls
are written and fsync'd together (group commit), so the hot path pays one fsync per flush, not
per call; `append` returns only once its records are on disk. A replayer takes the oldest
segment, sends its records in order, and deletes the file only when every record in it has
been acknowledged: a crash at any point means some records are sent again (the recorder writes
each prediction once), never that one is lost.

Segment layout: the 8-byte MAGIC, then frames of
`[u32 body length][u32 crc32 of body][body]`, where body is
`[u16 key length][key][u32 value length][value][u16 header count]` followed by
`[u16 name length][name][u32 value length][value]` per header. A torn frame at the end of a
segment (a crash mid-write, before its call was answered) is cut off when the spool opens.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from studentperf.durable import fsync_path
from studentperf.envelope import KafkaRecord

log = logging.getLogger(__name__)

MAGIC = b"SPSPOOL1"
_FRAME_HEAD = struct.Struct(">II")
_SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool holds as much as it may; nothing more is accepted until it drains."""


def encode_frame(record: KafkaRecord) -> bytes:
    parts = [struct.pack(">H", len(record.key)), record.key]
    parts += [struct.pack(">I", len(record.value)), record.value]
    parts.append(struct.pack(">H", len(record.headers)))
    for name, value in record.headers:
        encoded = name.encode()
        parts += [struct.pack(">H", len(encoded)), encoded, struct.pack(">I", len(value)), value]
    body = b"".join(parts)
    return _FRAME_HEAD.pack(len(body), zlib.crc32(body)) + body


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


def read_segment(path: Path) -> tuple[list[KafkaRecord], int]:
    """The intact records of a segment, and the length of its intact prefix in bytes."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return [], 0
    records: list[KafkaRecord] = []
    at = len(MAGIC)
    while at + _FRAME_HEAD.size <= len(data):
        length, crc = _FRAME_HEAD.unpack_from(data, at)
        body = data[at + _FRAME_HEAD.size : at + _FRAME_HEAD.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        records.append(_decode_body(body))
        at += _FRAME_HEAD.size + length
    return records, at


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


class Spool:
    """See the module docstring. One process owns a spool directory at a time."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._sealed: list[_Segment] = []
        self._active: _Segment | None = None
        self._active_file: int | None = None
        self._next_seq = 0
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._reserved = 0  # bytes accepted but not yet flushed
        self._seal_requested = False  # the replayer wants the active segment closed
        self.changed = asyncio.Event()  # set on every append, for the replayer

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, directory: Path, *, max_bytes: int, segment_bytes: int = 8 << 20) -> Spool:
        """Opens (creating) the spool, recovering what a previous process left in it."""
        spool = cls(directory, max_bytes=max_bytes, segment_bytes=segment_bytes)
        await asyncio.to_thread(spool._recover)
        if spool.records:
            log.warning(
                "spool %s holds %d event(s) from before; they will be sent when Kafka answers",
                directory,
                spool.records,
            )
        return spool

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            records, intact = read_segment(path)
            if intact < path.stat().st_size:
                log.warning("spool %s: cutting a torn tail at byte %d", path.name, intact)
                with path.open("r+b") as file:
                    file.truncate(intact)
                    os.fsync(file.fileno())
            if records:
                self._sealed.append(_Segment(path, len(records), intact))
            else:
                path.unlink()
            self._next_seq = max(self._next_seq, int(path.stem) + 1)

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

    # -- appending ---------------------------------------------------------------------------

    async def append(self, records: Sequence[KafkaRecord]) -> None:
        """Returns once the records are fsync'd to disk; raises SpoolFull when there is no room."""
        frames = b"".join(encode_frame(r) for r in records)
        if self.bytes + len(frames) > self.max_bytes:
            raise SpoolFull(
                f"the local spool is full ({self.records} events, {self.bytes} of "
                f"{self.max_bytes} bytes) while Kafka is unreachable"
            )
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _write_durably(fd, MAGIC)
        fsync_path(self.directory)
        return fd, _Segment(path, 0, len(MAGIC))

    def _seal_active(self) -> None:
        if self._active_file is not None:
            os.close(self._active_file)
            self._active_file = None
        if self._active is not None:
            self._sealed.append(self._active)
            self._active = None

    # -- draining ----------------------------------------------------------------------------

    async def oldest(self) -> tuple[Path, list[KafkaRecord]] | None:
        """The oldest segment's records, sealing the active one if it is all there is."""
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
        records, _ = await asyncio.to_thread(read_segment, segment.path)
        if len(records) < segment.records:
            # Only a disk that changed bytes under us gets here: say so loudly, send what is
            # readable rather than hold up every later event behind it.
            log.error(
                "spool %s: %d of %d records unreadable (corrupted on disk)",
                segment.path.name,
                segment.records - len(records),
                segment.records,
            )
        return segment.path, records

    async def delete(self, path: Path) -> None:
        """Forgets a segment whose records have all been acknowledged."""
        assert self._sealed and self._sealed[0].path == path, "segments drain oldest first"
        self._sealed.pop(0)
        await asyncio.to_thread(path.unlink)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._seal_active()
