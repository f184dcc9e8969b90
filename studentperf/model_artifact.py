"""The trained-model artifact: written by the trainer, read by the inference service.

Layout of a models directory:

    models/
      20250101T120000Z-1a2b3c4d/   one directory per version, never changed once written
        model.joblib               {"format": 2, "regressor", "classifier", "feature_columns",
                                    "pass_mark", "score_reference", "feature_groups",
                                    and since intervals "score_interval" and
                                    "pass_calibration", None when not fitted}
        metadata.json              version, created_at, pass mark, library versions, metrics,
                                   files_sha256 (each other file's SHA-256, so a rollback can
                                   check a version's bytes before serving it again)...
        reference_inputs.csv       a sample of the training inputs (trainer.reference), for
                                   drift monitoring; older versions lack it
      current -> 20250101T120000Z-1a2b3c4d   relative symlink: the version to serve
      promotions.jsonl             one line per promotion by the gate (studentperf.model_folder)

A version is `<UTC time YYYYMMDDTHHMMSSZ>-<8 hex of the training data and parameters>`, so names
sort by time and say whether two versions saw the same inputs. Publishing is atomic at each step:
the version directory is written under a hidden temporary name and renamed into place, then
`current` is switched by creating a new symlink under a temporary name and `os.replace`-ing it
over the old one. A reader sees the previous version or the new one, never a partial one.

`model.joblib` is a pickle: load only artifacts you produced. Unpickling needs scikit-learn,
pandas and numpy only (no trainer code); `metadata.json` records the versions it was made with.
Format 2 added what explanations need (see studentperf.explain): the mean of the regressor's
encoded training rows and which encoded columns belong to which feature. A format-1 artifact is
refused with the advice to retrain. A format-2 bundle from before intervals lacks
"score_interval" and "pass_calibration": it loads with neither (studentperf.score_interval).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import numpy.typing as npt

from studentperf import explain
from studentperf.durable import fsync_path
from studentperf.features import FEATURE_COLUMNS, SCORE_RANGE
from studentperf.score_interval import PassCalibration, ScoreInterval

MODEL_FILE: Final = "model.joblib"
METADATA_FILE: Final = "metadata.json"
CURRENT: Final = "current"
# metadata.json's field: {file name: SHA-256 hex} of every other file of the version.
FILES_SHA256: Final = "files_sha256"
FORMAT: Final = 2
_HOW_TO_FIX: Final = "run `make train` (python -m trainer) to build one"
_BUNDLE_KEYS: Final = frozenset(
    {"regressor", "classifier", "feature_columns", "pass_mark", "score_reference", "feature_groups"}
)


class ModelArtifactError(Exception):
    """The artifact is missing, unreadable or does not fit this code's feature schema."""


@dataclass(frozen=True)
class StudentModel:
    """Both fitted pipelines. Each takes a DataFrame of `feature_columns` (see features.py).

    Both pipelines end in a step named "model" after a preprocessing step named "features".
    `score_reference` is the mean of the regressor's encoded training rows; `feature_groups`
    lists the encoded columns of each of `feature_columns`, in order.
    """

    regressor: Any
    classifier: Any
    pass_mark: float
    score_reference: npt.NDArray[np.float64]
    feature_groups: tuple[tuple[int, ...], ...]
    feature_columns: tuple[str, ...] = FEATURE_COLUMNS
    # None: a model trained before intervals, or one whose calibration did not help on test.
    score_interval: ScoreInterval | None = None
    pass_calibration: PassCalibration | None = None

    def predict_scores(self, features: Any) -> npt.NDArray[np.float64]:
        """Predicted final scores, clipped to SCORE_RANGE."""
        scores = np.asarray(self.regressor.predict(features), dtype=np.float64)
        low, high = SCORE_RANGE
        return np.clip(scores, low, high)

    def pass_probabilities(self, features: Any) -> npt.NDArray[np.float64]:
        """Probability that each student's final score reaches `pass_mark` (calibrated)."""
        return self.calibrate(self.classifier.predict_proba(features)[:, 1])

    def calibrate(self, probabilities: Any) -> npt.NDArray[np.float64]:
        """The classifier's pass probabilities through the calibration map, if there is one."""
        if self.pass_calibration is None:
            return np.asarray(probabilities, dtype=np.float64)
        return self.pass_calibration.apply(probabilities)

    def explain_scores(self, features: Any) -> explain.Explanations:
        """Each feature's contribution to each raw (unclipped) score; see studentperf.explain."""
        encoded = np.asarray(
            self.regressor.named_steps["features"].transform(features), dtype=np.float64
        )
        return explain.explain(
            self.regressor.named_steps["model"], encoded, self.score_reference, self.feature_groups
        )

    @property
    def explanation_method(self) -> str:
        linear = explain.is_linear(self.regressor.named_steps["model"])
        return explain.LINEAR if linear else explain.SHAPLEY


