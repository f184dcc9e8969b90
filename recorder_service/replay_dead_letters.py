"""Replaying dead letters: each letter's original record produced back to the main topic.

`python -m recorder_service.replay_dead_letters [--reason R]... [--dry-run]` (`make
replay-dead-letters`), once the cause of the letters is removed (a skew setting raised, a
constraint relaxed). It reads the dead-letter topic (STUDENTPERF_DEAD_LETTER_TOPIC) as the
consumer group `<dead-letter topic>.replay`, from that group's committed offsets (the earliest
when it has none) up to the topic's end as it was when the run started: letters the replay
itself brings back (a cause not removed after all) wait for the next run. Each letter's
original goes to STUDENTPERF_KAFKA_TOPIC with its key, value, headers (less every
`dead-letter-*` one) and timestamp, to the partition Kafka's default partitioner picks for the
key, the one rule every producer of the topic follows (the inference service's
`partitioning.partition_of` is that partitioner, checked against aiokafka's): a student's
events stay on the student's partition. A letter that lacks its original's key or value
(letters.py) is replayed from the original itself, read where the letter says it is
(originals.py); one whose original is gone is reported as not replayable and skipped.

The recorder writes each event once (a prediction by its id), so a letter replayed twice adds
nothing: the producer is idempotent (acks=all), and the group's offsets are committed only once
every record of a chunk is acknowledged, so a run that stops replays again rather than loses.
A letter of another reason than those asked for (`--reason`) is left for another run: in its
partition no offset at or after it is committed (letters after it that are replayed now are
replayed again by the next run). A letter whose original names a student erased at or after
its time is skipped: put back into the topic it would be a new copy of the student's data. The
rule is the recorder's (triage.named_by, erasure.erased_records), against `erasures`, read as
the read-only analyst unless STUDENTPERF_DATABASE_URL names another role, with the recorder's
STUDENTPERF_ERASURE_KEY. `--dry-run` reads and decides the same, and sends and commits nothing.

Exit status: 0 when every letter was replayed or deliberately skipped, 1 when some were not
replayable or the run stopped early (Kafka or the database failing or not answering in time:
run it again), 2 for bad arguments or settings (the message names the setting), an ACL Kafka
refused (it names the group or topic and the operation needed) or a codec library missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from recorder_service.erasure import (
    Named,
    StudentHasher,
    erased_as_of,
    erased_records,
    students_of,
)
from recorder_service.letters import Letter, Original, Source, read_letter
from recorder_service.originals import NotReplayable, Originals, partitions
from recorder_service.replay_report import (
    BAD_SETTINGS,
    SOME_NOT_REPLAYABLE,
    Outcome,
    Tally,
)
from recorder_service.settings import Settings
from recorder_service.triage import Reason, named_by
from studentperf.config import ConfigError, DatabaseRole, configure_logging, mask_dsn

# By name, not __name__: run as `python -m` it would be "__main__".
log = logging.getLogger("recorder_service.replay_dead_letters")

GROUP_SUFFIX = ".replay"
CLIENT_ID = "studentperf-replay-dead-letters"
# Every wait on Kafka or the database is bounded by this.
TIMEOUT_S = 30.0
# Letters decided, sent and committed together.
CHUNK = 500
PROGRESS_S = 5.0
# Kafka refusing the user an ACL: running again changes nothing until the ACL is granted.
_REFUSED = (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


def replay_group(settings: Settings) -> str:
    return settings.dead_letters_to + GROUP_SUFFIX


async def replay(
    settings: Settings,
    tally: Tally,
    *,
    reasons: frozenset[str] = frozenset(),
    progress_s: float = PROGRESS_S,
) -> Tally:
    """Replays the letters up to the topic's end (see the module), counting each in `tally`
    (its `dry_run` says whether to send); raises ConfigError when a topic is missing."""
    options = settings.shared.kafka_security.client_options()
    bootstrap = settings.shared.kafka_bootstrap_servers
    letters = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=replay_group(settings),
        client_id=CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(TIMEOUT_S * 1000),
        **options,
    )
    originals = Originals(bootstrap, options, TIMEOUT_S)
    producer = None
    if not tally.dry_run:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=CLIENT_ID,
            enable_idempotence=True,
            acks="all",
            linger_ms=20,
            request_timeout_ms=int(TIMEOUT_S * 1000),
            **options,
        )
    conn: asyncpg.Connection | None = None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await letters.start()
            assigned = await _letter_partitions(settings)
            # Assigned, not subscribed: no rebalance to wait for; the group only keeps offsets.
            letters.assign(assigned)
            ends = await letters.end_offsets(assigned)
            starts = {tp: await letters.position(tp) for tp in assigned}
            conn = await asyncpg.connect(settings.shared.database_url)
            if producer is not None:
                await producer.start()
        total = sum(max(0, ends[tp] - starts[tp]) for tp in assigned)
        log.info(
            "replaying %d letters of %s (group %s) to %s%s; database %s",
            total,
            settings.dead_letters_to,
            replay_group(settings),
            settings.shared.kafka_topic,
            " (dry run: nothing is sent or committed)" if tally.dry_run else "",
            mask_dsn(settings.shared.database_url),
        )
        run = _Run(settings, tally, reasons, conn, originals, producer)
        behind = [tp for tp in assigned if starts[tp] < ends[tp]]
        last_read = time.monotonic()
        next_progress = last_read + progress_s
        while behind:
            fetched = await letters.getmany(*behind, timeout_ms=1000, max_records=CHUNK)
            chunk = [r for tp in behind for r in fetched.get(tp, ()) if r.offset < ends[tp]]
            if chunk:
                commit = await run.chunk(chunk)
                if commit and producer is not None:
                    # aiokafka retries a commit (and a position's offset fetch) for as long as
                    # the coordinator answers with a retriable error: bounded, the run stops.
                    async with asyncio.timeout(TIMEOUT_S):
                        await letters.commit(commit)
                last_read = time.monotonic()
            elif time.monotonic() - last_read > TIMEOUT_S:
                raise TimeoutError(
                    f"no letter read from {settings.dead_letters_to} in {TIMEOUT_S} s"
                )
            async with asyncio.timeout(TIMEOUT_S):
                behind = [tp for tp in behind if await letters.position(tp) < ends[tp]]
            if time.monotonic() >= next_progress:
                log.info("%s", tally.progress(total))
                next_progress = time.monotonic() + progress_s
        return tally
    finally:
        # Each bounded: a client of a Kafka that stopped answering can hang in stop()
        # (aiokafka#759), and what was sent but not committed is replayed by the next run.
        closing = [originals.close(), letters.stop()]
        if producer is not None:
            closing.append(producer.stop())
        if conn is not None:
            closing.append(conn.close())
        for close in closing:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close, 10)


async def _letter_partitions(settings: Settings) -> list[TopicPartition]:
    topics = await partitions(
        settings.shared.kafka_bootstrap_servers,
        settings.shared.kafka_security.client_options(),
        CLIENT_ID,
    )
    for topic, setting in (
        (settings.dead_letters_to, "STUDENTPERF_DEAD_LETTER_TOPIC"),
        (settings.shared.kafka_topic, "STUDENTPERF_KAFKA_TOPIC"),
    ):
        if topic not in topics:
            # Kafka lists only the topics the user may Describe.
            raise ConfigError(
                f"topic {topic} does not exist in Kafka, or its user may not Describe it:"
                f" check {setting}"
            )
    return [
        TopicPartition(settings.dead_letters_to, p)
        for p in sorted(topics[settings.dead_letters_to])
    ]


class _Run:
    """One run's decisions, chunk by chunk, and what its group may commit."""

    def __init__(
        self,
        settings: Settings,
        tally: Tally,
        reasons: frozenset[str],
        conn: asyncpg.Connection,
        originals: Originals,
        producer: AIOKafkaProducer | None,
    ) -> None:
        self._topic = settings.shared.kafka_topic
        self._letters_topic = settings.dead_letters_to
        self._tally = tally
        self._reasons = reasons
        self._conn = conn
        self._originals = originals
        self._producer = producer
        self._hasher = StudentHasher(settings.erasure_key)
        # Partitions where a letter was left (filtered): nothing after it may be committed.
        self._left: set[int] = set()
        # The originals replayed or skipped as erased by this run, by where they are.
        self._done: set[Source] = set()

    async def chunk(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> dict[TopicPartition, int]:
        """Decides and sends the letters (partition by partition, each in order); returns the
        offsets to commit once all that was sent is acknowledged."""
        letters = [read_letter(r) for r in records]
        outcomes = [Outcome.FILTERED] * len(letters)
        wanted: dict[int, Original] = {}
        sources: dict[int, Source] = {}  # of those wanted (or erased) in this chunk
        for index, letter in enumerate(letters):
            if self._reasons and letter.reason not in self._reasons:
                continue
            if letter.source in self._done or letter.source in sources.values():
                outcomes[index] = Outcome.COPY
                continue
            try:
                wanted[index] = await self._original(letter)
                if letter.source is not None:
                    sources[index] = letter.source
            except NotReplayable as why:
                outcomes[index] = Outcome.NOT_REPLAYABLE
                log.warning("%s, %s, is not replayable: %s", letter, letter.reason, why)
        for index in await self._erased(letters, wanted):
            outcomes[index] = Outcome.ERASED
            del wanted[index]
        acks = []
        for index, original in wanted.items():
            outcomes[index] = Outcome.REPLAYED
            if self._producer is not None:
                acks.append(await self._send(self._producer, original))
        if acks:
            async with asyncio.timeout(TIMEOUT_S):
                await asyncio.gather(*acks)
        self._done.update(sources.values())
        commit: dict[TopicPartition, int] = {}
        for letter, outcome in zip(letters, outcomes, strict=True):
            self._tally.add(letter.reason, outcome)
            if outcome == Outcome.FILTERED:
                self._left.add(letter.partition)
            elif letter.partition not in self._left:
                commit[TopicPartition(self._letters_topic, letter.partition)] = letter.offset + 1
        return commit

    async def _original(self, letter: Letter) -> Original:
        if letter.whole:
            return letter.original
        if letter.source is None:
            raise NotReplayable("it lacks its original, and does not say where that is")
        original = await self._originals.read(letter.source)
        if original.key is None and original.value is None:
            raise NotReplayable("its original has neither key nor value: nothing to send")
        return original

    async def _erased(self, letters: Sequence[Letter], wanted: dict[int, Original]) -> set[int]:
        """The letters (their index) whose original names a student erased at or after its
        time: the recorder's rule for a record it refused, asked of `erasures` in one query."""
        named = []
        for index, original in wanted.items():
            try:
                students, as_of = named_by(original, letters[index].reason)
            except Exception:  # tied to no student, as the recorder takes it (triage._rejected)
                continue
            if as_of is not None:
                named += [Named(index, student, as_of) for student in students]
        if not named:
            return set()
        async with asyncio.timeout(TIMEOUT_S):
            erased = await erased_as_of(self._conn, students_of([], named), self._hasher)
        return erased_records(named, erased)

    async def _send(self, producer: AIOKafkaProducer, original: Original) -> asyncio.Future[object]:
        # No partition given: the key's, by the default partitioner (see the module).
        ack: asyncio.Future[object] = await producer.send(
            self._topic,
            key=original.key,
            value=original.value,
            headers=list(original.headers),
            # Its time, which the recorder's erasure rule reads when it has no occurred_at.
            timestamp_ms=original.timestamp if original.timestamp >= 0 else None,
        )
        return ack


def refused(settings: Settings, error: KafkaError) -> str:
    """Kafka's refusal of an ACL, with the ACLs the replay needs (docs/recorder.md)."""
    topic, letters = settings.shared.kafka_topic, settings.dead_letters_to
    if isinstance(error, GroupAuthorizationFailedError):
        needed = f"Read and Describe on group {replay_group(settings)}"
    elif isinstance(error, TopicAuthorizationFailedError):
        needed = f"Read and Describe on topics {letters} and {topic}, and Write on {topic}"
    else:
        needed = "Describe and IdempotentWrite on the cluster (the producer is idempotent)"
    user = settings.shared.kafka_security.sasl_username or "(no SASL user)"
    return (
        f"Kafka refused the replay ({type(error).__name__}: {error}): its Kafka user {user}"
        f" needs {needed}; grant it (docs/recorder.md, Replaying dead letters), then run it again"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recorder_service.replay_dead_letters",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument(
        "--reason",
        action="append",
        choices=[reason.value for reason in Reason],
        help="replay only letters of this dead-letter-reason (repeatable; default: every one)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would be replayed, by reason; send nothing, commit nothing",
    )
    args = parser.parse_args(argv)
    try:
        configure_logging(os.environ, default_format="text")
        settings = Settings.from_env(os.environ, DatabaseRole.ANALYST)
    except ConfigError as error:
        parser.error(str(error))
    if settings.dead_letters_to == settings.shared.kafka_topic:
        parser.error(
            f"STUDENTPERF_DEAD_LETTER_TOPIC names the main topic {settings.shared.kafka_topic}:"
            " letters cannot be replayed into the topic they are read from"
        )
    if logging.getLogger().level > logging.DEBUG:  # aiokafka's INFO lines tell operators nothing
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    tally = Tally(dry_run=args.dry_run)
    try:
        asyncio.run(replay(settings, tally, reasons=frozenset(args.reason or ())))
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(BAD_SETTINGS) from None
    except _REFUSED as error:
        print(tally.table(), file=sys.stderr)
        print(f"{parser.prog}: error: {refused(settings, error)}", file=sys.stderr)
        raise SystemExit(BAD_SETTINGS) from None
    except (KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        print(tally.table(), file=sys.stderr)
        done = (
            "nothing was sent or committed (a dry run)"
            if tally.dry_run
            else "what was replayed before is committed"
        )
        print(
            f"replay stopped: {type(error).__name__}: {error}; {done}: run it again for the rest",
            file=sys.stderr,
        )
        raise SystemExit(SOME_NOT_REPLAYABLE) from None
    verb = "would replay" if tally.dry_run else "replayed"
    print(
        f"{settings.dead_letters_to}: {tally.read:,} letters read, {verb}"
        f" {tally.of(Outcome.REPLAYED):,} to {settings.shared.kafka_topic}"
    )
    print(tally.table())
    raise SystemExit(tally.status)


if __name__ == "__main__":
    main()
