"""Erasure's pure parts (issue 15): the keyed hash, which events an erasure refuses, the
erasure event on the wire and in triage, the key's settings, the spool's drop, and the core's
EraseStudent with fakes. No network; the round against Kafka and PostgreSQL is
tests/integration/test_erasure.py."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inference_service import spool_segments
from inference_service.auth import client_name, parse_token_table
from inference_service.core import HistoryUnavailable, PredictionCore, PublishUnavailable
from inference_service.core_ports import ErasureAnswer
from inference_service.delivery import (
    DurablePublisher,
    PendingSends,
    open_durable_publisher,
)
from inference_service.encoding import InvalidInput
from inference_service.servicer import _erasure_response
from inference_service.spool import Destination, Spool, read_segment
from recorder_service.erasure import (
    Erasure,
    Named,
    StudentHasher,
    erased_records,
    skipped_by_erasure,
    student_hash,
    unerased,
)
from recorder_service.rows import STAGING_COLUMNS
from recorder_service.settings import DEV_ERASURE_KEY, erasure_key
from recorder_service.triage import Reason, triage, triage_in_steps
from studentperf import envelope
from studentperf.config import ConfigError
from studentperf.envelope import KafkaRecord
from studentperf.erasure import (
    ANONYMOUS,
    EVENTS_SKIPPED,
    FACTS_CLEARED,
    REASON_MAX_LENGTH,
    REQUESTED_BY_MAX_LENGTH,
    reason_is_valid,
    requested_by_is_valid,
)
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Outcome
from tests.unit.broker_fakes import HandingBroker
from tests.unit.recorder_fakes import FakeRecord, event_bytes
from tests.unit.test_core import AgeModel, RecordingPublisher

T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEY = b"k" * 32


def erasure(student_id: str, at: datetime) -> Erasure:
    return Erasure(str(uuid.uuid4()), student_id, at, "anonymous", "")


def row(student_id: str, at: datetime) -> tuple[object, ...]:
    """A staging row with only what erasure reads: the student and the event's time."""
    values: list[object] = [None] * len(STAGING_COLUMNS)
    values[STAGING_COLUMNS.index("student_id")] = student_id
    values[STAGING_COLUMNS.index("predicted_at")] = at
    return tuple(values)


def test_the_hash_is_keyed_and_holds_no_id() -> None:
    found = student_hash(KEY, "s-1")
    assert len(found) == 32 and b"s-1" not in found
    assert found == student_hash(KEY, "s-1")
    assert found != student_hash(b"j" * 32, "s-1") != student_hash(KEY, "s-2")


@pytest.mark.parametrize("key", [KEY, b"", b"x" * 64, b"y" * 65, b"z" * 200])
def test_the_batch_hasher_is_hmac_sha256(key: bytes) -> None:
    hasher = StudentHasher(key)
    for sid in ("s-1", "", "a" * 64):
        assert hasher(sid) == student_hash(key, sid)


def test_events_at_or_before_the_erasure_are_refused_later_ones_kept() -> None:
    rows = [
        row("gone", T0 - timedelta(days=1)),
        row("gone", T0),  # at the erasure's time: refused
        row("gone", T0 + timedelta(microseconds=1)),  # a new enrolment
        row("kept", T0 - timedelta(days=1)),
    ]
    assert unerased(rows, {"gone": T0}) == [2, 3]
    assert unerased(rows, {}) == [0, 1, 2, 3]


def test_a_batch_s_own_erasure_counts_and_the_latest_erasure_wins() -> None:
    rows = [row("s", T0), row("s", T0 + timedelta(hours=1)), row("s", T0 + timedelta(hours=3))]
    assert unerased(rows, {}, [erasure("s", T0)]) == [1, 2]
    later = [erasure("s", T0 + timedelta(hours=2))]
    assert unerased(rows, {"s": T0}, later) == [2]
    assert unerased(rows, {"s": T0 + timedelta(hours=2)}, [erasure("s", T0)]) == [2]


def test_a_refused_record_is_skipped_when_a_student_it_names_was_erased_at_or_after_it() -> None:
    named = [
        Named(0, "s", T0),
        Named(1, "s", T0 + timedelta(hours=1)),
        Named(2, "other", T0),
        # A record naming two students (its key and its value's): either erased skips it.
        Named(3, "other", T0),
        Named(3, "s", T0),
    ]
    assert erased_records(named, {}) == set()
    assert erased_records(named, {"s": T0}) == {0, 3}
    assert erased_records(named, {}, [erasure("s", T0 + timedelta(hours=1))]) == {0, 1, 3}
    assert erased_records(named, {"s": T0 + timedelta(hours=2)}, [erasure("s", T0)]) == {0, 1, 3}


