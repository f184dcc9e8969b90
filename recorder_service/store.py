"""Writing batches of staging rows into PostgreSQL, idempotently, in one transaction per shard.

A batch is split by student into shards (recorder_service/sharding.py) written at once, each
over its own connection: one student's rows are always in one shard, so its facts are merged
in event order inside one transaction, and the writer commits the batch's offsets only once
every shard has committed.

A shard is COPYed into a temporary staging table and spread from there by one
`INSERT ... SELECT ... ON CONFLICT` per table, sent as one round trip (the statements are
studentperf.persistence.recording's). Each is keyed so that writing the same events again
changes nothing: predictions by prediction id, profiles and academic records by their
content-derived ids (DO NOTHING), each student's current facts merged fact by fact, a fact
replaced only by one given later (studentperf.persistence.student_facts), and outcomes by
(student_id, term), a score replaced only by one recorded later (studentperf.persistence.
outcomes): ordered by the event's time, then its offset, as the facts are (an outcome event
gives no fact, so its student gets a bare row when unknown, as migration 0002 describes). An
imported CSV row is both: its profile facts merge and its outcome is upserted by those same
rules, and its event id is noted, so the same row imported again is skipped. A new outcome's
recorded_at is its event's time, when RecordOutcomes accepted it, not when the recorder got to
it: the monitor pairs a prediction that names no term with the first outcome recorded after
it (studentperf/persistence/monitor.py), by the service's clock on both sides.

COPY cannot do ON CONFLICT, and one bad row aborts a statement (MagicStack/asyncpg#749), so
a shard the database refuses (or the driver cannot encode) is split in halves until the
refused events stand alone; every other event is still written. A refusal is described by
the rule it broke (SQLSTATE, constraint, table, column), never by PostgreSQL's message or
detail: they quote the row ("Failing row contains (...)"), a student's data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from recorder_service.erasure import (
    Applied,
    Erasure,
    Named,
    StudentHasher,
    apply_erasures,
    erased_as_of,
    erased_records,
    skipped_by_erasure,
    students_of,
    unerased,
)
from recorder_service.rows import STAGING_COLUMNS, StagingRow
from recorder_service.settings import DEV_ERASURE_KEY
from recorder_service.sharding import ShardTurns, Turn, TurnGivenUp, split
from recorder_service.triage import Reason
from studentperf.database_errors import database_unavailable
from studentperf.persistence.imports import NOTE_SKIPPED
from studentperf.persistence.recording import CREATE_STAGING, SPREAD, STAGING_TABLE
from studentperf.persistence.retention import (
    REMOVE_PREDICTIONS,
    REMOVE_PROFILES,
    REMOVE_RECORDS,
    REMOVE_STUDENTS,
    SET_RETENTION_ROLE,
)

log = logging.getLogger(__name__)

_IMPORT_EVENT_ID = STAGING_COLUMNS.index("import_event_id")
_LOG_OFFSET = STAGING_COLUMNS.index("log_offset")
MAX_REMEMBERED_ERASURES = 1000


class DatabaseUnusable(RuntimeError):
    """The database refuses even an empty batch (a missing table, a revoked privilege): the
    fault is the database's, not any record's, so the batch waits for it like an outage."""


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # the row's place in the written sequence
    error: str  # the rule it broke (see `describe`), never its values
    attempts: int  # transactions that included it
    reason: Reason = Reason.CONSTRAINT_VIOLATION


@dataclass(slots=True)
class WriteResult:
    stored: int = 0  # predictions newly written
    already_stored: int = 0  # predictions that were there before: a re-delivery
    refused: list[Refusal] = field(default_factory=list)  # rows the database refused, and why
    transactions: int = 0
    # Events skipped as of an erased student (recorder_service/erasure.py), and the erasures
    # this write applied.
    erased: int = 0
    erasures: list[Applied] = field(default_factory=list)
    # The records refused before the database to skip as of an erased student rather than
    # dead-letter: the `Named.index`es of those given.
    erased_refused: set[int] = field(default_factory=set)

    def add(self, other: WriteResult) -> None:
        self.stored += other.stored
        self.already_stored += other.already_stored
        self.refused += other.refused
        self.transactions += other.transactions
        self.erased += other.erased
        self.erasures += other.erasures
        self.erased_refused |= other.erased_refused


def is_transient(error: BaseException) -> bool:
    """Whether waiting and trying again may succeed: the database is away, or the transaction
    lost a serialization failure or deadlock (SQLSTATE class 40); not the data bad."""
    if isinstance(error, asyncpg.PostgresError) and str(error.sqlstate).startswith("40"):
        return True
    return database_unavailable(error)


def refusal_reason(error: BaseException) -> Reason:
    """Why a row that fails on its own is refused: the reason of its dead letter."""
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = str(error.sqlstate)
        if sqlstate.startswith("23"):  # integrity: CHECK, NOT NULL, foreign key
            return Reason.CONSTRAINT_VIOLATION
        if sqlstate[:2] in {"22", "54"}:  # data exception; program limit (a row too large)
            return Reason.INVALID_DATA
        return Reason.UNEXPECTED_ERROR
    # What asyncpg's encoders raise for a value its column cannot hold, before sending it: an
    # int out of the column's range (OverflowError), a bad uuid or text (ValueError).
    if isinstance(error, (ValueError, TypeError, OverflowError)):
        return Reason.INVALID_DATA
    return Reason.UNEXPECTED_ERROR


def describe(error: BaseException) -> str:
    """The error as logs and dead-letter headers may show it: its class and the rule it names
    (SQLSTATE, constraint, table, column), never the values of the row it is about."""
    parts = [type(error).__name__]
    if isinstance(error, asyncpg.PostgresError):
        parts.append(f"sqlstate {error.sqlstate}")
        for label, attribute in (
            ("constraint", "constraint_name"),
            ("table", "table_name"),
            ("column", "column_name"),
        ):
            name = getattr(error, attribute, None)
            if name:
                parts.append(f"{label} {name}")
    elif is_transient(error):
        return f"{type(error).__name__}: {error}"  # about the connection, not the data
    return ", ".join(parts)


# SPREAD inserts every row a prediction refers to before the prediction, so a foreign key it
# breaks was kept by a row deleted in between: retention removing a profile or academic record
# no prediction used any more (an insert that finds one takes no lock on it). Written again,
# the statement inserts it anew.
_TRIES_WHILE_PARENTS_GO = 3


async def _write_once(
    conn: asyncpg.Connection, rows: Sequence[StagingRow], turn: Turn | None = None
) -> int:
    tries = 1
    while True:
        try:
            return await _spread(conn, rows, turn)
        except asyncpg.ForeignKeyViolationError as error:
            if tries == _TRIES_WHILE_PARENTS_GO:
                raise
            tries += 1
            log.info("%s: a row referred to was removed meanwhile; writing again", describe(error))


async def _spread(conn: asyncpg.Connection, rows: Sequence[StagingRow], turn: Turn | None) -> int:
    if turn is not None:
        # Checked before every transaction, not only the shard's first: a batch split row by
        # row (or written again after a foreign key broke) can run on for seconds after its
        # partitions were revoked, and each transaction then would commit beside the next
        # owner's erasures, with this batch's lookup of them.
        turn.check()
    async with conn.transaction():
        await conn.execute(CREATE_STAGING)
        await conn.copy_records_to_table(STAGING_TABLE, records=rows, columns=STAGING_COLUMNS)
        status: str = await conn.execute(SPREAD)
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"


async def _write_splitting(
    conn: asyncpg.Connection,
    rows: Sequence[StagingRow],
    first: int,
    attempts: int,
    turn: Turn | None,
) -> WriteResult:
    try:
        stored = await _write_once(conn, rows, turn)
    except Exception as error:
        if isinstance(error, TurnGivenUp) or is_transient(error):
            raise
        if refusal_reason(error) is Reason.UNEXPECTED_ERROR:
            await _check_usable(conn)
        if len(rows) == 1:
            refusal = Refusal(first, describe(error), attempts, refusal_reason(error))
            return WriteResult(refused=[refusal], transactions=1)
        log.info("batch of %d refused (%s); splitting it", len(rows), describe(error))
        result = WriteResult(transactions=1)
        half = len(rows) // 2
        result.add(await _write_splitting(conn, rows[:half], first, attempts + 1, turn))
        result.add(await _write_splitting(conn, rows[half:], first + half, attempts + 1, turn))
        return result
    predictions = sum(1 for row in rows if row[1] is not None)  # row[1]: prediction_id
    return WriteResult(stored, predictions - stored, transactions=1)


async def _check_usable(conn: asyncpg.Connection) -> None:
    """Raises DatabaseUnusable when an empty batch fails too: then the error that led here
    was the database's, and no row may be dead-lettered for it."""
    try:
        # No turn to check: an empty batch writes nothing, and TurnGivenUp here would be taken
        # for the database's fault.
        await _write_once(conn, ())
    except Exception as error:
        if is_transient(error):
            raise
        raise DatabaseUnusable(describe(error)) from error


