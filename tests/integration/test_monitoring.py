"""`make monitor` and `make retrain` against the real services.

Predictions go through the real inference service and the recorder into PostgreSQL: first
students drawn like the served model's training data, then students with planted drift (study
hours shifted up by 10, the free-or-reduced lunch share raised from 35 % to 80 %). Outcomes are
recorded over gRPC for the drifted students, 15 points above what the training relation gives,
so the served model's live quality is clearly worse than its held-out figures. Retraining on
those outcomes must beat the served model on them, be promoted, and be picked up by the running
service. The HTML report is opened in headless Chromium and every plot checked. The JSON
verdict (--json) and the Prometheus text file are checked against the same runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import pandas as pd
import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.config import DatabaseRole
from studentperf.features import CATEGORIES, FEATURE_COLUMNS
from studentperf.model_store import store_version
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests import browser
from tests.integration.conftest import Stack
from tests.integration.helpers import count_rows, eventually, run_module
from trainer import synthetic

pytestmark = pytest.mark.usefixtures("recorder")

ROWS = 300
SHIFT_HOURS = 10.0
SCORE_SHIFT = 15.0


@pytest.fixture(scope="module")
def models(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's models folder: retraining here must not touch other modules."""
    target = tmp_path_factory.mktemp("monitoring") / "models"
    shutil.copytree(model_path, target, symlinks=True)
    return target


