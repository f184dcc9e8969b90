"""The Kaggle exam CSV import into PostgreSQL: good rows load, each bad row is reported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg

from studentperf.config import DatabaseRole
from tests.integration.conftest import REPO, Stack
from tests.kaggle_csv import kaggle_rows, write
from trainer.import_csv import import_file

BAD_ROWS = [
    ["female", "group B", "doctor", "standard", "none", "70", "70", "70"],
    ["male", "group A", "high school", "standard", "none", "-3", "20", "20"],
]


async def test_csv_import_round_trip_keeps_good_rows_and_reports_bad_ones(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool
) -> None:
    csv = write(tmp_path / "exams.csv", [*kaggle_rows(30, seed=3), *BAD_ROWS])
    report = await import_file(
        csv, database_url=stack.database_url_as(DatabaseRole.IMPORTER), term="2024-spring"
    )
    assert len(report.file.rows) == 30 and report.students_added == 30
    assert [e.line for e in report.file.errors] == [32, 33]
    prefix = f"csv-{report.file.sha256[:12]}-%"
    stored = await db.fetch(
        "SELECT o.student_id, o.final_score, o.source, s.gender, s.lunch_program, s.age"
        " FROM outcomes o JOIN students s USING (student_id)"
        " WHERE o.student_id LIKE $1 ORDER BY o.student_id",
        prefix,
    )
    assert len(stored) == 30
    first = report.file.rows[0]
    assert tuple(stored[0]) == (
        first.student_id,
        first.final_score,
        f"csv:{report.file.sha256}",
        first.gender,
        first.lunch_program,
        None,
    )
    # The same file again: the same students, every outcome replaced by itself.
    again = await import_file(
        csv, database_url=stack.database_url_as(DatabaseRole.IMPORTER), term="2024-spring"
    )
    assert (again.students_added, again.replaced) == (0, 30)
    assert await db.fetchval("SELECT count(*) FROM outcomes WHERE student_id LIKE $1", prefix) == 30


async def test_import_command_prints_each_bad_row_and_the_counts(
    tmp_path: Path, stack: Stack
) -> None:
    csv = write(tmp_path / "exams.csv", [*kaggle_rows(5, seed=4), *BAD_ROWS])
    command = [sys.executable, "-m", "trainer.import_csv", str(csv), "--term", "2024-fall"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--database-url", stack.database_url_as(DatabaseRole.IMPORTER)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert f"{csv}:7: parental level of education: unknown value 'doctor'" in done.stderr
    assert f"{csv}:8: math score: '-3' is not a number from 0 to 100" in done.stderr
    assert "7 rows read, 5 loaded (5 new students, 0 outcomes replaced), 2 bad rows" in done.stdout
