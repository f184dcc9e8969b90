"""The local spool on a real filesystem (tmp_path): durability, order, recovery, bounds."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from inference_service.spool import (
    MAGIC,
    MAGIC_V1,
    Destination,
    Spool,
    SpoolFull,
    encode_frame,
    read_segment,
    refusal,
)
from inference_service.spool import main as spool_main
from inference_service.spool_segments import SUFFIX
from studentperf.durable import FolderInUse
from studentperf.envelope import KafkaRecord

HERE = Destination(topic="predictions", bootstrap_servers="127.0.0.1:9092", cluster_id="c-1")


def record(i: int) -> KafkaRecord:
    return KafkaRecord(
        key=f"s{i % 7}".encode(), value=f"event-{i}".encode() * 3, headers=[("n", str(i).encode())]
    )


def torn_write(fd: int, data: bytes) -> None:
    """Half of what was to be written lands, then the disk fails."""
    os.write(fd, data[: len(data) // 2])
    raise OSError(28, "No space left on device")


async def drain(spool: Spool) -> list[KafkaRecord]:
    out: list[KafkaRecord] = []
    while (oldest := await spool.oldest()) is not None:
        path, _, records = oldest
        out += records
        await spool.delete(path)
    return out


async def test_appends_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20, segment_bytes=2048)
    for i in range(100):
        await spool.append([record(2 * i), record(2 * i + 1)])
    assert spool.records == 200 and not spool.empty
    assert len(list(tmp_path.glob("*.spool"))) > 1  # rotated into several segments
    assert await drain(spool) == [record(i) for i in range(200)]
    assert spool.empty and spool.bytes == 0
    assert (spool.damaged_bytes, spool.damaged_regions) == (0, 0)  # read back whole
    assert not list(tmp_path.glob("*.spool"))


async def test_concurrent_appends_share_one_write_and_fsync(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await asyncio.gather(*(spool.append([record(i)]) for i in range(100)))
    assert spool.records == 100
    assert len(list(tmp_path.glob("*.spool"))) == 1
    assert await drain(spool) == [record(i) for i in range(100)]


async def test_a_new_process_finds_what_the_last_one_spooled(tmp_path: Path) -> None:
    first = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await first.append([record(1), record(2)])
    # No close(): as after a crash. What append returned for is on disk; the kernel drops a
    # dead process's lock, as this does.
    first._release()
    second = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert second.records == 2
    await second.append([record(3)])
    assert await drain(second) == [record(1), record(2), record(3)]


async def test_a_torn_tail_is_cut_and_the_intact_records_kept(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1), record(2)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    intact = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(b"\x00\x00\x01\x00garbage")  # a frame header promising more than is there
        os.fsync(file.fileno())
    reopened = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert reopened.records == 2
    assert segment.stat().st_size == intact
    assert read_segment(segment).records == [record(1), record(2)]


async def test_a_corrupted_last_frame_is_cut_like_a_torn_tail(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1), record(2)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flips a byte inside the second frame: its checksum no longer matches
    segment.write_bytes(bytes(data))
    assert read_segment(segment).records == [record(1)]


async def test_full_spool_refuses_and_accepts_again_once_drained(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=300)
    assert not spool.full  # a new spool: /health says ready
    await spool.append([record(1), record(2)])
    assert not spool.full
    with pytest.raises(SpoolFull, match="spool is full"):
        await spool.append([record(i) for i in range(3, 10)])
    assert spool.records == 2  # the refused batch left nothing behind
    # Full (what /health reports) though short of max_bytes: the refused batch did not fit.
    assert spool.full and spool.bytes < spool.max_bytes
    await spool.append([record(3)])  # a smaller one fits: not full any more
    assert not spool.full and spool.records == 3
    with pytest.raises(SpoolFull, match="spool is full"):
        await spool.append([record(i) for i in range(4, 10)])
    await drain(spool)
    assert not spool.full
    await spool.append([record(3)])
    assert spool.records == 1


def on_disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob(f"*{SUFFIX}"))


async def test_the_spool_never_holds_more_than_its_limit_on_disk(tmp_path: Path) -> None:
    """A segment's opening (its magic and destination) takes room too: the appends that fit
    without it, and would need a new segment, are refused, not written past the limit."""
    opening = len(MAGIC + HERE.encode())
    frame = len(encode_frame(record(1)))
    spool = await Spool.open(
        tmp_path, destination=HERE, max_bytes=opening + 3 * frame, segment_bytes=opening + frame
    )
    await spool.append([record(1), record(2)])  # one segment: its opening and two frames
    # A third frame fits the limit, but the segment is full: the next one's opening does not.
    with pytest.raises(SpoolFull, match="spool is full"):
        await spool.append([record(3)])
    assert spool.full
    assert on_disk_bytes(tmp_path) <= spool.max_bytes
    assert spool.bytes == on_disk_bytes(tmp_path)
    assert await drain(spool) == [record(1), record(2)]
    await spool.append([record(3)])  # room again
    assert not spool.full
    await spool.close()


def landed_then_unsynced(fd: int, data: bytes) -> None:
    """Every byte lands, then the fsync fails: on disk now, but not known to survive."""
    os.write(fd, data)
    raise OSError(5, "Input/output error")


@pytest.mark.parametrize("failing_write", [torn_write, landed_then_unsynced])
async def test_a_failed_write_fails_its_callers_and_leaves_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: Any
) -> None:
    """The failed append's bytes are cut off: its caller was told it failed, so its events
    are not sent later (its retry makes them again), and what is appended after them does not
    sit behind a damaged region (read back, but reported as corruption on disk)."""
    import inference_service.spool as spool_module
    from inference_service.spool_segments import write_durably as real_write

    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1)])

    monkeypatch.setattr(spool_module, "write_durably", failing_write)
    with pytest.raises(OSError, match=r"No space|Input/output"):
        await spool.append([record(2)])
    monkeypatch.setattr(spool_module, "write_durably", real_write)
    await spool.append([record(3)])
    assert spool.records == 2
    await spool.close()
    reopened = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert (reopened.records, reopened.damaged_regions) == (2, 0)
    assert await drain(reopened) == [record(1), record(3)]


async def test_a_segment_whose_opening_failed_is_opened_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails while a new segment's opening (magic and destination) is written: the
    next append starts that segment again rather than append a second opening to the torn one,
    which would make every record written after it unreadable, though answered as spooled."""
    import inference_service.spool as spool_module
    from inference_service.spool_segments import write_durably as real_write

    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)

    monkeypatch.setattr(spool_module, "write_durably", torn_write)
    with pytest.raises(OSError, match="No space"):
        await spool.append([record(1)])
    monkeypatch.setattr(spool_module, "write_durably", real_write)
    await spool.append([record(2)])
    await spool.close()
    reopened = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert (reopened.records, reopened.damaged_regions) == (1, 0)
    assert await drain(reopened) == [record(2)]


