"""A downloaded version is checked before it reaches the disk (studentperf.model_store)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from studentperf import model_store
from studentperf.model_artifact import CURRENT, METADATA_FILE, MODEL_FILE
from studentperf.model_store import ArtifactRefused, download_version, place_checked, sha256_hex

MODEL = b"pretend pickle"
METADATA = b'{"version": "v1"}'


def _files(**changed: bytes) -> list[tuple[str, bytes, str]]:
    """The stored rows of a version: name, bytes, and the hash the trainer recorded of the
    original bytes (so a changed content no longer matches)."""
    originals = {MODEL_FILE: MODEL, METADATA_FILE: METADATA, "reference.csv": b"a,b\n"}
    return [
        (name, changed.get(name.replace(".", "_"), content), sha256_hex(content))
        for name, content in originals.items()
    ]


def test_a_matching_version_is_written_whole(tmp_path: Path) -> None:
    place_checked(tmp_path, "v1", _files())
    assert (tmp_path / "v1" / MODEL_FILE).read_bytes() == MODEL
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == sorted(
        [MODEL_FILE, METADATA_FILE, "reference.csv"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no staging folder left


@pytest.mark.parametrize("changed", ["model_joblib", "reference_csv"])
def test_a_changed_byte_in_any_file_refuses_the_version_and_writes_nothing(
    tmp_path: Path, changed: str
) -> None:
    with pytest.raises(ArtifactRefused, match="the trainer recorded; refused unread"):
        place_checked(tmp_path, "v1", _files(**{changed: b"forged"}))
    assert list(tmp_path.iterdir()) == []


def test_a_version_without_its_model_is_refused(tmp_path: Path) -> None:
    files = [f for f in _files() if f[0] != MODEL_FILE]
    with pytest.raises(ArtifactRefused, match="holds no"):
        place_checked(tmp_path, "v1", files)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b"])
def test_a_file_name_that_is_not_one_plain_name_is_refused(tmp_path: Path, name: str) -> None:
    files = [*_files(), (name, b"x", sha256_hex(b"x"))]
    with pytest.raises(ArtifactRefused, match="holds a file named"):
        place_checked(tmp_path / "models", "v1", files)
    assert not (tmp_path / "models").exists()


def test_a_version_reaches_the_disk_before_its_name_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version folder that exists is trusted as complete (download_version does not fetch it
    again), so a machine crash must never leave its name with files that are not on disk."""
    synced: list[tuple[Path, bool]] = []  # each path fsync'd, and whether the version existed

    def fsync_path(path: Path) -> None:
        synced.append((path, (tmp_path / "v1").exists()))

    monkeypatch.setattr(model_store, "fsync_path", fsync_path)
    place_checked(tmp_path, "v1", _files())
    before = [path for path, named in synced if not named]
    assert {path.name for path in before} >= {MODEL_FILE, METADATA_FILE, "reference.csv"}
    assert any(path.name.startswith(".download-v1-") for path in before)  # the folder's names
    assert (tmp_path, True) in synced  # and the folder's new name in its parent


def test_a_version_named_like_the_current_link_is_refused(tmp_path: Path) -> None:
    # Its folder would be the link itself: the link would end up pointing at itself.
    no_database = cast(Any, None)  # refused before the database is asked anything
    with pytest.raises(ArtifactRefused, match="not a version name"):
        asyncio.run(download_version(no_database, CURRENT, tmp_path))
