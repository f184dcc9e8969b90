"""A downloaded version is checked before it reaches the disk (studentperf.model_store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studentperf.model_artifact import METADATA_FILE, MODEL_FILE
from studentperf.model_store import ArtifactRefused, place_checked, sha256_hex

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