async def test_the_spool_is_not_empty_while_a_write_is_in_progress(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    writing = asyncio.create_task(spool.append([record(1)]))
    await asyncio.sleep(0)  # the flush has taken the batch off the queue
    assert not spool.empty
    await writing
    assert not spool.empty and spool.records == 1


async def test_a_corrupt_first_frame_is_skipped_and_the_frames_after_it_kept(
    tmp_path: Path,
) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1), record(2), record(3)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    first_frame_body = data.index(b"event-1")
    data[first_frame_body] ^= 0xFF  # the first frame's checksum no longer matches
    segment.write_bytes(bytes(data))
    reopened = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert reopened.records == 2
    assert (reopened.damaged_regions, reopened.damaged_bytes) == (1, len(encode_frame(record(1))))
    assert segment.stat().st_size == len(data)  # nothing cut: the damage stays for a look
    assert await drain(reopened) == [record(2), record(3)]


@pytest.mark.parametrize("damage", ["mark", "length", "body"])
async def test_damage_mid_segment_loses_only_the_damaged_frame(tmp_path: Path, damage: str) -> None:
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(i) for i in range(5)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    third = data.index(encode_frame(record(2)))
    data[third + {"mark": 1, "length": 6, "body": 20}[damage]] ^= 0x5A
    segment.write_bytes(bytes(data))
    contents = read_segment(segment)
    assert contents.records == [record(0), record(1), record(3), record(4)]
    assert contents.damaged_regions == 1
    assert contents.destination == HERE


async def test_each_segment_records_the_destination_it_was_written_for(tmp_path: Path) -> None:
    before = Destination(topic="predictions", bootstrap_servers="127.0.0.1:9092")
    spool = await Spool.open(tmp_path, destination=before, max_bytes=1 << 20)
    await spool.append([record(1)])
    spool.destination = HERE  # the publisher learnt the cluster's id
    await spool.append([record(2)])  # not under the first segment's label: a new segment
    await spool.close()
    first, second = sorted(tmp_path.glob("*.spool"))
    assert read_segment(first).destination == before
    assert read_segment(second).destination == HERE