def _first_copies_decide(
    rows: Sequence[StagingRow], keep: Sequence[int]
) -> tuple[list[int], list[object]]:
    """`keep` (the rows not erased) without the copies of an import event whose first copy in
    the log was erased, and the ids of those events, to be noted as handled. Only an import
    event's first copy in the log counts (imports.skip_imported), in one batch as in batches of
    their own: a first copy erased takes its later copies with it, and a first copy kept is
    stored whatever became of a later copy (run twice, one file's copies may reach the log out
    of time order, on either side of an erasure)."""
    if len(keep) == len(rows):  # nothing erased: every first copy is kept (most batches)
        return list(keep), []
    first: dict[object, int] = {}
    for index, row in enumerate(rows):
        event_id = row[_IMPORT_EVENT_ID]
        if event_id is None:
            continue
        seen = first.get(event_id)
        if seen is None or row[_LOG_OFFSET] < rows[seen][_LOG_OFFSET]:  # type: ignore[operator]
            first[event_id] = index
    kept = set(keep)
    erased_first = {event_id for event_id, index in first.items() if index not in kept}
    return [i for i in keep if rows[i][_IMPORT_EVENT_ID] not in erased_first], list(erased_first)


class PostgresStore:
    """Writes staging rows through a connection pool; `erasure_key` names erased students in
    the `erasures` table (recorder_service/erasure.py). A batch is split by student into at
    most `shards` shards (recorder_service/sharding.py), written at once over as many of the
    pool's connections, so the pool needs at least `shards` of them."""

    def __init__(
        self, pool: asyncpg.Pool, *, erasure_key: bytes = DEV_ERASURE_KEY, shards: int = 1
    ) -> None:
        self._pool = pool
        self._erasure_key = erasure_key
        self._hasher = StudentHasher(erasure_key)
        self._shards = max(1, shards)
        # The writer may have two batches under way (see `write`).
        self._order = ShardTurns(self._shards)
        self._one_at_a_time = [asyncio.Lock() for _ in range(self._shards)]
        # Erasures a try of a batch applied for the first time, kept until a try of the whole
        # batch succeeds: the batch's retry finds them applied already (new=False), and would
        # otherwise neither count them nor log them.
        self._first_applied: dict[str, Applied] = {}

    def turn(self, given_up: Callable[[], bool] = lambda: False) -> Turn:
        """A batch's place in the order shards are written; take it as the batch is handed
        over, pass it to every `write` of the batch, and `end()` it when the batch is done.
        Once `given_up()`, a write of the batch raises TurnGivenUp rather than start a shard
        or another transaction of its rows."""
        return self._order.take(given_up)

    async def write(
        self,
        rows: Sequence[StagingRow],
        erasures: Sequence[Erasure] = (),
        turn: Turn | None = None,
        named: Sequence[Named] = (),
    ) -> WriteResult:
        """Applies the batch's erasures, then writes the rows, but those of erased students
        that occurred at or before their erasure; rows refused on their own (as data, or by
        any error only they cause) are reported by index, and every other row is written.
        Each shard does that for its students in its own transactions (its erasures in one,
        its rows in one), all shards at once. The students `named` by the batch's records
        refused before the database are looked up with the rows' (in the same query), and
        those records erased as of their time are reported (`erased_refused`).

        Two batches may be under way at once (the writer starts the next while this one
        ends). With their `turn`s, each shard number is written in the batches' order: a
        batch writes a shard once the batch before it has written it (committed it once) or
        ended, a failed shard keeping its place until it is written, so a later batch never
        overtakes a retry (an erasure applied after a later event of its student would delete
        that event). A shard is also written by one transaction at a time, so a student's rows
        are never in two open transactions, where a prediction's lookup of erasures could miss
        an erasure the other has not committed yet. Writing a batch's shard again after it
        was once written changes nothing: its erasures are applied once, by their event ids.

        Transient errors (see `is_transient`) and DatabaseUnusable propagate once every shard
        has finished: what any shard committed before them is committed for good, and writing
        the whole batch again adds nothing (an erasure is applied once, by its event id), so
        the caller retries it whole.
        """
        parts = split(rows, erasures, self._shards, named) if rows or erasures or named else []
        if turn is not None:
            written = {part.number for part in parts}
            for number in range(self._shards):
                if number not in written:
                    turn.done_with(number)  # none of its students here
        if not parts:
            return WriteResult()
        if len(parts) == 1:
            return self._applied_once(
                await self._write_shard(parts[0].number, rows, erasures, turn, parts[0].named)
            )
        # Every shard runs to its end even when another fails, so none is left mid-transaction
        # while the batch is retried.
        outcomes = await asyncio.gather(
            *(
                self._write_shard(part.number, part.rows, part.erasures, turn, part.named)
                for part in parts
            ),
            return_exceptions=True,
        )
        result = WriteResult()
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            # Refusals name rows by their place in the batch, not in the shard.
            outcome.refused = [replace(r, index=part.indexes[r.index]) for r in outcome.refused]
            result.add(outcome)
        result.refused.sort(key=lambda r: r.index)
        return self._applied_once(result)

    def _applied_once(self, result: WriteResult) -> WriteResult:
        """The batch is written: each of its erasures is reported new by the try that first
        applied it."""
        for applied in result.erasures:
            self._first_applied.pop(applied.event_id, None)
        return result

    def _remember_first(self, applied: list[Applied]) -> list[Applied]:
        applied = [self._first_applied.pop(a.event_id, a) for a in applied]
        for first in (a for a in applied if a.new):
            self._first_applied[first.event_id] = first
        # Only a batch given up after a failed try leaves some here: keep the newest.
        while len(self._first_applied) > MAX_REMEMBERED_ERASURES:
            del self._first_applied[next(iter(self._first_applied))]
        return applied

    async def _write_shard(
        self,
        number: int,
        rows: Sequence[StagingRow],
        erasures: Sequence[Erasure],
        turn: Turn | None,
        named: Sequence[Named] = (),
    ) -> WriteResult:
        if turn is not None:
            await turn.wait(number)
        async with self._one_at_a_time[number], self._pool.acquire() as conn:
            if turn is not None:
                turn.check()  # the lock and the connection may have taken a while
            try:
                # Looked up before the erasures are applied, so each counts the events it skips
                # here before its audit row is written (once: EraseStudent polls for the row
                # and must never read part of it). What skips them is the same either way: the
                # write's own erasures are taken with those looked up.
                erased = await erased_as_of(conn, students_of(rows, named), self._hasher)
                skipped = skipped_by_erasure(rows, named, erased, erasures)
                applied = self._remember_first(
                    await apply_erasures(conn, erasures, self._erasure_key, skipped)
                    if erasures
                    else []
                )
            except Exception as error:
                # No record is at fault: an erasure event that reached here breaks no rule the
                # table checks (envelope.decode_erasure checked them), and a lookup reads only.
                if is_transient(error):
                    raise
                raise DatabaseUnusable(describe(error)) from error
            keep, skipped_imports = _first_copies_decide(rows, unerased(rows, erased, erasures))
            result = WriteResult(
                erased=len(rows) - len(keep),
                erasures=applied,
                erased_refused=erased_records(named, erased, erasures),
            )
            if skipped_imports:
                if turn is not None:
                    turn.check()
                await conn.execute(NOTE_SKIPPED, skipped_imports)
            if len(keep) < len(rows):
                kept = [rows[i] for i in keep]
                written = await _write_splitting(conn, kept, 0, 1, turn) if kept else WriteResult()
                # Refusals name rows by their place in what was given.
                written.refused = [replace(r, index=keep[r.index]) for r in written.refused]
            else:
                written = await _write_splitting(conn, rows, 0, 1, turn) if rows else WriteResult()
            result.add(written)
        if turn is not None:
            turn.done_with(number)
        return result


