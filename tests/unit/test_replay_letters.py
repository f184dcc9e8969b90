"""Dead letters read back for the replay (recorder_service/letters.py), what an original's codec
the client cannot read means (originals.py), the replay's report and its refusals of bad
arguments and settings (recorder_service/replay_dead_letters.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiokafka.codec
import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)
from aiokafka.record.default_records import DefaultRecordBatch

from recorder_service import replay_dead_letters
from recorder_service.batching import UnreadableRecord
from recorder_service.dead_letters import DeadLetter, dead_letter
from recorder_service.letters import Source, read_letter
from recorder_service.originals import NotReplayable, codec_refusal
from recorder_service.raw_records import UNREADABLE
from recorder_service.replay_dead_letters import main
from recorder_service.replay_report import Outcome, Tally
from recorder_service.triage import Reason, Rejected
from studentperf.config import ConfigError
from tests.unit.recorder_fakes import TOPIC, FakeRecord
from tests.unit.test_recorder_polling import build

ORIGINAL_HEADERS: list[tuple[str, bytes | None]] = [("content-type", b"x"), ("trace-id", None)]


def letter_record(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> FakeRecord:
    """A letter as the replay's consumer reads it."""
    return FakeRecord(f"{TOPIC}.dead-letter", 2, 40, value, key=key, headers=headers)


def sent(key: bytes | None, value: bytes | None) -> DeadLetter:
    """The letter a recorder sends for a record of TOPIC[1]@9 with the original headers."""
    record = FakeRecord(TOPIC, 1, 9, value, key=key, headers=ORIGINAL_HEADERS)
    rejected = Rejected(record, Reason.FUTURE_EVENT, "ahead")
    return dead_letter(rejected, datetime(2026, 1, 1, tzinfo=UTC))


def read_back(letter: DeadLetter) -> FakeRecord:
    return letter_record(letter.key, letter.value, letter.headers)


def test_a_whole_letter_is_its_original_without_the_letter_headers() -> None:
    letter = read_letter(read_back(sent(b"s-1", b"event")))
    assert letter.whole
    assert (letter.reason, letter.source) == ("future-event", Source(TOPIC, 1, 9))
    assert (letter.partition, letter.offset) == (2, 40)
    original = letter.original
    assert (original.key, original.value) == (b"s-1", b"event")
    assert list(original.headers) == ORIGINAL_HEADERS  # null values kept, ours dropped
    assert original.timestamp == FakeRecord(TOPIC, 1, 9, b"").timestamp


def test_a_letter_that_left_out_its_value_or_everything_is_not_whole() -> None:
    smaller = sent(b"s-1", b"event").smaller()
    assert smaller is not None
    without_value = read_letter(read_back(smaller))
    assert not without_value.whole
    assert without_value.source == Source(TOPIC, 1, 9)
    smallest = smaller.smaller()
    assert smallest is not None
    assert not read_letter(read_back(smallest)).whole


def test_a_letter_with_neither_key_nor_value_is_not_whole() -> None:
    # A codec letter (raw_records.py): its original's key and value were never read.
    assert not read_letter(read_back(sent(None, None))).whole
    assert read_letter(read_back(sent(None, b"event"))).whole  # a keyless record with a value


def test_a_letter_of_a_record_whose_header_names_were_escaped_is_not_whole() -> None:
    # The recorder read it raw and escaped the name that is not UTF-8 (raw_records.py): the
    # letter's headers are not the original's, whose own are read again, as for a letter
    # without its value.
    headers = [("content-type", b"x"), ("trace-\\xff-id", b"1")]
    record = UnreadableRecord(TOPIC, 1, 9, UNREADABLE, 5, b"s-1", b"event", headers)
    letter = read_letter(
        read_back(dead_letter(Rejected(record, Reason.UNDECODABLE, UNREADABLE), datetime.now(UTC)))
    )
    assert not letter.whole
    assert letter.source == Source(TOPIC, 1, 9)
    # Another undecodable record, its headers as they were, is whole.
    other = FakeRecord(TOPIC, 1, 9, b"event", key=b"s-1", headers=headers)
    readable = dead_letter(Rejected(other, Reason.UNDECODABLE, "not an event"), datetime.now(UTC))
    assert read_letter(read_back(readable)).whole


def test_a_letter_whose_headers_do_not_say_where_names_no_source() -> None:
    where = [("dead-letter-source-topic", b"t"), ("dead-letter-source-partition", b"1")]
    assert read_letter(
        letter_record(b"k", b"", [*where, ("dead-letter-source-offset", b"9")])
    ).source
    letter = read_letter(letter_record(b"k", b"", [*where, ("dead-letter-source-offset", b"nine")]))
    assert letter.source is None and letter.reason == ""
    assert read_letter(letter_record(b"k", b"", [*where])).source is None


