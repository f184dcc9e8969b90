"""Spool folders of N workers on a real filesystem: no folder's segments are left behind when
the worker count changes (inference_service.spool_folders), and they replay from their new
folder (inference_service.spool)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from inference_service.spool import Destination, Spool
from inference_service.spool_folders import gather_orphans, owned_folders, slot_folder
from studentperf.durable import FolderInUse, hold_folder_lock
from studentperf.envelope import KafkaRecord

HERE = Destination(topic="predictions", bootstrap_servers="127.0.0.1:9092", cluster_id="c-1")


async def spool_with(folder: Path, values: list[str]) -> None:
    spool = await Spool.open(folder, max_bytes=1 << 20, destination=HERE, segment_bytes=64)
    for value in values:  # small segments: several files per folder
        await spool.append([KafkaRecord(key=b"k", value=value.encode(), headers=[])])
    await spool.close()


async def spooled_values(folder: Path) -> list[str]:
    spool = await Spool.open(folder, max_bytes=1 << 20, destination=HERE)
    values = []
    try:
        while (oldest := await spool.oldest()) is not None:
            path, _, records = oldest
            values += [r.value.decode() for r in records]
            await spool.delete(path)
    finally:
        await spool.close()
    return values


def gather(spool_dir: Path, workers: int, patience_s: float = 0.0) -> int:
    lock = hold_folder_lock(spool_dir, "spool folder")
    try:
        return sum(m.segments for m in gather_orphans(spool_dir, workers, patience_s))
    finally:
        os.close(lock)


def test_one_process_owns_the_folder_itself_and_n_workers_a_folder_each(tmp_path: Path) -> None:
    assert owned_folders(tmp_path, 1) == [tmp_path]
    assert owned_folders(tmp_path, 3) == [
        tmp_path / "worker-0",
        tmp_path / "worker-1",
        tmp_path / "worker-2",
    ]


async def test_lowering_workers_moves_the_removed_slots_segments_after_a_kept_slots(
    tmp_path: Path,
) -> None:
    await spool_with(slot_folder(tmp_path, 0), ["a1", "a2"])
    await spool_with(slot_folder(tmp_path, 2), ["c1", "c2", "c3"])
    await spool_with(slot_folder(tmp_path, 3), ["d1"])

    moved = gather(tmp_path, 2)

    assert moved >= 2
    assert not slot_folder(tmp_path, 2).exists() and not slot_folder(tmp_path, 3).exists()
    # Slot 2's segments go to slot 0 after its own, slot 3's to slot 1: every event once.
    assert await spooled_values(slot_folder(tmp_path, 0)) == ["a1", "a2", "c1", "c2", "c3"]
    assert await spooled_values(slot_folder(tmp_path, 1)) == ["d1"]


async def test_one_process_after_workers_takes_every_slots_segments(tmp_path: Path) -> None:
    await spool_with(tmp_path, ["top"])
    await spool_with(slot_folder(tmp_path, 0), ["w0"])
    await spool_with(slot_folder(tmp_path, 1), ["w1"])

    gather(tmp_path, 1)

    assert sorted(await spooled_values(tmp_path)) == ["top", "w0", "w1"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


async def test_workers_after_one_process_take_its_segments(tmp_path: Path) -> None:
    await spool_with(tmp_path, ["alone1", "alone2"])

    gather(tmp_path, 2)

    assert list(tmp_path.glob("*.spool")) == []
    assert await spooled_values(slot_folder(tmp_path, 0)) == ["alone1", "alone2"]


async def test_a_removed_slot_still_in_use_is_refused_and_keeps_its_segments(
    tmp_path: Path,
) -> None:
    await spool_with(slot_folder(tmp_path, 1), ["busy"])
    held = hold_folder_lock(slot_folder(tmp_path, 1), "spool folder")
    try:
        with pytest.raises(FolderInUse):
            gather(tmp_path, 1)
    finally:
        os.close(held)
    assert await spooled_values(slot_folder(tmp_path, 1)) == ["busy"]


async def test_a_removed_slot_held_by_a_stopping_worker_is_gathered_once_it_lets_go(
    tmp_path: Path,
) -> None:
    """A worker of a supervisor that was killed still finishing its calls: waited for."""
    await spool_with(slot_folder(tmp_path, 1), ["late"])
    held = hold_folder_lock(slot_folder(tmp_path, 1), "spool folder")
    threading.Timer(0.5, os.close, (held,)).start()
    started = time.monotonic()

    assert gather(tmp_path, 1, patience_s=30) == 1

    assert time.monotonic() - started >= 0.5
    assert await spooled_values(tmp_path) == ["late"]


async def test_a_removed_slot_held_past_the_patience_is_refused(tmp_path: Path) -> None:
    await spool_with(slot_folder(tmp_path, 1), ["busy"])
    held = hold_folder_lock(slot_folder(tmp_path, 1), "spool folder")
    try:
        started = time.monotonic()
        with pytest.raises(FolderInUse):
            gather(tmp_path, 1, patience_s=0.6)
        assert time.monotonic() - started >= 0.6
    finally:
        os.close(held)
    assert await spooled_values(slot_folder(tmp_path, 1)) == ["busy"]


def test_nothing_to_gather_moves_nothing(tmp_path: Path) -> None:
    assert gather(tmp_path, 1) == 0
    assert gather(tmp_path, 4) == 0
