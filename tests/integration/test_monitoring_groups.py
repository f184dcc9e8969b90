"""`make monitor`'s live quality per group of students, against the real services.

Students drawn like the served model's training data go through the real inference service and
the recorder into PostgreSQL, and their outcomes through RecordOutcomes. First a calm batch whose
outcomes are the generator's scores: no group alert. Then a batch whose outcomes carry planted
unfairness for the students on free or reduced lunch (trainer.synthetic, extra noise no input
explains): the monitor must alert naming the lunch program, its groups and the figure, against
the gaps the served version recorded at training (its metadata.json). Among the figures is the
share of each group's outcomes inside the score interval the service answered with, as the
recorder stored it (predictions.score_interval_low/high): one width for every student covers
the group with the planted noise far less often than the 80 % stated.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pandas as pd
import pytest

from studentperf.config import DatabaseRole
from studentperf.model_artifact import METADATA_FILE
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack
from tests.integration.helpers import count_rows, eventually
from tests.integration.test_monitoring import as_student, monitor
from trainer import synthetic
from trainer.registry import register_version

pytestmark = pytest.mark.usefixtures("recorder")

ROWS = 600
TERM = "2026-fall"
UNFAIR = "lunch_program=free_or_reduced"


async def predict_and_record(
    stub: api_grpc.PredictionServiceAsyncStub,
    db: asyncpg.Pool,
    frame: pd.DataFrame,
    outcomes: pd.Series,
    prefix: str,
) -> datetime:
    """Predicts every row for TERM, records `outcomes` for the same students and term, and
    waits until the recorder stored both; returns a time before the first prediction."""
    started = datetime.now(UTC)
    students = [as_student(row, f"{prefix}-{i}") for i, (_, row) in enumerate(frame.iterrows())]
    answer = await stub.BatchPredict(
        api.BatchPredictRequest(students=students, term=TERM), timeout=60
    )
    assert all(r.HasField("prediction") for r in answer.results), answer.results[:3]
    stored = count_rows(
        db, "SELECT count(*) FROM predictions WHERE student_id LIKE $1", f"{prefix}-%"
    )
    assert await eventually(stored, len(frame), timeout=60) == len(frame)
    recorded = await stub.RecordOutcomes(
        api.RecordOutcomesRequest(
            outcomes=[
                api.Outcome(student_id=f"{prefix}-{i}", term=TERM, final_score=float(score))
                for i, score in enumerate(outcomes)
            ]
        ),
        timeout=60,
    )
    assert all(r.HasField("stored") for r in recorded.results)
    written = count_rows(
        db, "SELECT count(*) FROM outcomes WHERE student_id LIKE $1", f"{prefix}-%"
    )
    assert await eventually(written, len(frame), timeout=60) == len(frame)
    return started


@pytest.fixture(scope="module")
async def calm_since(stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool) -> datetime:
    frame = synthetic.generate(ROWS, 301)
    return await predict_and_record(stub, db, frame, frame["final_score"], "calm")


@pytest.fixture(scope="module")
async def unfair_batch(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool, calm_since: datetime
) -> None:
    """After the calm batch, so `--last ROWS` is exactly these predictions. The inputs are the
    calm generator's; only the outcomes of the free-or-reduced-lunch students differ."""
    frame = synthetic.generate(ROWS, 302)
    unfair = synthetic.generate(ROWS, 302, unfair_group=UNFAIR)
    await predict_and_record(stub, db, frame, unfair["final_score"], "unfair")


def group_alerts(stdout: str) -> list[str]:
    return re.findall(r"ALERT: a group of students is served worse than at training: (.*)", stdout)


