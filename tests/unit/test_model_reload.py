"""Hot reload, without a server: follows `current`, refuses what it cannot serve, keeps going."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inference_service.metrics import PREFIX, InferenceMetrics
from inference_service.model import ServedModel, load_served_model
from inference_service.model_follower import ModelFollower
from inference_service.reload import FALLBACK_VERSIONS, ModelReloader, load_at_start, watches
from studentperf.model_artifact import (
    CURRENT,
    ModelArtifactError,
    StudentModel,
    save_artifact,
    set_current,
)
from studentperf.model_store import ArtifactRefused, distinct_versions
from trainer import synthetic
from trainer.fit import fit_and_evaluate
from trainer.pipeline import logistic, ridge


def tiny_model(seed: int, pass_mark: float = 50.0) -> StudentModel:
    frame = synthetic.generate(300, seed)
    return fit_and_evaluate(
        frame, pass_mark=pass_mark, seed=seed, score_options=[ridge(1)], pass_options=[logistic(1)]
    ).model


def save(root: Path, model: StudentModel, second: int) -> str:
    when = datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    return save_artifact(
        root, model, fingerprint=f"{second:08x}", details={}, created_at=when, make_current=False
    ).name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudentModel, StudentModel]:
    return tiny_model(1), tiny_model(2)


class Installed:
    def __init__(self, first: ServedModel) -> None:
        self.versions = [first.version]

    def __call__(self, model: ServedModel) -> None:
        self.versions.append(model.version)


def reloader_for(
    root: Path, interval_s: float = 1.0, metrics: InferenceMetrics | None = None
) -> tuple[ModelReloader, Installed]:
    serving = load_served_model(str(root), expected_pass_mark=50.0)
    installed = Installed(serving)
    reloader = ModelReloader(
        str(root),
        expected_pass_mark=50.0,
        serving=serving,
        install=installed,
        interval_s=interval_s,
        metrics=metrics,
    )
    return reloader, installed


async def test_follows_current_and_refuses_what_it_cannot_serve(
    tmp_path: Path,
    models: tuple[StudentModel, StudentModel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    set_current(tmp_path, first)
    assert watches(str(tmp_path)) and not watches(str(tmp_path / first))
    reloader, installed = reloader_for(tmp_path)
    assert not await reloader.check()

    set_current(tmp_path, second)
    assert await reloader.check()
    assert installed.versions == [first, second]

    broken = save(tmp_path, models[0], 3)
    (tmp_path / broken / "model.joblib").write_bytes(b"not a pickle")
    set_current(tmp_path, broken)
    with caplog.at_level(logging.ERROR):
        assert not await reloader.check()
        assert not await reloader.check()  # not retried until the link moves
    assert len(caplog.records) == 1 and broken in caplog.records[0].message
    assert "still serving the current model" in caplog.records[0].message

    other_mark = save(tmp_path, tiny_model(4, pass_mark=60.0), 4)
    set_current(tmp_path, other_mark)
    assert not await reloader.check()
    assert installed.versions == [first, second]

    os.replace(tmp_path / "current", tmp_path / "old-link")
    (tmp_path / "current").symlink_to("gone")
    assert not await reloader.check()
    set_current(tmp_path, first)
    assert await reloader.check()
    assert installed.versions == [first, second, first]


async def test_a_gauge_says_while_the_named_version_does_not_load_here(
    tmp_path: Path, models: tuple[StudentModel, StudentModel]
) -> None:
    """studentperf_inference_model_named_unloadable: 1 while the version named does not load
    and an older one serves, whether the name then stays, goes back to what serves and returns,
    or moves on to one that loads."""
    first, second = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    other_mark = save(tmp_path, tiny_model(4, pass_mark=60.0), 4)
    set_current(tmp_path, first)
    metrics = InferenceMetrics(CollectorRegistry())
    reloader, installed = reloader_for(tmp_path, metrics=metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value(PREFIX + "model_named_unloadable")

    set_current(tmp_path, other_mark)
    assert not await reloader.check() and gauge() == 1
    assert not await reloader.check() and gauge() == 1  # still named: still not served
    set_current(tmp_path, first)  # back to the version that serves
    assert not await reloader.check() and gauge() == 0
    set_current(tmp_path, other_mark)  # named again: tried again, refused again
    assert not await reloader.check() and gauge() == 1
    set_current(tmp_path, second)
    assert await reloader.check() and gauge() == 0
    assert installed.versions == [first, second]


async def test_the_watcher_switches_on_its_own(
    tmp_path: Path, models: tuple[StudentModel, StudentModel]
) -> None:
    first, second = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    set_current(tmp_path, first)
    reloader, installed = reloader_for(tmp_path, interval_s=0.05)
    reloader.start()
    try:
        set_current(tmp_path, second)
        for _ in range(100):
            if installed.versions[-1] == second:
                break
            await asyncio.sleep(0.05)
    finally:
        await reloader.stop()
    assert installed.versions == [first, second]


class Pointer(ModelFollower):
    """The database's pointer as the follower reports it (its own reading of the database is
    tested in tests/integration/test_many_machines.py): the version it brought, or None; and
    the versions it replaced, in `folder` already (`forged` ones refused as a mismatch)."""

    def __init__(
        self,
        version: str | None,
        *,
        earlier: list[str] | None = None,
        folder: Path | None = None,
        forged: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__("postgresql://unused", str(folder or "unused"))
        self.version = version
        self.earlier = earlier or []
        self.folder = folder or Path("unused")
        self.forged = forged
        self.fetched: list[str] = []

    async def sync(self) -> str | None:
        return self.version

    async def earlier_versions(self, version: str, most: int) -> list[str]:
        return self.earlier[:most]

    async def fetch_version(self, version: str) -> Path:
        self.fetched.append(version)
        if version in self.forged:
            raise ArtifactRefused(version, "model.joblib hashes to something else; refused unread")
        return self.folder / version


async def test_a_start_serves_the_pointers_version_and_links_it_for_the_next_start(
    tmp_path: Path, models: tuple[StudentModel, StudentModel]
) -> None:
    """A restart while the database cannot be read serves what the link names: the version
    the pointer brought last time, not the one the folder was left at."""
    first, second = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    set_current(tmp_path, first)
    serving, failed = await load_at_start(
        str(tmp_path), expected_pass_mark=50.0, follower=Pointer(second)
    )
    assert (serving.version, failed) == (second, None)
    assert os.readlink(tmp_path / CURRENT) == second
    unread, _ = await load_at_start(str(tmp_path), expected_pass_mark=50.0, follower=Pointer(None))
    assert unread.version == second


async def test_a_followed_version_that_cannot_load_never_becomes_what_a_restart_loads(
    tmp_path: Path,
    models: tuple[StudentModel, StudentModel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    set_current(tmp_path, first)
    # Hashes right, as the trainer stored it, but made for another pass mark.
    other_mark = save(tmp_path, tiny_model(4, pass_mark=60.0), 4)
    pointer = Pointer(other_mark)

    with caplog.at_level(logging.ERROR):
        serving, failed = await load_at_start(
            str(tmp_path), expected_pass_mark=50.0, follower=pointer
        )
    assert serving.version == first and failed == (tmp_path / other_mark).resolve()
    assert os.readlink(tmp_path / CURRENT) == first
    assert [r.message for r in caplog.records if other_mark in r.message]

    installed = Installed(serving)
    reloader = ModelReloader(
        str(tmp_path),
        expected_pass_mark=50.0,
        serving=serving,
        install=installed,
        follower=pointer,
        failed=failed,
    )
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert not await reloader.check()  # refused at start: not loaded again
        pointer.version = None  # the database cannot be read: the link names what serves
        assert not await reloader.check()
        pointer.version = other_mark
        assert not await reloader.check()
    assert caplog.records == []
    assert os.readlink(tmp_path / CURRENT) == first

    pointer.version = second
    assert await reloader.check()
    assert installed.versions == [first, second]
    assert os.readlink(tmp_path / CURRENT) == second  # linked once it loaded

    # A new replica, its folder holding only the version it cannot load: it says why.
    empty = tmp_path / "new-replica"
    alone = save(empty, tiny_model(4, pass_mark=60.0), 4)
    with pytest.raises(ModelArtifactError, match="pass mark 60"):
        await load_at_start(str(empty), expected_pass_mark=50.0, follower=Pointer(alone))
    assert not (empty / CURRENT).exists()


async def test_a_new_replica_serves_the_newest_replaced_version_that_loads(
    tmp_path: Path,
    models: tuple[StudentModel, StudentModel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing of its own (a new pod): the pointer's version does not load here, so it walks
    back, past a version refused unread and one that does not load either, to one that does;
    links it, for a restart; and follows the pointer again once that names a version that
    loads."""
    oldest, good = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    forged = save(tmp_path, tiny_model(3), 3)
    also_other = save(tmp_path, tiny_model(4, pass_mark=60.0), 4)
    pointed = save(tmp_path, tiny_model(5, pass_mark=60.0), 5)
    pointer = Pointer(
        pointed,
        earlier=[also_other, forged, good, oldest],
        folder=tmp_path,
        forged=frozenset({forged}),
    )

    with caplog.at_level(logging.ERROR):
        serving, failed = await load_at_start(
            str(tmp_path), expected_pass_mark=50.0, follower=pointer
        )
    assert serving.version == good and failed == (tmp_path / pointed).resolve()
    assert pointer.fetched == [also_other, forged, good]  # one at a time, until one loads
    assert os.readlink(tmp_path / CURRENT) == good
    [said] = [r.message for r in caplog.records]
    assert f"cannot serve {pointed}, the version the database's pointer names" in said
    assert "pass mark 60" in said and f"serves {good} instead" in said
    assert f"replaced 3 promotion(s) back, after {also_other} (" in said and forged in said

    installed = Installed(serving)
    reloader = ModelReloader(
        str(tmp_path),
        expected_pass_mark=50.0,
        serving=serving,
        install=installed,
        follower=pointer,
        failed=failed,
    )
    assert not await reloader.check()  # the pointer's version is not tried again
    pointer.version = oldest
    assert await reloader.check()
    assert installed.versions == [good, oldest] and os.readlink(tmp_path / CURRENT) == oldest