# Retention (recorder_service/retention.py): studentperf.persistence.retention's statements.


@dataclass(slots=True)
class Removed:
    """Rows one retention run deleted, by table."""

    predictions: int = 0
    student_profiles: int = 0
    academic_records: int = 0
    students: int = 0

    def add(self, other: Removed) -> None:
        self.predictions += other.predictions
        self.student_profiles += other.student_profiles
        self.academic_records += other.academic_records
        self.students += other.students


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "DELETE <rows>"


async def remove_batch(conn: asyncpg.Connection, cutoff: datetime, limit: int) -> Removed:
    """Deletes at most `limit` predictions made before `cutoff`, the oldest first, and what
    only they referred to, in one transaction."""
    # READ COMMITTED whatever the server's default, as the erasure (recorder_service/erasure.py).
    async with conn.transaction(isolation="read_committed"):
        await conn.execute(SET_RETENTION_ROLE)
        gone = await conn.fetch(REMOVE_PREDICTIONS, cutoff, limit)
        if not gone:
            return Removed()
        profiles = list({r["student_profile_id"] for r in gone})
        records = list({r["academic_record_id"] for r in gone})
        students = list({r["student_id"] for r in gone})
        return Removed(
            predictions=len(gone),
            student_profiles=_count(await conn.execute(REMOVE_PROFILES, profiles)),
            academic_records=_count(await conn.execute(REMOVE_RECORDS, records)),
            students=_count(await conn.execute(REMOVE_STUDENTS, students, cutoff)),
        )