def test_an_erasure_counts_the_events_of_its_student_its_write_skips() -> None:
    """The user's case: a prediction and an outcome, then the erasure, in one write. Another
    student's events, and the student's later one (a new enrolment, stored), count for none."""
    gone = erasure("s", T0)
    rows = [
        row("s", T0 - timedelta(minutes=2)),
        row("s", T0 - timedelta(minutes=1)),
        row("s", T0),  # at the erasure's time: skipped
        row("s", T0 + timedelta(microseconds=1)),
        row("other", T0 - timedelta(days=1)),
    ]
    assert skipped_by_erasure(rows, (), {}, [gone]) == {gone.event_id: 3}
    assert len(rows) - len(unerased(rows, {}, [gone])) == 3  # what the metric counts
    assert skipped_by_erasure(rows, (), {}, []) == {}
    assert skipped_by_erasure([row("other", T0)], (), {}, [gone]) == {}


def test_each_skipped_event_counts_once_for_the_erasure_that_would_have_removed_it() -> None:
    """Two erasures of one student in a write: an event counts for the first, in the write's
    order, that covers it (the one that would have deleted it, stored), never for both."""
    early, late = erasure("s", T0), erasure("s", T0 + timedelta(hours=2))
    rows = [row("s", T0 - timedelta(hours=1)), row("s", T0 + timedelta(hours=1))]
    assert skipped_by_erasure(rows, (), {}, [early, late]) == {
        early.event_id: 1,
        late.event_id: 1,
    }
    # The later one first in the log (the earlier one came late, from a spool): it deletes
    # both, had they been stored, so it counts both.
    assert skipped_by_erasure(rows, (), {}, [late, early]) == {late.event_id: 2}
    again = erasure("s", T0)  # two at one time: the first
    assert skipped_by_erasure(rows, (), {}, [early, again]) == {early.event_id: 1}


def test_an_event_an_erasure_of_an_earlier_write_covers_counts_for_none() -> None:
    """Its audit row was written without it: a replay of the student's old events, counted by
    the metric alone. So is the same erasure delivered again with them (it is in `erasures`)."""
    gone = erasure("s", T0 + timedelta(hours=2))
    rows = [row("s", T0 - timedelta(hours=1)), row("s", T0 + timedelta(hours=1))]
    assert skipped_by_erasure(rows, (), {"s": T0}, [gone]) == {gone.event_id: 1}
    assert skipped_by_erasure(rows, (), {"s": gone.erased_as_of}, [gone]) == {}
    assert skipped_by_erasure(rows, (), {"s": T0 + timedelta(days=1)}, [gone]) == {}


def test_a_refused_record_counts_once_for_each_student_it_names() -> None:
    gone, other = erasure("s", T0), erasure("other", T0)
    named = [
        Named(0, "s", T0 - timedelta(hours=1)),
        Named(0, "s", T0 - timedelta(hours=1)),  # by its key and by its value
        Named(1, "s", T0 + timedelta(hours=1)),  # a new enrolment's: dead-lettered
        Named(2, "s", T0),
        Named(2, "other", T0),
    ]
    assert skipped_by_erasure([row("s", T0)], named, {}, [gone, other]) == {
        gone.event_id: 3,
        other.event_id: 1,
    }
    assert erased_records(named, {}, [gone, other]) == {0, 2}  # what the metric counts


MS = 1_700_000_000_000  # a record's Kafka timestamp
AT_MS = datetime.fromtimestamp(MS / 1000, UTC)


def refused(value: bytes | None, key: bytes | None, **kwargs: Any) -> tuple[object, ...]:
    """What triage notes of a refused record: its reason, students and time."""
    record = FakeRecord("t", 0, 0, value, key, **{"timestamp": MS, **kwargs})
    [rejected] = triage([record], now=T0).rejected
    return rejected.reason, rejected.students, rejected.as_of


def outcome_bytes(student_id: str, term: str, at: datetime) -> tuple[bytes, list[Any]]:
    event = OutcomeEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=str(uuid.uuid4()),
        outcome=Outcome(student_id=student_id, term=term, final_score=50.0),
    )
    event.occurred_at.FromDatetime(at)
    record = envelope.encode_outcome(event)
    return record.value, list(record.headers)