@pytest.fixture(scope="module")
async def inference(
    stack: Stack, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """The service watching this module's models folder, as `make up` watches models/."""
    settings = InferenceSettings(
        shared=stack.shared_as(DatabaseRole.INFERENCE),
        listen_address="127.0.0.1:0",
        models_dir=str(models),
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        model_poll_interval_s=0.2,
    )
    running = await start_server(settings)
    yield running
    await running.stop(grace_s=5)


def as_student(row: pd.Series, student_id: str) -> pb.Student:
    """A synthetic row as the API receives it; missing values are left unset."""
    profile = pb.StudentProfile(student_id=student_id)
    if not np.isnan(row["age"]):
        profile.age = int(row["age"])
    for feature in CATEGORIES:
        if not pd.isna(row[feature]):
            # Enum names are the feature and the level in capitals, e.g. LUNCH_PROGRAM_STANDARD.
            setattr(profile, feature, f"{feature}_{row[feature]}".upper())
    record = pb.AcademicRecord()
    for feature in ("attendance_percentage", "study_hours_per_week", "previous_gpa"):
        if not np.isnan(row[feature]):
            setattr(record, feature, float(row[feature]))
    if not np.isnan(row["assignments_completed"]):
        record.assignments_completed = bool(row["assignments_completed"])
    return pb.Student(profile=profile, academic_record=record)


async def predict_all(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool, frame: pd.DataFrame, prefix: str
) -> datetime:
    """Sends every row through BatchPredict, waits until the recorder stored them all; returns
    a time before the first prediction."""
    started = datetime.now(UTC)
    students = [as_student(row, f"{prefix}-{i}") for i, (_, row) in enumerate(frame.iterrows())]
    answer = await stub.BatchPredict(api.BatchPredictRequest(students=students), timeout=30)
    assert all(r.HasField("prediction") for r in answer.results), answer.results[:3]
    stored = "SELECT count(*) FROM predictions WHERE student_id LIKE $1"
    probe = count_rows(db, stored, f"{prefix}-%")
    assert await eventually(probe, len(frame), timeout=60) == len(frame)
    return started


def drifted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["study_hours_per_week"] = out["study_hours_per_week"] + SHIFT_HOURS
    # 80 % free or reduced lunch (35 % in training), one missing value in forty as trained.
    lunch = np.where(np.arange(len(out)) % 5 == 0, "standard", "free_or_reduced").astype(object)
    lunch[np.arange(len(out)) % 40 == 7] = None
    out["lunch_program"] = lunch
    return out


@pytest.fixture(scope="module")
async def calm_since(stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool) -> datetime:
    return await predict_all(stub, db, synthetic.generate(ROWS, 101), "calm")


@pytest.fixture(scope="module")
async def drift_frame(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool, calm_since: datetime
) -> pd.DataFrame:
    """Sent after the calm batch, so `--last ROWS` is exactly the drifted predictions."""
    frame = drifted(synthetic.generate(ROWS, 202))
    await predict_all(stub, db, frame, "drift")
    return frame


@pytest.fixture(scope="module")
async def drift_outcomes(
    stub: api_grpc.PredictionServiceAsyncStub, drift_frame: pd.DataFrame, db: asyncpg.Pool
) -> int:
    """Outcomes for the drifted students, 15 points above the training relation, once the
    recorder has written them (RecordOutcomes publishes them, issue 15)."""
    outcomes = [
        api.Outcome(
            student_id=f"drift-{i}",
            term="2026-fall",
            final_score=float(min(score + SCORE_SHIFT, 100.0)),
        )
        for i, score in enumerate(drift_frame["final_score"])
    ]
    answer = await stub.RecordOutcomes(api.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
    assert all(r.HasField("stored") for r in answer.results)
    written = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id LIKE 'drift-%'")
    assert await eventually(written, len(outcomes), timeout=60) == len(outcomes)
    return len(outcomes)


async def monitor(
    stack: Stack, models: Path, report: Path, *window: str
) -> subprocess.CompletedProcess[str]:
    return await run_module(
        "trainer.monitor",
        "--database-url",
        stack.database_url_as(DatabaseRole.TRAINER),
        "--models-dir",
        str(models),
        "--report",
        str(report),
        *window,
    )


def alerted_features(stdout: str) -> set[str]:
    return set(re.findall(r"ALERT: (\w+) drifted", stdout))


async def served_version(stub: api_grpc.PredictionServiceAsyncStub, expected: str) -> str:
    """Polls GetModelInfo until it names `expected` (hot reload) or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
        if info.model_version == expected or time.monotonic() > deadline:
            return str(info.model_version)
        await asyncio.sleep(0.2)


async def test_inputs_like_the_training_data_cross_no_threshold(
    stack: Stack, models: Path, calm_since: datetime, tmp_path: Path
) -> None:
    report = tmp_path / "calm.html"
    done = await monitor(stack, models, report, "--since", calm_since.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    version = (models / "current").readlink().name
    assert f"version {version}: {ROWS} predictions" in done.stdout
    assert "result: no threshold crossed" in done.stdout and "ALERT" not in done.stdout
    assert "thresholds: PSI >= 0.2; KS p-value < 0.001" in done.stdout
    assert "no outcomes recorded for these predictions yet" in done.stdout
    assert f"report: {report}" in done.stdout and report.stat().st_size > 10_000

    capped = await monitor(
        stack, models, tmp_path / "capped.html", "--since", calm_since.isoformat(),
        "--max-rows", "100",
    )  # fmt: skip
    # 100 inputs are below the default --min-rows: shown, not judged, so chance cannot alert.
    assert capped.returncode == 0, capped.stdout + capped.stderr
    assert "capped at the newest 100 (--max-rows)" in capped.stdout
    assert f"version {version}: 100 predictions" in capped.stdout
    assert "only 100 recent inputs, fewer than 200" in capped.stdout

    # A version trained before reference inputs were kept: said, not a crash.
    older = tmp_path / "older-models"
    shutil.copytree(models, older, symlinks=True)
    (older / version / "reference_inputs.csv").unlink()
    done = await monitor(stack, older, tmp_path / "older.html", "--since", calm_since.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"note: no reference data for version {version}: input drift not measured" in done.stdout


async def test_json_on_stdout_says_no_threshold_crossed_for_calm_inputs(
    stack: Stack, models: Path, calm_since: datetime, tmp_path: Path
) -> None:
    """`--json`: stdout holds the JSON alone, the summary moves to stderr, exit status as ever."""
    report = tmp_path / "calm.html"
    done = await monitor(stack, models, report, "--since", calm_since.isoformat(), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    version = (models / "current").readlink().name
    print(f"calm --json: exit {done.returncode}, status {document['status']}, "
          f"alerts {document['alerts']}")  # fmt: skip
    assert (document["status"], document["exit_code"], document["alerts"]) == ("ok", 0, [])
    [found] = document["versions"]
    assert (found["version"], found["predictions"]) == (version, ROWS)
    assert found["drifting_features"] == [] and found["quality"] is None
    assert max(d["psi"] for d in found["drift"]) < 0.2
    assert document["report"] == str(report) and report.stat().st_size > 10_000
    assert "result: no threshold crossed" in done.stderr


async def test_json_says_error_when_the_database_is_unreachable(
    models: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verdict, textfile = tmp_path / "verdict.json", tmp_path / "studentperf.prom"
    done = await run_module(
        "trainer.monitor", "--database-url", f"postgresql://nobody@127.0.0.1:{port}/none",
        "--models-dir", str(models), "--json", str(verdict),
        "--prometheus-textfile", str(textfile),
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    document = json.loads(verdict.read_text())
    print(f"unreachable database: exit {done.returncode}, error {document['error']!r}")
    assert (document["status"], document["exit_code"], document["versions"]) == ("error", 2, [])
    assert str(port) in document["error"]
    assert "studentperf_monitor_exit_code 2" in textfile.read_text().splitlines()


async def test_planted_drift_alerts_on_exactly_the_shifted_features(
    stack: Stack, models: Path, drift_frame: pd.DataFrame, tmp_path: Path
) -> None:
    done = await monitor(stack, models, tmp_path / "drift.html", "--last", str(ROWS))
    assert done.returncode == 1, done.stdout + done.stderr
    assert alerted_features(done.stdout) == {"study_hours_per_week", "lunch_program"}
    assert "result: 2 threshold(s) crossed" in done.stdout
    # A stricter PSI threshold from the environment is printed and used.
    strict = await run_module(
        "trainer.monitor", "--last", str(ROWS), "--models-dir", str(models),
        "--report", str(tmp_path / "strict.html"),
        env={
            "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.TRAINER),
            "STUDENTPERF_MONITOR_PSI": "50",
            "STUDENTPERF_MONITOR_KS_PVALUE": "0",
        },
    )  # fmt: skip
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert "thresholds: PSI >= 50; KS p-value < 0" in strict.stdout


async def test_json_and_textfile_name_exactly_the_drifted_features(
    stack: Stack, models: Path, drift_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """`--json PATH --prometheus-textfile PATH`: the summary stays on stdout; the JSON names
    the features the text summary names, and the text file counts the same alerts."""
    verdict, textfile = tmp_path / "verdict.json", tmp_path / "studentperf.prom"
    done = await monitor(
        stack, models, tmp_path / "drift.html", "--last", str(ROWS),
        "--json", str(verdict), "--prometheus-textfile", str(textfile),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads(verdict.read_text())
    version = (models / "current").readlink().name
    [found] = document["versions"]
    print(f"drift --json: exit {done.returncode}, status {document['status']}, "
          f"drifting {found['drifting_features']}")  # fmt: skip
    assert (document["status"], document["exit_code"], found["version"]) == ("alert", 1, version)
    assert set(found["drifting_features"]) == {"study_hours_per_week", "lunch_program"}
    assert set(found["drifting_features"]) == alerted_features(done.stdout)
    assert [a["subject"] for a in document["alerts"]] == found["drifting_features"]
    assert "result: 2 threshold(s) crossed" in done.stdout
    samples = textfile.read_text().splitlines()
    assert f'studentperf_monitor_alerts{{model_version="{version}"}} 2' in samples
    assert "studentperf_monitor_exit_code 1" in samples


async def test_with_versions_in_the_database_an_empty_folder_still_measures_drift(
    stack: Stack, models: Path, drift_frame: pd.DataFrame, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """STUDENTPERF_MODEL_SOURCE=database, as deploy/'s monitor CronJob runs: no version folder
    on the machine, so the served version's reference inputs come from the database (hashes
    checked) and the planted drift is found as on the machine that trained it. A version the
    database does not hold is named in the report with the reason."""
    drift_versions = await db.fetch(
        "SELECT DISTINCT model_version FROM predictions WHERE student_id LIKE 'drift-%'"
    )
    (version,) = [row["model_version"] for row in drift_versions]
    empty = tmp_path / "fresh-models"
    as_trainer = {
        "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.TRAINER),
        "STUDENTPERF_MODEL_SOURCE": "database",
    }
    window = ("--last", str(ROWS), "--models-dir", str(empty))
    # Not stored yet: refused, and the report says why (no reference data, no drift measured).
    missing = await run_module(
        "trainer.monitor", *window, "--report", str(tmp_path / "missing.html"),
        env=as_trainer,
    )  # fmt: skip
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert "the database holds no model.joblib" in missing.stdout
    assert alerted_features(missing.stdout) == set()
    trainer = await asyncpg.connect(stack.database_url_as(DatabaseRole.TRAINER))
    try:
        await store_version(trainer, models / version)
    finally:
        await trainer.close()
    found = await run_module(
        "trainer.monitor", *window, "--report", str(tmp_path / "found.html"),
        env=as_trainer,
    )  # fmt: skip
    assert found.returncode == 1, found.stdout + found.stderr
    assert alerted_features(found.stdout) == {"study_hours_per_week", "lunch_program"}
    assert (empty / version / "reference_inputs.csv").is_file()


async def test_live_quality_appears_and_the_report_renders_in_chromium(
    stack: Stack, models: Path, drift_outcomes: int, tmp_path: Path
) -> None:
    report = tmp_path / "quality.html"
    done = await monitor(stack, models, report, "--last", str(ROWS))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"live quality over {drift_outcomes} outcomes" in done.stdout
    live = re.search(r"live quality over \d+ outcomes: RMSE ([0-9.]+)", done.stdout)
    assert live, done.stdout
    rmse = float(live[1])
    # Outcomes 15 points up, predictions about 7 up (the extra study hours): an 8-point bias on
    # top of the noise of 7 the model was trained to (held-out RMSE about 7.4).
    assert 9.5 < rmse < SCORE_SHIFT
    assert re.search(r"ALERT: live RMSE [0-9.]+ is 1\.[3-9][0-9] x the held-out", done.stdout)

    version = (models / "current").readlink().name
    shot = tmp_path / "report.png"
    page = browser.render(report, shot, tmp_path / "chromium-profile")
    assert page.title.startswith("studentperf monitoring report")
    captions = [image.alt for image in page.images]
    expected = [f"PSI per feature, version {version}"]
    expected += [c for c in captions if c.split(":")[0] in FEATURE_COLUMNS]
    expected.append(f"Calibration of P(pass), version {version} ({drift_outcomes} outcomes)")
    assert captions == expected and len(captions) == 1 + len(FEATURE_COLUMNS) + 1
    assert [c.split(":")[0] for c in captions[1:-1]] == list(FEATURE_COLUMNS)
    assert all(i.complete and i.width > 0 and i.height > 0 and i.shown > 0 for i in page.images)
    # Two features, the live RMSE, and the score intervals: an 8-point bias pushes many outcomes
    # out of ranges made for the noise of 7 alone.
    assert "4 threshold(s) crossed." in page.text
    assert re.search(
        r"ALERT: live interval coverage [0-9.]+% of \d+ outcomes \(stated 80%", done.stdout
    )
    assert "ALERT: study_hours_per_week drifted" in page.text
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000


async def test_retraining_refuses_too_few_recorded_rows(
    stack: Stack, models: Path, drift_outcomes: int
) -> None:
    before = sorted(p.name for p in models.iterdir())
    done = await run_module(
        "trainer", "--database-only",
        "--database-url", stack.database_url_as(DatabaseRole.TRAINER),
        "--models-dir", str(models), "--min-db-rows", str(drift_outcomes + 1),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"has {drift_outcomes} labelled rows" in done.stderr
    assert "never synthetic" in done.stderr and "using synthetic data" not in done.stdout
    assert sorted(p.name for p in models.iterdir()) == before


async def test_retraining_on_recorded_outcomes_is_promoted_and_served(
    stack: Stack,
    models: Path,
    drift_outcomes: int,
    stub: api_grpc.PredictionServiceAsyncStub,
    db: asyncpg.Pool,
) -> None:
    old = (models / "current").readlink().name
    done = await run_module(
        "trainer", "--database-only",
        "--database-url", stack.database_url_as(DatabaseRole.TRAINER),
        "--models-dir", str(models), "--min-db-rows", "100",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "source: database postgresql://" in done.stdout
    assert f"not worse than {old}" in done.stdout and "promoted" in done.stdout
    new = (models / "current").readlink().name
    assert new != old
    assert await served_version(stub, new) == new
    row = await db.fetchrow(
        "SELECT train_rows, promoted_at FROM model_versions WHERE model_version = $1", new
    )
    assert row["promoted_at"] is not None and row["train_rows"] > 0


async def test_monitor_retrains_when_a_threshold_is_crossed(
    stack: Stack,
    models: Path,
    drift_outcomes: int,
    stub: api_grpc.PredictionServiceAsyncStub,
    tmp_path: Path,
) -> None:
    before = (models / "current").readlink().name
    done = await monitor(
        stack, models, tmp_path / "retrain.html", "--last", str(ROWS),
        "--retrain-on-alert", "--min-db-rows", "100",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "threshold crossed and --retrain-on-alert: retraining" in done.stdout
    found = re.search(r"retrained: version (\S+) (promoted|not promoted)", done.stdout)
    assert found, done.stdout
    version = found[1]
    assert version != before and (models / version / "reference_inputs.csv").is_file()
    # The same recorded rows as the served version (or a better fit than the session's model).
    assert found[2] == "promoted"
    assert await served_version(stub, version) == version