def aiokafka_refusal(batch: bytes) -> UnsupportedCodecError:
    with pytest.raises(UnsupportedCodecError) as refused:
        list(DefaultRecordBatch(batch))
    return refused.value


def test_a_missing_codec_library_stops_the_run_and_an_unknown_codec_only_its_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = Source(TOPIC, 1, 9)
    unknown = bytearray(build(2, [(b"c", [])]))
    unknown[22] |= 0x05  # codec 5 in the attributes: none Kafka has yet
    refusal = codec_refusal(aiokafka_refusal(bytes(unknown)), source)
    assert isinstance(refusal, NotReplayable)
    assert "Unknown compression codec 0x05" in str(refusal)
    zstd = build(0, [(b"a" * 100, [])], codec=4)
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # what aiokafka sees without it
    refusal = codec_refusal(aiokafka_refusal(zstd), source)
    assert isinstance(refusal, ConfigError)
    assert str(refusal) == (
        f"{source}: its record batch is compressed with zstd, and its library (cramjam) is not"
        " installed: pip install 'studentperf[recorder]' brings it"
    )


def test_only_a_letter_not_replayable_fails_the_run() -> None:
    tally = Tally()
    for outcome in (Outcome.REPLAYED, Outcome.ERASED, Outcome.FILTERED, Outcome.COPY):
        tally.add("future-event", outcome)
    assert tally.status == 0
    tally.add("undecodable", Outcome.NOT_REPLAYABLE)
    assert tally.status == 1
    assert tally.by_reason(Outcome.NOT_REPLAYABLE) == {"undecodable": 1}


def test_the_table_counts_each_reason_and_their_total_and_a_dry_run_says_would() -> None:
    tally = Tally()
    for reason, outcome in [
        ("future-event", Outcome.REPLAYED),
        ("future-event", Outcome.REPLAYED),
        ("future-event", Outcome.ERASED),
        ("undecodable", Outcome.NOT_REPLAYABLE),
    ]:
        tally.add(reason, outcome)
    head, *rows = tally.table().splitlines()
    assert head.split()[:2] == ["reason", "replayed"] and "would" not in head
    counts = {row.split()[0]: [int(n) for n in row.split()[1:]] for row in rows}
    assert counts == {
        "future-event": [2, 1, 0, 0, 0],
        "undecodable": [0, 0, 0, 1, 0],
        "total": [2, 1, 0, 1, 0],
    }
    assert "replayed 2" in tally.progress(4) and tally.progress(4).startswith("4 of 4")
    dry = Tally(dry_run=True)
    dry.add("future-event", Outcome.REPLAYED)
    assert "would replay" in dry.table() and "would replay 1" in dry.progress(1)
    assert "would replay" not in Tally().progress(0)


def refusal(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_an_unknown_reason_is_refused_with_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = refusal(capsys, "--reason", "future")
    assert "invalid choice: 'future'" in error and "future-event" in error


def test_a_bad_setting_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDENTPERF_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")
    assert "STUDENTPERF_KAFKA_SECURITY_PROTOCOL" in refusal(capsys, "--dry-run")


def test_letters_are_not_replayed_into_their_own_topic(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDENTPERF_KAFKA_TOPIC", "events")
    monkeypatch.setenv("STUDENTPERF_DEAD_LETTER_TOPIC", "events")
    assert "STUDENTPERF_DEAD_LETTER_TOPIC names the main topic" in refusal(capsys)


def stopped_by(
    error: KafkaError,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
) -> tuple[object, str]:
    """The exit status and error output of a run whose replay raises `error`."""

    async def failing(*_: object, **__: object) -> Tally:
        raise error

    monkeypatch.setenv("STUDENTPERF_KAFKA_TOPIC", "events")
    monkeypatch.setattr(replay_dead_letters, "replay", failing)
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code, capsys.readouterr().err


def test_an_acl_kafka_refuses_exits_2_naming_what_to_grant(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Running again changes nothing until the ACL is granted: not exit 1, "run it again".
    code, err = stopped_by(GroupAuthorizationFailedError(), capsys, monkeypatch)
    assert code == 2
    assert "needs Read and Describe on group events.dead-letter.replay" in err
    assert "run it again for the rest" not in err
    code, err = stopped_by(TopicAuthorizationFailedError(), capsys, monkeypatch, "--dry-run")
    assert code == 2
    assert (
        "needs Read and Describe on topics events.dead-letter and events, and Write on events"
        in err
    )


def test_a_dry_run_that_stopped_says_it_committed_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = stopped_by(KafkaConnectionError(), capsys, monkeypatch, "--dry-run")
    assert code == 1
    assert "nothing was sent or committed (a dry run): run it again" in err
    assert "is committed" not in err
    code, err = stopped_by(KafkaConnectionError(), capsys, monkeypatch)
    assert code == 1
    assert "what was replayed before is committed: run it again for the rest" in err