def test_a_refused_record_names_its_key_s_student_and_its_event_s_placed_by_its_time() -> None:
    # Not an event: its key, by the rule of student ids, and its Kafka timestamp.
    assert refused(b"\x00not an event", b"s-1") == (Reason.UNDECODABLE, ("s-1",), AT_MS)
    # A key that breaks the rule can be no erased student's; no key, no student.
    assert refused(b"\x00not an event", "s é".encode()) == (Reason.UNDECODABLE, (), None)
    assert refused(b"\x00not an event", None) == (Reason.UNDECODABLE, (), None)
    # Decoded but refused: the student its value names too, and its occurred_at, which a
    # held-up delivery's Kafka timestamp would put later.
    value, headers = outcome_bytes("s-3", "no term", T0 - timedelta(hours=1))
    assert refused(value, b"s-2", headers=headers) == (
        Reason.INVALID_EVENT,
        ("s-2", "s-3"),
        T0 - timedelta(hours=1),
    )
    # From the future, or of a schema version read here as another: the timestamp places it.
    future = PredictionEvent.FromString(event_bytes("s-4"))
    future.occurred_at.FromDatetime(T0 + timedelta(days=1))
    assert refused(future.SerializeToString(), b"s-4") == (Reason.FUTURE_EVENT, ("s-4",), AT_MS)
    other_version = [("schema-version", b"2")]
    assert refused(event_bytes("s-5"), b"s-5", headers=other_version) == (
        Reason.UNKNOWN_SCHEMA_VERSION,
        ("s-5",),
        AT_MS,
    )
    # No time at all (Kafka's -1): tied to no student (dead-lettered as before). A time of 0
    # is a time: its student's erasure skips it.
    assert refused(b"\x00not an event", b"s-1", timestamp=-1) == (Reason.UNDECODABLE, (), None)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert refused(b"\x00bad", b"s-1", timestamp=0) == (Reason.UNDECODABLE, ("s-1",), epoch)


def test_the_students_of_a_batch_s_refused_records_keep_their_places() -> None:
    records = [
        FakeRecord("t", 0, 0, b"\x00bad", b"s-1", MS),
        FakeRecord("t", 0, 1, event_bytes("s-2"), b"s-2", MS),
        FakeRecord("t", 0, 2, b"\x00bad", None, MS),
        FakeRecord("t", 0, 3, b"\x00bad", b"s-3", MS),
    ]
    assert triage(records, now=T0).named() == [Named(0, "s-1", AT_MS), Named(2, "s-3", AT_MS)]


def erasure_event(**changes: str) -> ErasureEvent:
    event = ErasureEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=str(uuid.uuid4()),
        student_id="s-1",
        requested_by="registrar",
        reason="ticket-1",
    )
    event.occurred_at.FromDatetime(T0)
    for name, value in changes.items():
        setattr(event, name, value)
    return event


def test_an_erasure_event_round_trips_keyed_by_the_student() -> None:
    event = erasure_event()
    record = envelope.encode_erasure(event, trace_id="ab" * 16)
    assert record.key == b"s-1" and envelope.is_erasure(record.headers)
    assert not envelope.is_outcome(record.headers)
    assert envelope.decode_any(record.value, record.headers) == event


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"student_id": "s 1"}, "student_id"),
        ({"requested_by": ""}, "requested_by"),
        ({"reason": "mail jane@example.com"}, "reason"),
    ],
)
def test_an_erasure_event_breaking_a_rule_is_an_invalid_event(
    changes: dict[str, str], refused: str
) -> None:
    record = envelope.encode_erasure(erasure_event(**changes))
    with pytest.raises(envelope.InvalidErasure, match=refused):
        envelope.decode_erasure(record.value, record.headers)
    [rejected] = triage([as_record(record)], now=T0).rejected
    assert rejected.reason is Reason.INVALID_EVENT
    assert "s 1" not in rejected.error and "jane" not in rejected.error


def test_an_erasure_event_whose_id_is_no_uuid_is_undecodable_as_any_event() -> None:
    record = envelope.encode_erasure(erasure_event(event_id="ticket-1"))
    found = triage([as_record(record)], now=T0)
    assert [(r.reason, r.error) for r in found.rejected] == [
        (Reason.UNDECODABLE, "event_id is missing or not a UUID")
    ]
    assert not found.erasures


def as_record(record: KafkaRecord, offset: int = 0) -> FakeRecord:
    return FakeRecord("t", 0, offset, record.value, record.key, headers=list(record.headers))


def test_triage_sets_erasures_apart_from_rows() -> None:
    event = erasure_event()
    found = triage([as_record(envelope.encode_erasure(event))], now=T0)
    assert found.rows == [] and found.rejected == []
    assert found.erasures == [Erasure(event.event_id, "s-1", T0, "registrar", "ticket-1")]


async def test_a_batch_s_erasures_and_the_records_after_them_survive_its_steps() -> None:
    """The consumer triages a batch in steps (triage_in_steps): every step's erasures are the
    batch's, and an erasure does not end its step: the records after it are read too."""
    records = [
        as_record(envelope.encode_erasure(erasure_event()), 0),
        FakeRecord("t", 0, 1, event_bytes("s-2"), b"s-2"),
        as_record(envelope.encode_erasure(erasure_event(student_id="s-3")), 2),
        FakeRecord("t", 0, 3, event_bytes("s-4"), b"s-4"),
    ]
    whole = triage(records, now=T0)
    stepped = await triage_in_steps(records, max_future_skew=timedelta(minutes=5), step=2)
    for found in (whole, stepped):
        assert [e.student_id for e in found.erasures] == ["s-1", "s-3"]
        assert [r.offset for r in found.sources] == [1, 3] and not found.rejected