@dataclass(frozen=True)
class LoadedModel:
    """A model read from disk, with the version it came from and its metadata."""

    model: StudentModel
    version: str
    path: Path
    metadata: Mapping[str, Any] = field(repr=False)


def make_version(created_at: datetime, fingerprint: str) -> str:
    """`YYYYMMDDTHHMMSSZ-<first 8 characters of fingerprint>`, the time taken in UTC."""
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"


def _free_version(root: Path, version: str) -> str:
    """`version`, or `version-2`, `-3`... when the same rows were trained within the same second
    (a forced retrain of a refused version): distinct trainings stay distinct versions, in order."""
    candidate, n = version, 1
    while (root / candidate).exists():
        n += 1
        candidate = f"{version}-{n}"
    return candidate


def library_versions() -> dict[str, str]:
    """Versions of the libraries a pickled pipeline depends on."""
    names = ("scikit-learn", "pandas", "numpy", "joblib")
    return {name: package_version(name) for name in names} | {"python": platform.python_version()}


def save_artifact(
    models_dir: str | os.PathLike[str],
    model: StudentModel,
    *,
    fingerprint: str,
    details: Mapping[str, Any],
    created_at: datetime | None = None,
    make_current: bool = True,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a new version under `models_dir`, point `current` at it, return its directory.

    `details` (data source, row counts, seed, metrics...) goes into metadata.json beside the
    fields this module owns: version, created_at, pass_mark, feature_columns, libraries.
    `extra_files` (plain names to contents) are written beside them, published with the rest.
    """
    extras = dict(extra_files or {})
    for name in extras:
        if name in (MODEL_FILE, METADATA_FILE) or Path(name).name != name or name.startswith("."):
            raise ModelArtifactError(f"{name!r} cannot be an extra file of a version")
    root = Path(models_dir)
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    version = _free_version(root, make_version(created, fingerprint))
    metadata: dict[str, Any] = {
        "version": version,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "pass_mark": model.pass_mark,
        "feature_columns": list(model.feature_columns),
        "libraries": library_versions(),
        **details,
    }
    bundle = {
        "format": FORMAT,
        "regressor": model.regressor,
        "classifier": model.classifier,
        "feature_columns": model.feature_columns,
        "pass_mark": model.pass_mark,
        "score_reference": model.score_reference,
        "feature_groups": model.feature_groups,
        "score_interval": None if model.score_interval is None else model.score_interval.as_dict(),
        "pass_calibration": (
            None if model.pass_calibration is None else model.pass_calibration.as_dict()
        ),
    }
    root.mkdir(parents=True, exist_ok=True)
    target = root / version
    staging = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        joblib.dump(bundle, staging / MODEL_FILE)
        for name, content in extras.items():
            (staging / name).write_bytes(content)
        metadata[FILES_SHA256] = {
            name: hashlib.sha256((staging / name).read_bytes()).hexdigest()
            for name in (MODEL_FILE, *extras)
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        for name in (MODEL_FILE, METADATA_FILE, *extras):
            fsync_path(staging / name)
        try:
            staging.rename(target)  # fails rather than replace an existing version
        except OSError as err:
            raise ModelArtifactError(f"cannot publish {target}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if make_current:
        set_current(root, version)
    return target


def set_current(models_dir: str | os.PathLike[str], version: str) -> None:
    """Atomically point `models_dir/current` at the existing version directory `version`."""
    root = Path(models_dir)
    if not (root / version / MODEL_FILE).is_file():
        raise ModelArtifactError(f"no model in {root / version}")
    link = root / f".{CURRENT}-{uuid.uuid4().hex[:8]}"
    os.symlink(version, link)  # relative, so the directory can be moved or mounted elsewhere
    os.replace(link, root / CURRENT)
    fsync_path(root)


def resolve_version_dir(path: str | os.PathLike[str]) -> Path:
    """The real version directory for a version dir, a `current` link or a models root."""
    given = Path(path)
    candidate = given if (given / MODEL_FILE).exists() else given / CURRENT
    if candidate.is_symlink() and not candidate.exists():
        raise ModelArtifactError(
            f"{candidate} points to {os.readlink(candidate)}, which does not exist; {_HOW_TO_FIX}"
        )
    if not (candidate / MODEL_FILE).is_file():
        raise ModelArtifactError(f"no trained model at {given}; {_HOW_TO_FIX}")
    # Resolve once so both files come from one version even if `current` moves meanwhile.
    return candidate.resolve()


def linked_version(models_dir: str | os.PathLike[str]) -> str | None:
    """The version the folder's `current` link names, if it is there to load (None: no link,
    or a dangling one)."""
    if not (Path(models_dir) / CURRENT).is_symlink():
        return None
    try:
        return resolve_version_dir(models_dir).name
    except ModelArtifactError:
        return None


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A version folder's metadata.json: the one reader of that file.

    Raises ModelArtifactError when it is missing, not JSON, or not a JSON object.
    """
    path = Path(directory) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelArtifactError(f"unreadable {path}: {err!r}; {_HOW_TO_FIX}") from err
    if not isinstance(metadata, dict):
        raise ModelArtifactError(f"{path} is not a JSON object; {_HOW_TO_FIX}")
    return metadata