async def test_a_new_replica_goes_back_a_few_versions_at_most_then_says_why_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = [save(tmp_path, tiny_model(s, pass_mark=60.0), s) for s in range(1, 6)]
    pointed, earlier = other[-1], other[-2::-1]
    pointer = Pointer(pointed, earlier=earlier, folder=tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(ModelArtifactError, match="pass mark 60"):
        await load_at_start(str(tmp_path), expected_pass_mark=50.0, follower=pointer)
    assert pointer.fetched == earlier[:FALLBACK_VERSIONS]
    assert not (tmp_path / CURRENT).exists()
    assert "nothing to start on" in caplog.records[-1].message


async def test_a_new_replica_whose_pointer_names_a_refused_version_serves_the_replaced_one(
    tmp_path: Path, models: tuple[StudentModel, StudentModel]
) -> None:
    """The follower refused the pointer's version unread (nothing of it on disk), and the
    folder holds nothing else: the walk starts from the refused version."""
    previous = save(tmp_path, models[0], 1)
    pointer = Pointer(None, earlier=[previous], folder=tmp_path)
    pointer._refusal = ArtifactRefused("forged", "hashes to something else; refused unread")
    serving, failed = await load_at_start(str(tmp_path), expected_pass_mark=50.0, follower=pointer)
    assert serving.version == previous and failed is None
    assert os.readlink(tmp_path / CURRENT) == previous

    # The database could not be read, nothing refused: a new replica has nothing to walk from.
    with pytest.raises(ModelArtifactError):
        await load_at_start(
            str(tmp_path / "empty"), expected_pass_mark=50.0, follower=Pointer(None)
        )


def test_a_walk_back_tries_each_version_once() -> None:
    # The SQL bounds the walk by steps, not by what it met: moves written by hand, or a version
    # stored again under an old name, can bring it round to a version, or to B, its start.
    assert distinct_versions("B", ["A", "C", "A", "B", "D"]) == ["A", "C", "D"]
    assert distinct_versions("B", []) == []


async def test_a_worker_that_loaded_slowly_never_takes_another_off_the_pointers_version(
    tmp_path: Path, models: tuple[StudentModel, StudentModel]
) -> None:
    """Two workers of one replica share its folder. One reads the pointer just before it moves
    on and loads slowly (a bigger model, a busier core) while the other loads and links the
    newer version: the slow one then moves the link back. That must not take the fast one off
    the pointer's version while the database cannot be read."""
    v1, v2 = save(tmp_path, models[0], 1), save(tmp_path, models[1], 2)
    v3 = save(tmp_path, tiny_model(3), 3)
    set_current(tmp_path, v1)
    pointer_a, pointer_b = Pointer(v2), Pointer(v2)

    def worker(pointer: Pointer) -> tuple[ModelReloader, Installed]:
        serving = load_served_model(str(tmp_path), expected_pass_mark=50.0)
        installed = Installed(serving)
        return ModelReloader(
            str(tmp_path),
            expected_pass_mark=50.0,
            serving=serving,
            install=installed,
            follower=pointer,
        ), installed

    (a, served_a), (b, served_b) = worker(pointer_a), worker(pointer_b)
    loading, go_on = threading.Event(), threading.Event()
    b_load = b._load

    def slow_load(target: Path) -> ServedModel:
        loading.set()
        go_on.wait(30)
        return b_load(target)

    b._load = slow_load  # type: ignore[method-assign]
    b_check = asyncio.create_task(b.check())
    assert await asyncio.to_thread(loading.wait, 30)
    pointer_a.version = pointer_b.version = v3
    assert await a.check()
    go_on.set()
    assert await b_check
    assert os.readlink(tmp_path / CURRENT) == v2  # moved back by the slow worker

    pointer_a.version = pointer_b.version = None  # the database cannot be read
    assert not await a.check() and not await b.check()
    assert served_a.versions == [v1, v3]
    pointer_b.version = v3  # it answers again: the slow worker catches up, and links it
    assert await b.check()
    assert served_b.versions == [v1, v2, v3] and os.readlink(tmp_path / CURRENT) == v3