@pytest.mark.parametrize("form", ["{%s}", "urn:uuid:%s", "%s"])
def test_an_erasure_s_event_id_in_another_form_is_stored_in_the_canonical_one(form: str) -> None:
    # Any producer may write the topic: an id the database driver cannot write would stop the
    # recorder as if the database were away, on every try, for every student of the batch.
    canonical = str(uuid.uuid4())
    given = form % (canonical.replace("-", "") if form == "%s" else canonical)
    event = erasure_event(event_id=given)
    [found] = triage([as_record(envelope.encode_erasure(event))], now=T0).erasures
    assert found.event_id == canonical


def test_an_erasure_far_in_the_future_is_refused() -> None:
    event = erasure_event()
    event.occurred_at.FromDatetime(T0 + timedelta(days=1))
    found = triage([as_record(envelope.encode_erasure(event))], now=T0)
    assert [r.reason for r in found.rejected] == [Reason.FUTURE_EVENT] and not found.erasures


def test_the_reason_rule() -> None:
    assert reason_is_valid("") and reason_is_valid("GDPR art. 17: ticket #4711/b")
    assert reason_is_valid("x" * REASON_MAX_LENGTH), "the rule says at most, not fewer than"
    assert (
        not reason_is_valid("x" * 201) and not reason_is_valid("a@b") and not reason_is_valid("é")
    )


def test_the_requested_by_rule() -> None:
    assert requested_by_is_valid("registrar") and requested_by_is_valid(ANONYMOUS)
    assert requested_by_is_valid("x" * REQUESTED_BY_MAX_LENGTH)
    assert not requested_by_is_valid("x" * (REQUESTED_BY_MAX_LENGTH + 1))
    assert not any(map(requested_by_is_valid, ("", "two words", "tab\there")))


def test_the_erasure_key_is_required_for_a_database_elsewhere() -> None:
    remote = "postgresql://u@db.example.org/x"
    with pytest.raises(ConfigError, match="STUDENTPERF_ERASURE_KEY"):
        erasure_key({}, remote)
    with pytest.raises(ConfigError, match="too short"):
        erasure_key({"STUDENTPERF_ERASURE_KEY": "short"}, remote)
    assert erasure_key({"STUDENTPERF_ERASURE_KEY": "x" * 32}, remote) == b"x" * 32
    for local in ("postgresql://u@127.0.0.1:5432/x", "postgresql://u@localhost/x"):
        assert erasure_key({}, local) == DEV_ERASURE_KEY
    # No host in the URL's authority: the query or PGHOST may still name another machine.
    for elsewhere, env in [
        ("postgresql://u@/x?host=db.example.org", {}),
        ("postgresql://u@/x?host=/cloudsql/project:region:db", {}),
        ("postgresql:///x", {"PGHOST": "db.example.org"}),
    ]:
        with pytest.raises(ConfigError, match="STUDENTPERF_ERASURE_KEY"):
            erasure_key(env, elsewhere)
    for local, env in [
        ("postgresql:///x", {}),
        ("postgresql://u@/x?host=/var/run/postgresql", {}),
        ("postgresql:///x", {"PGHOST": "localhost"}),
    ]:
        assert erasure_key(env, local) == DEV_ERASURE_KEY


def test_the_erasure_key_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("f" * 40 + "\n")
    env = {"STUDENTPERF_ERASURE_KEY_FILE": str(path)}
    assert erasure_key(env, "postgresql://u@db/x") == b"f" * 40


@pytest.mark.parametrize("name", ["x" * 129, "zero\u200bwidth"])
def test_a_client_name_an_erasure_event_cannot_carry_is_refused_at_start(name: str) -> None:
    # Its erasures would be accepted, then refused by the recorder: the rows would stay.
    with pytest.raises(ConfigError, match="line 1: a client name is printable"):
        parse_token_table(f"{name} 0123456789abcdef0123 EraseStudent\n")


def test_who_asked_is_the_token_s_client_or_anonymous() -> None:
    clients = parse_token_table("registrar 0123456789abcdef0123 EraseStudent\n")
    assert client_name(clients, {"authorization": "Bearer 0123456789abcdef0123"}) == "registrar"
    assert client_name({}, {}) == "anonymous"


def keyed(key: str, value: str) -> KafkaRecord:
    return KafkaRecord(key=key.encode(), value=value.encode(), headers=[("h", b"1")])


DESTINATION = Destination("t", "127.0.0.1:9092", "c-1")