def load_artifact(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a version directory, or the one `current` names under a models root.

    Raises ModelArtifactError, saying to run `make train`, when nothing usable is there.
    """
    directory = resolve_version_dir(path)
    metadata = read_metadata(directory)
    try:
        bundle = joblib.load(directory / MODEL_FILE)
    except Exception as err:  # any failure to read or unpickle means the same to the caller
        raise ModelArtifactError(f"unreadable model artifact in {directory}: {err!r}") from err
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT or _BUNDLE_KEYS - set(bundle):
        raise ModelArtifactError(
            f"{directory / MODEL_FILE} is not a format-{FORMAT} model bundle; {_HOW_TO_FIX}"
        )
    if tuple(bundle["feature_columns"]) != FEATURE_COLUMNS:
        raise ModelArtifactError(
            f"the model in {directory} was trained on columns {list(bundle['feature_columns'])}, "
            f"not the current schema {list(FEATURE_COLUMNS)}; {_HOW_TO_FIX}"
        )
    model = StudentModel(
        regressor=bundle["regressor"],
        classifier=bundle["classifier"],
        pass_mark=float(bundle["pass_mark"]),
        score_reference=np.asarray(bundle["score_reference"], dtype=np.float64),
        feature_groups=tuple(tuple(int(i) for i in g) for g in bundle["feature_groups"]),
        score_interval=ScoreInterval.from_dict(bundle.get("score_interval")),
        pass_calibration=PassCalibration.from_dict(bundle.get("pass_calibration")),
    )
    return LoadedModel(model=model, version=directory.name, path=directory, metadata=metadata)