def test_refusal_names_the_destination_a_segment_was_written_for() -> None:
    unnamed = Destination(topic="predictions", bootstrap_servers="127.0.0.1:9092")
    assert refusal(HERE, HERE) is None
    assert refusal(unnamed, HERE) is None  # written before connecting, same addresses
    other_topic = Destination("test-topic", "127.0.0.1:9092", "c-1")
    assert "'test-topic'" in (refusal(other_topic, HERE) or "")
    other_cluster = Destination("predictions", "127.0.0.1:9092", "c-2")
    assert "cluster c-2" in (refusal(other_cluster, HERE) or "")
    elsewhere = Destination("predictions", "10.0.0.9:9092")
    assert "10.0.0.9:9092" in (refusal(elsewhere, HERE) or "")
    assert "does not say" in (refusal(None, HERE) or "")


async def test_a_damaged_destination_is_read_as_unknown_and_its_frames_kept(
    tmp_path: Path,
) -> None:
    # Still JSON, naming another cluster: only the header's checksum tells it was damaged.
    # Trusted, a flipped byte could name a cluster the events were never meant for.
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1), record(2)])
    await spool.close()
    [segment] = tmp_path.glob("*.spool")
    data = segment.read_bytes()
    assert data.count(b'"c-1"') == 1
    segment.write_bytes(data.replace(b'"c-1"', b'"c-9"'))
    contents = read_segment(segment)
    assert contents.destination is None
    assert contents.records == [record(1), record(2)]


async def test_a_first_format_segment_is_read_as_of_no_known_destination(tmp_path: Path) -> None:
    bodies = [encode_frame(record(i))[12:] for i in range(2)]  # after mark, length and crc
    frames = [struct.pack(">II", len(body), zlib.crc32(body)) + body for body in bodies]
    (tmp_path / "000000000007.spool").write_bytes(MAGIC_V1 + b"".join(frames))
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert spool.records == 2
    oldest = await spool.oldest()
    assert oldest is not None and oldest[1:] == (None, [record(0), record(1)])


async def test_a_spool_that_fails_to_open_lets_go_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference_service.spool as spool_module

    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(1)])
    await spool.close()

    def unreadable(path: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(spool_module, "read_segment", unreadable)
    with pytest.raises(PermissionError):
        await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    monkeypatch.undo()
    # Fixed (the files made readable), the same process opens it: not "in use".
    reopened = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert await drain(reopened) == [record(1)]
    await reopened.close()


async def test_a_second_owner_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    with pytest.raises(FolderInUse, match=rf"in use by another process \(pid {os.getpid()} on "):
        await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await first.close()
    second = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await second.close()


async def test_a_set_aside_segment_keeps_its_file_and_lets_the_rest_drain(tmp_path: Path) -> None:
    elsewhere = Destination("test-topic", "127.0.0.1:9092", "c-9")
    foreign = await Spool.open(tmp_path, destination=elsewhere, max_bytes=1 << 20)
    await foreign.append([record(1)])
    await foreign.close()
    spool = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    await spool.append([record(2)])
    oldest = await spool.oldest()
    assert oldest is not None and oldest[1] == elsewhere
    spool.set_aside(oldest[0], "another destination")
    assert (spool.records, spool.set_aside_records) == (1, 1)
    assert await drain(spool) == [record(2)]
    assert spool.empty and oldest[0].exists()


async def test_adopt_labels_a_refused_segment_for_a_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = [encode_frame(record(i))[12:] for i in range(2)]
    frames = [struct.pack(">II", len(body), zlib.crc32(body)) + body for body in bodies]
    segment = tmp_path / "000000000003.spool"
    segment.write_bytes(MAGIC_V1 + b"".join(frames))  # an old segment: no destination
    arguments = ["adopt", str(segment), "--topic", HERE.topic]
    arguments += ["--bootstrap-servers", HERE.bootstrap_servers, "--cluster-id", HERE.cluster_id]
    holder = await Spool.open(tmp_path, destination=HERE, max_bytes=1 << 20)
    assert spool_main(arguments) == 1  # not while a service holds the folder
    assert "in use by another process" in capsys.readouterr().out
    await holder.close()
    assert spool_main(arguments) == 0
    contents = read_segment(segment)
    assert (contents.destination, contents.records) == (HERE, [record(0), record(1)])
    assert refusal(contents.destination, HERE) is None
