"""A models folder's own record of its versions, for one machine (STUDENTPERF_MODEL_SOURCE=folder):
which versions the gate promoted, when, and which version each took `current` from
(`promotions.jsonl`, one JSON line per promotion, appended by trainer.promote under its lock;
lines from before `replaced` was noted lack it), and each version's recorded SHA-256s
(metadata.json's `files_sha256`), which a rollback checks before it serves a version again. The
database keeps the same facts for many machines (studentperf.model_store, model_pointer_moves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from studentperf.durable import fsync_path
from studentperf.model_artifact import (
    FILES_SHA256,
    METADATA_FILE,
    MODEL_FILE,
    ModelArtifactError,
    read_metadata,
)
from studentperf.model_store import ArtifactRefused, Published, sha256_hex

PROMOTIONS_FILE: Final = "promotions.jsonl"


def note_promotion(
    models_dir: Path, version: str, *, replaced: str | None, at: datetime | None = None
) -> None:
    """Appends the promotion of `version`, which took `current` from `replaced` (None: the
    first version served), to the folder's log (the caller holds the lock)."""
    when = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    path = models_dir / PROMOTIONS_FILE
    with path.open("a", encoding="utf-8") as log:
        entry = {"version": version, "promoted_at": when, "replaced": replaced}
        log.write(json.dumps(entry) + "\n")
    fsync_path(path)


@dataclass(frozen=True)
class _Promotion:
    at: datetime
    replaced: str | None
    replaced_known: bool


def _promotions(models_dir: Path) -> dict[str, _Promotion]:
    """Each version's last promotion in the log; a line that is not one (a torn write) is
    skipped."""
    path = models_dir / PROMOTIONS_FILE
    if not path.is_file():
        return {}
    last: dict[str, _Promotion] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            replaced = entry.get("replaced")
            last[str(entry["version"])] = _Promotion(
                datetime.fromisoformat(entry["promoted_at"]),
                None if replaced is None else str(replaced),
                "replaced" in entry,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return last


def read_promotions(models_dir: Path) -> dict[str, datetime]:
    """Each version's last promotion time in the log."""
    return {version: found.at for version, found in _promotions(models_dir).items()}


def local_versions(models_dir: Path) -> list[Published]:
    """Every version folder that holds a model, with its last promotion from the log; the
    `current` link names one of them, so it is no version of its own."""
    promoted = _promotions(models_dir)
    if not models_dir.is_dir():
        return []
    never = _Promotion(datetime.min, None, False)
    return [
        Published(
            path.name,
            promoted[path.name].at if path.name in promoted else None,
            promoted.get(path.name, never).replaced,
            promoted.get(path.name, never).replaced_known,
        )
        for path in sorted(models_dir.iterdir())
        if not path.name.startswith(".") and not path.is_symlink() and (path / MODEL_FILE).is_file()
    ]


def verify_local(models_dir: Path, version: str) -> int:
    """Checks the version folder's files against the SHA-256s its metadata.json recorded;
    returns how many files. Raises ArtifactRefused (also for a version that recorded none)."""
    directory = models_dir / version
    try:
        metadata = read_metadata(directory)
    except ModelArtifactError as err:
        raise ArtifactRefused(version, str(err)) from err
    recorded = metadata.get(FILES_SHA256)
    if not isinstance(recorded, dict) or MODEL_FILE not in recorded:
        raise ArtifactRefused(
            version,
            f"its {METADATA_FILE} records no SHA-256 of {MODEL_FILE} (saved before versions "
            "recorded them), so its bytes cannot be verified",
        )
    for name, digest in recorded.items():
        if Path(str(name)).name != name or str(name).startswith("."):
            raise ArtifactRefused(version, f"its {METADATA_FILE} names a file {name!r}")
        try:
            content = (directory / name).read_bytes()
        except OSError as err:
            raise ArtifactRefused(version, f"{name} is unreadable: {err}") from err
        found = sha256_hex(content)
        if found != digest:
            raise ArtifactRefused(
                version,
                f"{name} hashes to {found[:16]}..., not the {str(digest)[:16]}... its "
                f"{METADATA_FILE} recorded",
            )
    return len(recorded)