async def test_calm_outcomes_show_every_group_and_raise_no_group_alert(
    stack: Stack, calm_since: datetime, tmp_path: Path
) -> None:
    report = tmp_path / "calm.html"
    done = await monitor(stack, stack.model_path, report, "--since", calm_since.isoformat())
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"live quality per group of students over {ROWS} outcomes" in done.stdout
    assert group_alerts(done.stdout) == [] and "ALERT" not in done.stdout
    # The "other" gender is 2 % of the students: about 12 here, shown and marked.
    assert re.search(r"other +\d+ .*\(too small to judge: < 50 rows\)", done.stdout)
    assert "gaps at training (each live gap is compared with its own):" in done.stdout
    # Coverage per group, from the intervals as served and stored, beside the stated level.
    assert "covered: share of final scores inside their score interval (stated coverage 80%" in (
        done.stdout
    )
    standard = re.search(r"standard +\d+ .* (0\.\d+|1\.000)$", done.stdout, re.MULTILINE)
    assert standard is not None and 0.6 < float(standard[1]) <= 1.0, done.stdout
    page = report.read_text()
    assert "<h3>Live quality per group of students</h3>" in page
    assert "Stated interval coverage: 80% for every student" in page
    assert "<h4>lunch_program</h4>" in page and "ALERT: wider than at training" not in page


async def test_planted_unfairness_alerts_naming_the_group_and_the_figure(
    stack: Stack, unfair_batch: None, tmp_path: Path
) -> None:
    report = tmp_path / "unfair.html"
    done = await monitor(stack, stack.model_path, report, "--last", str(ROWS))
    print(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    alerts = group_alerts(done.stdout)
    assert alerts, done.stdout
    # Only the lunch program is unfair; gender and parental education stay as trained.
    assert all(a.startswith("lunch_program ") for a in alerts), alerts
    rmse = next(a for a in alerts if a.startswith("lunch_program score_rmse gap"))
    assert "(free_or_reduced vs standard" in rmse and "at training" in rmse
    gap = float(re.search(r"score_rmse gap ([0-9.]+)", rmse)[1])  # type: ignore[index]
    # Planted noise of sd 15 on top of the model's 7: an RMSE near 16.6 against about 7.
    assert 5 < gap < 15
    # The same students' scores fall outside the one-width interval far more often: covered
    # about 40 % against about 80 %, read from the intervals the recorder stored.
    covered = next(a for a in alerts if a.startswith("lunch_program interval_coverage gap"))
    assert "(standard vs free_or_reduced" in covered and "at training" in covered
    line = re.search(r"gap covered +([0-9.]+) \(standard - free_or_reduced\).*", done.stdout)
    assert line is not None and float(line[1]) > 0.2, done.stdout
    assert re.search(r"\(stated 80%, free_or_reduced \d+\.\d%\)", line[0]), line[0]
    page = report.read_text()
    assert "ALERT: wider than at training" in page
    assert "a group of students is served worse than at training: lunch_program score_rmse" in page


async def test_without_figures_in_metadata_those_of_model_versions_are_used(
    stack: Stack, unfair_batch: None, tmp_path: Path
) -> None:
    """A version folder whose metadata.json lacks `group_quality`: not compared (a note), until
    the version's model_versions row has them."""
    models = tmp_path / "models"
    shutil.copytree(stack.model_path, models, symlinks=True)
    version = (models / "current").readlink().name
    path = models / version / METADATA_FILE
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in metadata.items() if k != "group_quality"}))
    bare = await monitor(stack, models, tmp_path / "bare.html", "--last", str(ROWS))
    assert bare.returncode == 1, bare.stdout + bare.stderr  # the overall live RMSE still alerts
    assert f"note: no per-group figures from training for version {version}" in bare.stdout
    assert group_alerts(bare.stdout) == []
    assert "gap RMSE" in bare.stdout  # the live gaps are still shown

    trainer_url = stack.database_url_as(DatabaseRole.TRAINER)
    await register_version(trainer_url, metadata, decision="test", promoted=True)
    stored = await monitor(stack, models, tmp_path / "stored.html", "--last", str(ROWS))
    assert "no per-group figures from training" not in stored.stdout
    alerts = group_alerts(stored.stdout)
    assert any(a.startswith("lunch_program score_rmse gap") for a in alerts), stored.stdout
