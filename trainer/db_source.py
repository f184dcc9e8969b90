"""Training rows from PostgreSQL: every outcome, joined to its student's current facts.

One row per (student, term) outcome, described by the student's facts as `students` holds them:
each the latest given, by the rule in studentperf.persistence.student_facts (event time, then
log order), profile and academic record alike. Academic records carry no term yet, so a student
with outcomes in several terms is described by the same facts in each. Rows come sorted by
student and term (studentperf.persistence.training), so the same table gives the same frame,
and the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg
import numpy as np
import pandas as pd

from studentperf.config import mask_dsn
from studentperf.database_errors import database_unavailable
from studentperf.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, TARGET_SCORE
from studentperf.persistence.training import LABELLED_ROWS

CONNECT_TIMEOUT_S: Final = 5.0


class DatabaseUnavailable(Exception):
    """The database could not be read; the message says why, without the password."""


@dataclass(frozen=True)
class DatabaseRows:
    frame: pd.DataFrame  # student_id, term, FEATURE_COLUMNS, TARGET_SCORE
    where: str  # the masked DSN


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection, or DatabaseUnavailable naming the (masked) database and the reason."""
    try:
        return await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    except ValueError as err:  # a DSN asyncpg cannot parse
        raise DatabaseUnavailable(f"database URL not usable: {err}") from None
    except Exception as err:
        if not database_unavailable(err, connecting=True):
            raise
        raise DatabaseUnavailable(
            f"database {mask_dsn(database_url)} not reachable ({type(err).__name__}: {err})"
        ) from err


async def read_labelled_rows(database_url: str) -> DatabaseRows:
    conn = await connect(database_url)
    try:
        records = await conn.fetch(LABELLED_ROWS)
    except asyncpg.UndefinedTableError as err:
        raise DatabaseUnavailable(
            f"database {mask_dsn(database_url)} is not migrated ({err}): run `make migrate`"
        ) from err
    except asyncpg.PostgresError as err:
        raise DatabaseUnavailable(f"reading outcomes failed: {err}") from err
    finally:
        await conn.close()
    return DatabaseRows(_frame(records), mask_dsn(database_url))


def _frame(records: list[asyncpg.Record]) -> pd.DataFrame:
    columns = ["student_id", "term", *FEATURE_COLUMNS, TARGET_SCORE]
    data = {c: [r[c] for r in records] for c in columns}
    frame = pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in columns})
    for column in (*FEATURE_COLUMNS, TARGET_SCORE):
        if column in CATEGORICAL_FEATURES:
            continue
        # booleans and smallints alike; None becomes NaN
        frame[column] = np.array(
            [np.nan if v is None else float(v) for v in data[column]], dtype=np.float64
        )
    return frame
