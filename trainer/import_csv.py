"""`python -m trainer.import_csv PATH`: load a Kaggle-format exam CSV into the database.

Each good row becomes a student (id derived from the file's hash and the row's line, see
trainer.kaggle) with the profile the file gives, and an outcome for `--term` (final score = math
score). Each bad row is reported with its line number and reason, and the good rows still load,
in one transaction. Importing the same file again changes nothing but the outcomes' updated_at.
Exit status: 0 when every row loaded, 1 when the file or the database could not be used, 3 when
some rows were bad (the others loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import asyncpg

from studentperf.config import ConfigError, DatabaseRole, SharedSettings, mask_dsn
from studentperf.outcomes import (
    TERM_RULE,
    OutcomeRow,
    ProfileRow,
    StoredOutcome,
    store_profiles_and_outcomes,
    term_is_valid,
)
from trainer import kaggle
from trainer.db_source import DatabaseUnavailable, connect

EXIT_BAD_ROWS = 3


@dataclass(frozen=True)
class ImportReport:
    file: kaggle.KaggleFile
    stored: tuple[StoredOutcome, ...]

    @property
    def students_added(self) -> int:
        return sum(s.student_added for s in self.stored)

    @property
    def replaced(self) -> int:
        return sum(s.replaced for s in self.stored)


async def import_file(path: Path, *, database_url: str, term: str) -> ImportReport:
    """Reads `path` and stores its good rows; raises KaggleFormatError or DatabaseUnavailable."""
    found = kaggle.read(path)
    profiles = [
        ProfileRow(
            student_id=r.student_id,
            age=None,
            gender=r.gender,
            parental_education=r.parental_education,
            lunch_program=r.lunch_program,
            test_preparation=r.test_preparation,
        )
        for r in found.rows
    ]
    outcomes = [OutcomeRow(r.student_id, term, r.final_score) for r in found.rows]
    conn = await connect(database_url)
    try:
        stored = await store_profiles_and_outcomes(
            conn, profiles, outcomes, source=f"csv:{found.sha256}"
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"storing the rows failed, nothing was stored: {err}") from err
    finally:
        await conn.close()
    return ImportReport(found, tuple(stored))


def print_report(report: ImportReport, out: TextIO, errors: TextIO) -> None:
    found = report.file
    for error in found.errors:
        print(f"{found.path}:{error.line}: {error.reason}", file=errors)
    print(
        f"{found.path}: {len(found.rows) + len(found.errors)} rows read, "
        f"{len(found.rows)} loaded ({report.students_added} new students, "
        f"{report.replaced} outcomes replaced), {len(found.errors)} bad rows skipped",
        file=out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    default_term = f"{datetime.now(UTC).year}-import"
    parser = argparse.ArgumentParser(prog="python -m trainer.import_csv", description=__doc__)
    parser.add_argument("path", type=Path, help="a CSV in the Kaggle exam format")
    parser.add_argument(
        "--term",
        default=default_term,
        help=f"the term the scores are for (default {default_term}); {TERM_RULE}",
    )
    try:
        database_url = SharedSettings.from_env(os.environ, DatabaseRole.IMPORTER).database_url
    except ConfigError as err:
        parser.error(str(err))
    parser.add_argument("--database-url", default=database_url, help="env STUDENTPERF_DATABASE_URL")
    args = parser.parse_args(argv)
    if not term_is_valid(args.term):
        parser.error(f"--term {args.term!r}: {TERM_RULE}")
    try:
        report = asyncio.run(import_file(args.path, database_url=args.database_url, term=args.term))
    except (kaggle.KaggleFormatError, DatabaseUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_report(report, sys.stdout, sys.stderr)
    print(f"stored in {mask_dsn(args.database_url)}, term {args.term}")
    return EXIT_BAD_ROWS if report.file.errors else 0


if __name__ == "__main__":
    sys.exit(main())
