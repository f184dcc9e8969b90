"""The pure parts of a student's facts: which events may give them (future skew), the log
position each row carries, and that every feature is a fact the rule merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recorder_service.rows import STAGING_COLUMNS
from recorder_service.settings import Settings
from recorder_service.triage import Reason, triage
from studentperf.config import ConfigError
from studentperf.features import FEATURE_COLUMNS
from studentperf.persistence.student_facts import FACTS, as_of, log_offset, merge_statement
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.unit.recorder_fakes import TOPIC, FakeRecord, event_bytes

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OFFSET = STAGING_COLUMNS.index("log_offset")


def at(offset: int, seconds_from_now: float) -> FakeRecord:
    event = PredictionEvent.FromString(event_bytes("a"))
    when = NOW + timedelta(seconds=seconds_from_now)
    event.occurred_at.FromDatetime(when)
    return FakeRecord(TOPIC, 0, offset, event.SerializeToString())


def test_an_event_further_ahead_than_the_skew_is_rejected_and_says_why() -> None:
    records = [at(10, 0), at(11, 60), at(12, 60.001), at(13, 86_400), at(14, -86_400)]
    out = triage(records, max_future_skew=timedelta(seconds=60), now=NOW)
    assert [r.offset for r in out.sources] == [10, 11, 14]  # the past is never refused
    assert [(r.record.offset, r.reason) for r in out.rejected] == [
        (12, Reason.FUTURE_EVENT),
        (13, Reason.FUTURE_EVENT),
    ]
    assert out.rejected[1].error == (
        "occurred_at is 86400 s ahead of the recorder's clock, more than the 60 s allowed"
        " (STUDENTPERF_MAX_FUTURE_SKEW_S)"
    )


def test_a_skew_of_zero_refuses_anything_ahead_of_the_clock() -> None:
    out = triage([at(0, 0), at(1, 0.001)], max_future_skew=timedelta(0), now=NOW)
    assert [r.offset for r in out.sources] == [0]
    assert [r.reason for r in out.rejected] == [Reason.FUTURE_EVENT]


def test_each_row_carries_its_records_offset_not_its_place_in_the_batch() -> None:
    out = triage([at(1_000_007, 0), at(42, 0)], now=NOW)
    assert [row[OFFSET] for row in out.rows] == [1_000_007, 42]


def test_the_skew_is_a_setting() -> None:
    assert Settings.from_env({}).max_future_skew_s == 300
    assert Settings.from_env({"STUDENTPERF_MAX_FUTURE_SKEW_S": "5"}).max_future_skew_s == 5
    with pytest.raises(ConfigError, match="STUDENTPERF_MAX_FUTURE_SKEW_S"):
        Settings.from_env({"STUDENTPERF_MAX_FUTURE_SKEW_S": "-1"})


def test_every_feature_is_a_fact_merged_with_when_it_was_given() -> None:
    assert sorted(FACTS) == sorted(FEATURE_COLUMNS)
    statement = merge_statement("given")
    for fact in FACTS:
        for column in (fact, as_of(fact), log_offset(fact)):
            assert f"{column} = CASE" in statement