async def test_the_spool_drops_a_key_from_every_segment_on_disk(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20, destination=DESTINATION, segment_bytes=64)
    for n in range(6):
        await spool.append([keyed("a", f"a{n}"), keyed("b", f"b{n}")])
    spool.destination = Destination("t", "127.0.0.1:9092", "c-2")  # a segment of its own
    await spool.append([keyed("a", "only-a")])
    segments = sorted(tmp_path.glob("*.spool"))
    first = segments[0]
    sent_before = len(read_segment(first).records)
    progress = {first: sent_before}
    dropped = await spool.drop_key(b"a", progress)
    left = [r for path in sorted(tmp_path.glob("*.spool")) for r in read_segment(path).records]
    assert dropped == 7 and spool.records == 6
    assert [r.value for r in left] == [f"b{n}".encode() for n in range(6)]
    assert progress == {first: sent_before // 2}  # half of what was sent was a's
    assert len(list(tmp_path.glob("*.spool"))) == len(segments) - 1  # the a-only one is gone
    await spool.append([keyed("a", "after")])  # appends go on after a drop
    assert spool.records == 7
    await spool.close()


async def test_the_spool_drops_a_key_past_a_segment_without_it_and_keeps_the_replay_count(
    tmp_path: Path,
) -> None:
    spool = await Spool.open(tmp_path, max_bytes=1 << 20, destination=DESTINATION, segment_bytes=64)
    await spool.append([keyed("b", "b0")])  # a segment of its own, none of a's events in it
    await spool.append([keyed("a", "a1"), keyed("a", "a2"), keyed("b", "b1"), keyed("b", "b2")])
    first, second = sorted(tmp_path.glob("*.spool"))
    # The replayer had a1, a2 and b1 acknowledged: of what is kept, only b1 was sent. Counted
    # any other way, b2 is taken for sent and never sent, or b1 is sent twice.
    progress = {second: 3}
    assert await spool.drop_key(b"a", progress) == 2
    assert progress == {second: 1}
    assert [r.value for r in read_segment(first).records] == [b"b0"]
    assert [r.value for r in read_segment(second).records] == [b"b1", b"b2"]
    await spool.close()


async def test_the_spool_drops_a_key_from_a_segment_being_opened_by_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure that comes while a write opens a new segment for the student's event: it
    waits for that write, then drops the event from the segment the write opened."""
    spool = await Spool.open(tmp_path, max_bytes=1 << 20, destination=DESTINATION)
    opening = asyncio.Event()
    go_on = asyncio.Event()
    loop = asyncio.get_running_loop()
    create = spool._create_segment

    def slow_create(seq: int) -> Any:
        loop.call_soon_threadsafe(opening.set)
        asyncio.run_coroutine_threadsafe(go_on.wait(), loop).result(timeout=5)
        return create(seq)

    monkeypatch.setattr(spool, "_create_segment", slow_create)
    appending = asyncio.create_task(spool.append([keyed("a", "a1"), keyed("b", "b1")]))
    await asyncio.wait_for(opening.wait(), 5)
    dropping = asyncio.create_task(spool.drop_key(b"a"))
    await asyncio.sleep(0.05)
    go_on.set()
    await appending
    assert await dropping == 1
    left = [r.value for path in tmp_path.glob("*.spool") for r in read_segment(path).records]
    assert left == [b"b1"] and spool.records == 1
    await spool.close()


class StallingBroker:
    """Reachable once `reachable` is set; acknowledges nothing until `release` is set."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.answering = True
        self.reachable = asyncio.Event()
        self.release = asyncio.Event()
        self.log: list[bytes] = []

    @property
    def destination(self) -> Destination:
        return DESTINATION

    async def connect(self) -> None:
        await self.reachable.wait()
        self.connected.set()

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        await self.release.wait()
        self.log += [r.value for r in records]

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.connected.clear()


async def until_empty(publisher: DurablePublisher) -> None:
    async with asyncio.timeout(5):
        while not publisher.spool.empty:  # noqa: ASYNC110 (polls state no event announces)
            await asyncio.sleep(0.01)


async def test_forgotten_events_are_never_replayed(tmp_path: Path) -> None:
    broker = StallingBroker()
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    publisher.start()
    await publisher.publish([keyed("a", "a1"), keyed("b", "b1")])  # Kafka away: spooled
    await publisher.publish([keyed("a", "a2")])
    assert await publisher.forget(b"a") == 2
    broker.reachable.set()
    broker.release.set()
    await until_empty(publisher)
    assert broker.log == [b"b1"]
    await publisher.stop()


async def test_a_stop_waits_for_an_erasure_rewriting_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool closes (and lets go of its folder, for the next process) only once an
    erasure's rewrite is done: not under it, half the student's events dropped."""
    rewrite = spool_segments.rewrite_segment

    def slow_rewrite(*args: Any) -> int:
        time.sleep(0.2)
        return rewrite(*args)

    # Where the spool looks it up: it imports the function by name.
    monkeypatch.setattr("inference_service.spool.rewrite_segment", slow_rewrite)
    broker = StallingBroker()  # never reachable: everything is spooled
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    publisher.start()
    await publisher.publish([keyed("a", "a1"), keyed("b", "b1")])
    forgetting = asyncio.create_task(publisher.forget(b"a"))
    await asyncio.sleep(0.05)  # rewriting the segment
    await publisher.stop()
    assert forgetting.done() and forgetting.result() == 1
    assert on_disk(tmp_path) == [b"b1"]


async def test_forget_waits_for_a_segment_being_replayed(tmp_path: Path) -> None:
    broker = StallingBroker()
    broker.reachable.set()
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    await publisher.spool.append([keyed("a", "a1"), keyed("b", "b1")])
    publisher.start()
    await asyncio.sleep(0.1)  # the replayer holds the segment, waiting for the broker
    forgetting = asyncio.create_task(publisher.forget(b"a"))
    await asyncio.sleep(0.1)
    assert not forgetting.done()
    broker.release.set()
    assert await forgetting == 0  # sent before it could be dropped: nothing left on disk
    await until_empty(publisher)
    assert broker.log == [b"a1", b"b1"]
    await publisher.stop()


async def test_a_chunk_rewritten_under_a_stalled_replay_is_sent_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inference_service.delivery._REPLAY_CHUNK", 2)
    broker = HandingBroker(destination=DESTINATION)
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    await publisher.spool.append([keyed("a", "a1"), keyed("b", "b1"), keyed("b", "b2")])
    publisher.start()
    async with asyncio.timeout(5):
        while not broker.handed:  # noqa: ASYNC110 (the replayer's first try hands a1, b1 over)
            await asyncio.sleep(0.01)
    assert await publisher.forget(b"a") == 1  # the segment is now b1, b2
    broker.recover()
    await until_empty(publisher)
    # a1 was in the Kafka client already (README, Erasure: refused by the recorder); b2, past
    # the old chunk, is sent, not taken for sent with the old chunk's acknowledgements.
    print(f"\ndelivered after the rewrite: {broker.log}")
    assert b"b2" in broker.log and broker.log.count(b"b1") >= 1
    await publisher.stop()


class Audit:
    def __init__(self, answers: list[Mapping[str, int] | Exception | None]) -> None:
        self.answers = answers

    async def erasure(self, event_id: str) -> Mapping[str, int] | None:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Held:
    def __init__(self, publisher: RecordingPublisher) -> None:
        self.publisher = publisher
        self.forgotten: list[tuple[bytes, int]] = []

    async def forget(self, key: bytes) -> int:
        # What was published by then: forgetting comes before the erasure's event.
        self.forgotten.append((key, len(self.publisher.records)))
        return 0


def eraser(
    publisher: RecordingPublisher, audit: Audit | None, held: Held | None = None
) -> PredictionCore:
    return PredictionCore(
        AgeModel(),
        publisher,
        max_batch_size=10,
        held_events=held,
        erasure_audit=audit,
        erasure_wait_s=5.0 if audit else 0.0,
    )


async def test_erase_forgets_the_spooled_events_then_publishes_and_confirms() -> None:
    publisher = RecordingPublisher()
    held = Held(publisher)
    audit = Audit([None, None, {"predictions": 2}])
    answer = await eraser(publisher, audit, held).erase_student(
        "s-1", reason="ticket-9", requested_by="registrar"
    )
    assert held.forgotten == [(b"s-1", 0)]
    [record] = publisher.records
    event = envelope.decode_erasure(record.value, record.headers)
    assert record.key == b"s-1" and event.event_id == answer.erasure_id
    assert (event.requested_by, event.reason) == ("registrar", "ticket-9")
    assert answer.removed == {"predictions": 2}


async def test_erase_is_accepted_unconfirmed_when_the_audit_cannot_be_read() -> None:
    away = Audit([HistoryUnavailable("database away")])
    answer = await eraser(RecordingPublisher(), away).erase_student("s-1")
    assert answer.removed is None and answer.erasure_id
    assert (await eraser(RecordingPublisher(), None).erase_student("s-1")).removed is None


async def test_erase_refuses_bad_input_naming_each_field_and_publishes_nothing() -> None:
    publisher = RecordingPublisher()
    with pytest.raises(InvalidInput) as refused:
        await eraser(publisher, None).erase_student("s 1", reason="a@b")
    assert [v.field for v in refused.value.violations] == ["student_id", "reason"]
    assert publisher.records == []


def on_disk(folder: Path) -> list[bytes]:
    """The values of every record in the spool folder's segments, in their order."""
    return [r.value for path in sorted(folder.glob("*.spool")) for r in read_segment(path).records]


class FakeBroker:
    """What the durable publisher needs of Kafka; `publish` is each fake's own."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.answering = True
        self.log: list[bytes] = []  # what was acknowledged, in order

    @property
    def destination(self) -> Destination:
        return DESTINATION

    async def connect(self) -> None:
        self.connected.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.connected.clear()


class RefusingBroker(FakeBroker):
    """Takes `allowed` publishes, then refuses (as after a Kafka error, whose producer is
    replaced: its sends cannot be waited for); -1 takes every one."""

    def __init__(self) -> None:
        super().__init__()
        self.allowed = 0

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        if self.allowed == 0:
            raise PublishUnavailable("Kafka refused the event(s)")
        self.allowed -= 1 if self.allowed > 0 else 0
        self.log += [r.value for r in records]


async def test_an_erasure_whose_call_is_cancelled_midway_leaves_the_replay_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment is rewritten on disk; if the replay's place in it were not corrected with
    it, the replay would skip records whose callers were answered OK."""
    monkeypatch.setattr("inference_service.delivery._REPLAY_CHUNK", 4)
    rewrite = spool_segments.rewrite_segment

    def slow_rewrite(*args: Any) -> int:
        size = rewrite(*args)
        time.sleep(0.2)  # done on disk; the call is cancelled meanwhile
        return size

    monkeypatch.setattr("inference_service.spool.rewrite_segment", slow_rewrite)
    broker = RefusingBroker()
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    keys = ["S", "S", "a", "b", "c", "d", "e", "f"]
    await publisher.spool.append([keyed(k, f"{i}-{k}") for i, k in enumerate(keys)])
    broker.allowed = 1  # the first chunk (0-3) is acknowledged, the second (4-7) refused
    publisher.start()
    async with asyncio.timeout(5):
        while not broker.log:  # noqa: ASYNC110 (the replayer sends)
            await asyncio.sleep(0.01)
    erasing = asyncio.create_task(publisher.forget(b"S"))
    await asyncio.sleep(0.1)
    erasing.cancel()  # EraseStudent's deadline passes mid-rewrite
    await asyncio.gather(erasing, return_exceptions=True)
    broker.allowed = -1  # Kafka is back
    await until_empty(publisher)
    await publisher.stop()
    expected = {f"{i}-{k}".encode() for i, k in enumerate(keys) if k != "S"}
    assert expected <= set(broker.log), f"never sent: {sorted(expected - set(broker.log))}"


async def test_an_erasure_ends_while_calls_keep_spooling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waits for the appends made before it, not for the flushes to stop: under steady
    calls they never do, and it holds the replay up while it waits."""
    fsync = os.fsync

    def disk_fsync(fd: int) -> None:  # as a disk's, not a tmpfs's: a few ms
        time.sleep(0.002)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_fsync)
    spool = await Spool.open(tmp_path, max_bytes=1 << 30, destination=DESTINATION)
    calling = True
    appended = [0] * 32  # each caller's appends so far, started or done

    async def caller(n: int) -> None:
        while calling:
            appended[n] += 1
            await spool.append([keyed(f"s{n}", f"{appended[n]:08d}" + "x" * 200)])

    callers = [asyncio.create_task(caller(n)) for n in range(32)]
    await asyncio.sleep(0.2)
    before = appended[1]
    try:
        async with asyncio.timeout(10):  # it takes well under a second; it used never to end
            dropped = await spool.drop_key(b"s1")
    finally:
        calling = False
        await asyncio.gather(*callers)
    assert dropped >= before - 1
    left = [r for path in tmp_path.glob("*.spool") for r in read_segment(path).records]
    # What s1 appended after the erasure began may remain; nothing from before it does.
    assert all(int(r.value[:8]) > before for r in left if r.key == b"s1")
    await spool.close()


class TimingOutBroker(FakeBroker):
    """A stalled Kafka: each publish fails after the publish timeout (0.2 s), until `up`."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        if not self.up:
            await asyncio.sleep(0.2)
            raise PublishUnavailable("not acknowledged in time")
        self.log += [r.value for r in records]


async def test_a_student_s_events_are_spooled_in_the_order_made_when_kafka_stalls(
    tmp_path: Path,
) -> None:
    broker = TimingOutBroker()
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    publisher.start()
    await asyncio.sleep(0.01)
    other = asyncio.create_task(publisher.publish([keyed("T", "T-1")]))  # straight, stalls
    await asyncio.sleep(0.05)
    older = asyncio.create_task(publisher.publish([keyed("S", "S-1")]))  # straight, stalls
    await other  # timed out and spooled: the spool is not empty any more
    newer = asyncio.create_task(publisher.publish([keyed("S", "S-2")]))  # for the spool
    await asyncio.gather(older, newer)
    broker.up = True
    await until_empty(publisher)
    await publisher.stop()
    assert [v for v in broker.log if v.startswith(b"S")] == [b"S-1", b"S-2"]


async def test_an_erasure_leaves_nothing_of_the_student_in_the_spool(tmp_path: Path) -> None:
    broker = TimingOutBroker()
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    publisher.start()
    await asyncio.sleep(0.01)
    predicting = asyncio.create_task(publisher.publish([keyed("S", "S-predicted")]))
    await asyncio.sleep(0.05)
    # As EraseStudent does: forget, then publish the erasure. The prediction sent straight
    # before is spooled when it times out: the erasure waits for that, then drops it.
    assert await publisher.forget(b"S") == 1
    assert predicting.done()
    left = on_disk(tmp_path)
    assert b"S-predicted" not in left
    await publisher.stop()


class GatedBroker(FakeBroker):
    """Connected; every publish waits for `gate`, then times out."""

    def __init__(self) -> None:
        super().__init__()
        self.connected.set()
        self.gate = asyncio.Event()

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        await self.gate.wait()
        raise PublishUnavailable("not acknowledged in time")


async def stalled_with_a_spooled_event(
    folder: Path,
) -> tuple[GatedBroker, Spool, DurablePublisher, asyncio.Task[None]]:
    """A publisher (no replayer: the order stays on disk) with a publish T-1 sent straight and
    waiting for the gate, and an event in the spool, so that calls from now on spool."""
    broker = GatedBroker()
    spool = await Spool.open(folder, max_bytes=1 << 20, destination=DESTINATION)
    publisher = DurablePublisher(broker, spool)
    straight = asyncio.create_task(publisher.publish([keyed("T", "T-1")]))
    await asyncio.sleep(0)
    await spool.append([keyed("U", "U-1")])
    return broker, spool, publisher, straight


async def test_publishes_waiting_their_turn_for_the_spool_keep_their_order(
    tmp_path: Path,
) -> None:
    """S-1 waits for a straight publish to be over; S-2, made after S-1, starts in the loop
    turns between that publish's end and S-1's wake-up: it must still queue behind S-1."""
    broker, spool, publisher, straight = await stalled_with_a_spooled_event(tmp_path)
    older = asyncio.create_task(publisher.publish([keyed("S", "S-1")]))  # waits for T-1
    await asyncio.sleep(0)

    async def newer_call() -> None:
        await straight  # runnable in the same loop turn as the straight publish's end
        await publisher.publish([keyed("S", "S-2")])

    newer = asyncio.create_task(newer_call())
    await asyncio.sleep(0)
    broker.gate.set()
    await asyncio.gather(older, newer)
    await spool.close()
    values = on_disk(tmp_path)
    assert [v for v in values if v.startswith(b"S")] == [b"S-1", b"S-2"], values


async def test_a_publish_cancelled_while_it_waits_its_turn_lets_none_overtake(
    tmp_path: Path,
) -> None:
    """A cancelled publish (a deadline) queues nothing; its turn must still pass only once
    the publish before it has queued, or a newer event of a student overtakes an older one,
    and an erasure waiting for the last turn misses what is still on its way."""
    broker, spool, publisher, straight = await stalled_with_a_spooled_event(tmp_path)
    waiting = [
        asyncio.create_task(publisher.publish([keyed(k, f"{k}-1")])) for k in ("V", "S", "R")
    ]  # each waits for T-1 and the turn before its own
    cancelled = asyncio.create_task(publisher.publish([keyed("W", "W-1")]))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    newer = asyncio.create_task(publisher.publish([keyed("S", "S-2")]))
    erasing = asyncio.create_task(publisher.forget(b"R"))
    await asyncio.sleep(0.01)
    broker.gate.set()
    async with asyncio.timeout(5):
        await asyncio.gather(straight, *waiting, newer)
        assert await erasing == 1
    await spool.close()
    values = on_disk(tmp_path)
    assert [v for v in values if v.startswith(b"S")] == [b"S-1", b"S-2"], values
    assert b"R-1" not in values


@pytest.mark.parametrize(
    ("removed", "summary"),
    [
        ({}, "removed nothing"),
        ({"predictions": 2, "students": 1}, "removed 2 from predictions, 1 from students"),
        (
            {"outcomes": 1, FACTS_CLEARED: 1},
            "removed 1 from outcomes; cleared the student's facts given before the erasure",
        ),
        ({FACTS_CLEARED: 1}, "cleared the student's facts given before the erasure"),
        # Events of the student that came with the erasure and were skipped, never stored: the
        # student had data, which "removed nothing" would deny.
        (
            {EVENTS_SKIPPED: 2},
            "removed nothing stored; skipped 2 event(s) of the student not yet recorded",
        ),
        (
            {"predictions": 1, EVENTS_SKIPPED: 1},
            "removed 1 from predictions; skipped 1 event(s) of the student not yet recorded",
        ),
        (
            {FACTS_CLEARED: 1, EVENTS_SKIPPED: 3},
            "cleared the student's facts given before the erasure; skipped 3 event(s) of the "
            "student not yet recorded",
        ),
    ],
)
def test_the_answer_says_what_was_removed_and_names_no_table_that_is_none(
    removed: dict[str, int], summary: str
) -> None:
    answer = _erasure_response(ErasureAnswer("e-1", removed))
    assert answer.confirmed and answer.summary == summary
    assert dict(answer.removed) == removed
