"""MLServer as the serving benchmark's general-model-server peer, installed by the benchmark.

MLServer pins its own dependencies, so it lives in a separate environment, `.local/mlserver-venv`,
built from PyPI on first use and kept while its requirement list is unchanged: MLServer and its
scikit-learn runtime, plus the very scikit-learn, pandas, numpy and joblib versions of the
project's environment, so that it unpickles the pipeline the service serves.

It serves the regression pipeline of the current model artifact (the predicted final score)
through its scikit-learn runtime, as two models in one server: one with adaptive batching off,
one with it on. Its answers are checked against the service's for the same student before any
timing. The work asked of it is less than the service's per call (one pipeline, not two; no
event, no Kafka), which favours MLServer in the comparison.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import joblib

from infra.devstack import free_port, local_dir
from studentperf.features import FEATURE_COLUMNS, SCORE_RANGE, FeatureValue
from studentperf.model_artifact import library_versions, load_artifact

VENV: Final = local_dir() / "mlserver-venv"
_STAMP: Final = "bench-requirements.txt"
# uvloop 0.22 made get_event_loop() raise without a running loop, which MLServer 1.7.1's
# inference workers call at start: they die in a loop. 0.21.0 is the release it shipped with.
MLSERVER_VERSION: Final = "1.7.1"
_MLSERVER: Final = (
    f"mlserver=={MLSERVER_VERSION}",
    f"mlserver-sklearn=={MLSERVER_VERSION}",
    "uvloop==0.21.0",
)
CLIENT: Final = Path(__file__).with_name("mlserver_client.py")
MODEL_INFER: Final = "inference.GRPCInferenceService/ModelInfer"

# The two configurations: adaptive batching off, and on (up to 64 requests or 5 ms).
UNBATCHED: Final = "student-score"
BATCHED: Final = "student-score-batched"
MAX_BATCH_SIZE: Final = 64
MAX_BATCH_TIME_S: Final = 0.005


class MLServerUnavailable(Exception):
    """MLServer could not be installed or started here; the message says why."""


def requirements() -> list[str]:
    ours = library_versions()
    same = [f"{name}=={ours[name]}" for name in ("scikit-learn", "pandas", "numpy", "joblib")]
    return [*_MLSERVER, *same]


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def ensure_venv(say: Callable[[str], None] = print) -> Path:
    """The MLServer environment's python, installing it when missing or when its requirements
    changed; raises MLServerUnavailable with pip's own words when that fails."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(requirements()) + "\n"
    stamp = VENV / _STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"installing {', '.join(requirements())} into {VENV} (once)")
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *requirements()],
    ]
    for step in steps:
        done = subprocess.run(step, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            raise MLServerUnavailable(
                f"`{' '.join(step[:4])} ...` failed: {_tail(done.stderr or done.stdout)}"
            )
    stamp.write_text(wanted)
    return python


def client(python: Path, *args: str) -> str:
    done = subprocess.run(
        [str(python), str(CLIENT), *args], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise MLServerUnavailable(f"mlserver_client {args[0]} failed: {_tail(done.stderr)}")
    return done.stdout


@dataclass(frozen=True)
class MLServerPeer:
    python: Path
    repository: Path  # what `mlserver start` serves: settings.json and one folder per model
    address: str
    protoset: Path  # the V2 dataplane, for ghz
    requests: dict[str, Path]  # model name -> a serialized one-row ModelInferRequest

    @property
    def command(self) -> list[str]:
        return [str(self.python.parent / "mlserver"), "start", str(self.repository)]

    def predict(self, model: str, timeout_s: float = 120.0) -> float:
        """The model's answer to its benchmark request; waits for MLServer to be ready."""
        answer = json.loads(
            client(self.python, "infer", self.address, str(self.requests[model]), str(timeout_s))
        )
        [score] = answer["predict"]
        return float(score)


def prepare(
    python: Path, models_dir: Path, folder: Path, row: dict[str, FeatureValue]
) -> MLServerPeer:
    """Exports the current model's regression pipeline and writes MLServer's settings and the
    benchmark's request for `row` (a full feature row: MLServer is not asked to impute)."""
    missing = [
        name
        for name, value in row.items()
        if value is None or (isinstance(value, float) and math.isnan(value))
    ]
    if missing or list(row) != list(FEATURE_COLUMNS):
        raise ValueError(f"the row must give every feature in order; missing {missing}")
    loaded = load_artifact(models_dir)
    repository = folder / "mlserver"
    port = free_port()
    settings = {
        "grpc_port": port,
        # Its REST and metrics servers cannot be switched off; free ports keep them out of the way.
        "http_port": free_port(),
        "metrics_port": free_port(),
        "debug": False,
    }
    repository.mkdir(parents=True)
    (repository / "settings.json").write_text(json.dumps(settings, indent=2))
    requests = {}
    for name, batching in (
        (UNBATCHED, {}),
        (BATCHED, {"max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_BATCH_TIME_S}),
    ):
        model_dir = repository / name
        model_dir.mkdir()
        joblib.dump(loaded.model.regressor, model_dir / "model.joblib")
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": loaded.version},
            **batching,
        }
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        requests[name] = folder / f"mlserver-{name}.bin"
        client(python, "request", name, json.dumps(row), str(requests[name]))
    protoset = folder / "dataplane.protoset"
    client(python, "protoset", str(protoset))
    return MLServerPeer(python, repository, f"127.0.0.1:{port}", protoset, requests)


def same_score(ours: float, theirs: float) -> bool:
    """MLServer's raw regression output against the service's clipped score (the service also
    computes it without pandas, so allow float rounding)."""
    low, high = SCORE_RANGE
    return math.isclose(ours, min(max(theirs, low), high), rel_tol=1e-6, abs_tol=1e-6)
