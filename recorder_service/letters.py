"""Dead letters read back: what a letter says of its original, for the replay to rebuild it.

A letter (dead_letters.py) is its original's key, value and headers plus `dead-letter-*`
headers (studentperf.envelope). Not every letter holds its original whole: one too large for
the dead-letter topic was sent without its value (`dead-letter-omitted: value`), or with only
the dead-letter headers; a record of a batch compressed with a codec the recorder could not
read was lettered with no key and an empty value (raw_records.py), as was a record that had
neither, which no producer sends; a record with a header name that is not UTF-8 was lettered
with that name escaped (raw_records.UNREADABLE), not as it was. Those are read again where the
letter says the original is (`Letter.source`, originals.py); the others are rebuilt from the
letter itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder_service.batching import Record
from recorder_service.dead_letters import OMITTED_HEADER
from recorder_service.raw_records import UNREADABLE
from studentperf import envelope


@dataclass(frozen=True, slots=True)
class Source:
    """Where a letter's original is (or was: the topic's retention may have removed it)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Original:
    """A record as its producer sent it to the main topic: a batching.Record, so the
    recorder's own rules (triage.named_by) read it as they read any record."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # -1: unknown
    key: bytes | None
    value: bytes | None
    headers: tuple[envelope.Header, ...]


@dataclass(frozen=True, slots=True)
class Letter:
    partition: int  # where the letter itself is, in the dead-letter topic
    offset: int
    reason: str  # its dead-letter-reason; "" when it gives none
    source: Source | None  # None when its headers do not say
    whole: bool  # it holds its original's key, value and headers
    original: Original  # as the letter holds it: whole or not

    def __str__(self) -> str:
        return f"letter {self.partition}:{self.offset} (of {self.source or 'an unknown source'})"


def read_letter(record: Record) -> Letter:
    ours: dict[str, bytes | None] = {}
    kept: list[envelope.Header] = []
    for name, value in record.headers:
        if name.startswith(envelope.DEAD_LETTER_HEADER_PREFIX):
            ours.setdefault(name, value)
        else:
            kept.append((name, value))
    source = None
    topic = _text(ours.get(envelope.DEAD_LETTER_SOURCE_TOPIC_HEADER))
    partition = _number(ours.get(envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER))
    offset = _number(ours.get(envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER))
    if topic and partition is not None and offset is not None:
        source = Source(topic, partition, offset)
    timestamp = _number(ours.get(envelope.DEAD_LETTER_SOURCE_TIMESTAMP_HEADER))
    # A letter with no key and no value cannot be told from a codec letter (raw_records.py):
    # either way only the original says what the record was.
    emptied = record.key is None and not record.value
    # Its header names rewritten (escaped): sent as they are, it would not be the original.
    escaped = _text(ours.get(envelope.DEAD_LETTER_ERROR_HEADER)) == UNREADABLE
    original = Original(
        source.topic if source else "",
        source.partition if source else -1,
        source.offset if source else -1,
        -1 if timestamp is None else timestamp,
        record.key,
        record.value,
        tuple(kept),
    )
    return Letter(
        record.partition,
        record.offset,
        _text(ours.get(envelope.DEAD_LETTER_REASON_HEADER)),
        source,
        whole=OMITTED_HEADER not in ours and not emptied and not escaped,
        original=original,
    )


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace")


def _number(value: bytes | None) -> int | None:
    try:
        return int(value or b"")
    except ValueError:
        return None
