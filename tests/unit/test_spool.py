"""The local spool on a real filesystem (tmp_path): durability, order, recovery, bounds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inference_service.spool import Spool, SpoolFull, read_segment
from studentperf.envelope import KafkaRecord


def record(i: int) -> KafkaRecord:
    return KafkaRecord(
        key=f"s{i % 7}".encode(), value=f"event-{i}".encode() * 3, headers=[("n", str(i).encode())]
    )


async def drain(spool: Spool) -> list[KafkaRecord]:
    out: list[KafkaRecord] = []
    while (oldest := await spool.oldest()) is not None:
        path, records = oldest
        out += records
        await spool.delete(path)
    return out


async def test_appends_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20, segment_bytes=2048)
    for i in range(100):
        await spool.append([record(2 * i), record(2 * i + 1)])
    assert spool.records == 200 and not spool.empty
    assert len(list(tmp_path.glob("*.spool"))) > 1  # rotated into several segments
    assert await drain(spool) == [record(i) for i in range(200)]
    assert spool.empty and spool.bytes == 0
    assert not list(tmp_path.glob("*.spool"))


async def test_concurrent_appends_share_one_write_and_fsync(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    await asyncio.gather(*(spool.append([record(i)]) for i in range(100)))
    assert spool.records == 100
    assert len(list(tmp_path.glob("*.spool"))) == 1
    assert await drain(spool) == [record(i) for i in range(100)]


async def test_a_new_process_finds_what_the_last_one_spooled(tmp_path: Path) -> None:
    first = await Spool.open(tmp_path, max_bytes=1 << 20)
    await first.append([record(1), record(2)])
    # No close(): as after a crash. What append returned for is on disk.
    second = await Spool.open(tmp_path, max_bytes=1 << 20)
    assert second.records == 2
    await second.append([record(3)])
    assert await drain(second) == [record(1), record(2), record(3)]


async def test_a_torn_tail_is_cut_and_the_intact_records_kept(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    await spool.append([record(1), record(2)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    intact = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(b"\x00\x00\x01\x00garbage")  # a frame header promising more than is there
        os.fsync(file.fileno())
    reopened = await Spool.open(tmp_path, max_bytes=1 << 20)
    assert reopened.records == 2
    assert segment.stat().st_size == intact
    assert read_segment(segment)[0] == [record(1), record(2)]


async def test_a_corrupted_frame_ends_the_segment_there(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    await spool.append([record(1), record(2)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flips a byte inside the second frame: its checksum no longer matches
    segment.write_bytes(bytes(data))
    assert read_segment(segment)[0] == [record(1)]


async def test_full_spool_refuses_and_accepts_again_once_drained(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=300)
    await spool.append([record(1), record(2)])
    with pytest.raises(SpoolFull, match="spool is full"):
        await spool.append([record(i) for i in range(3, 10)])
    assert spool.records == 2  # the refused batch left nothing behind
    await drain(spool)
    await spool.append([record(3)])
    assert spool.records == 1


async def test_a_failed_write_fails_its_callers_and_hides_nothing_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference_service.spool as spool_module

    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    await spool.append([record(1)])
    real_write = spool_module._write_durably

    def torn_write(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # half a frame lands, then the disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_durably", torn_write)
    with pytest.raises(OSError, match="No space"):
        await spool.append([record(2)])
    monkeypatch.setattr(spool_module, "_write_durably", real_write)
    await spool.append([record(3)])
    assert spool.records == 2
    assert await drain(spool) == [record(1), record(3)]


async def test_the_spool_is_not_empty_while_a_write_is_in_progress(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20)
    writing = asyncio.create_task(spool.append([record(1)]))
    await asyncio.sleep(0)  # the flush has taken the batch off the queue
    assert not spool.empty
    await writing
    assert not spool.empty and spool.records == 1
