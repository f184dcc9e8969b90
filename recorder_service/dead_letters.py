"""The dead-letter topic: records that can never be written, kept with the reason.

A dead letter is the original record (key, value, headers) plus `dead-letter-*` headers naming
the reason and where the record came from (see studentperf.envelope). They are sent, and their
acknowledgement awaited, before the batch's offsets are committed: a crash in between sends
them again, and (source topic, partition, offset) tells the copies apart.

Nothing in a record can stop its dead letter: one the topic cannot take whole (too large, or
a header the client refuses) is sent without its value, then, if that is still not enough,
with only the `dead-letter-*` headers, which say where the original still is; the
`dead-letter-omitted` header says what was left out. Only an unreachable topic is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)

from recorder_service.triage import Rejected
from studentperf import envelope

log = logging.getLogger(__name__)

OMITTED_HEADER = "dead-letter-omitted"
_VALUE_OMITTED = b"value"
_ALL_OMITTED = b"key, value and original headers"
# What a letter cannot be sent with: refused by the client before sending (too large, a header
# it cannot encode), or by the broker (larger than the topic's max.message.bytes).
_UNSENDABLE = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TypeError,
    ValueError,
)


class DeadLetterUnavailable(RuntimeError):
    """The dead-letter topic did not acknowledge in time; nothing may be committed yet."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[envelope.Header]
    reason: str
    source: str = ""  # topic[partition]@offset of the original, for log lines

    @property
    def size(self) -> int:
        """Its bytes, near enough to compare with a size the topic refused."""
        headers = sum(len(k) + len(v or b"") for k, v in self.headers)
        return len(self.key or b"") + len(self.value or b"") + headers

    def smaller(self) -> DeadLetter | None:
        """The next smaller form to try when this one cannot be sent; None after the last."""
        ours = [(k, v) for k, v in self.headers if k.startswith(envelope.DEAD_LETTER_HEADER_PREFIX)]
        if any(k == OMITTED_HEADER and v == _ALL_OMITTED for k, v in ours):
            return None
        # An empty value, not a null one: the client refuses a record with neither key nor value.
        if self.value and not any(k == OMITTED_HEADER for k, _ in ours):
            omitted = [*self.headers, (OMITTED_HEADER, _VALUE_OMITTED)]
            return DeadLetter(self.key, b"", omitted, self.reason, self.source)
        kept = [(k, v) for k, v in ours if k != OMITTED_HEADER]
        return DeadLetter(
            None, b"", [*kept, (OMITTED_HEADER, _ALL_OMITTED)], self.reason, self.source
        )


def dead_letter(rejected: Rejected, first_seen_at: datetime) -> DeadLetter:
    record = rejected.record
    headers = envelope.dead_letter_headers(
        list(record.headers or ()),
        reason=rejected.reason.value,
        error=rejected.error,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        first_seen_at=first_seen_at,
        attempts=rejected.attempts,
    )
    source = f"{record.topic}[{record.partition}]@{record.offset}"
    # Kafka keeps a record with neither key nor value, but a producer sends none (aiokafka
    # asserts): its letter has an empty value, or no try could ever send it.
    value = b"" if record.key is None and record.value is None else record.value
    return DeadLetter(record.key, value, headers, rejected.reason.value, source)


class KafkaDeadLetters:
    """Sends dead letters with an idempotent producer, every wait bounded."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        timeout_s: float = 10.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._timeout_s = timeout_s
        self._client_options = dict(client_options or {})
        self._producer: AIOKafkaProducer | None = None
        # The smallest letter the topic refused as too large: letters as large are sent smaller
        # at once, for a refusal by the broker also breaks the idempotent producer's sequence.
        self._refused_bytes: int | None = None

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns once the broker has acknowledged every letter (some perhaps in a smaller
        form, see the module); raises DeadLetterUnavailable when it does not within the
        timeout (the caller retries the whole batch)."""
        if not letters:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._started()
                sent: list[tuple[DeadLetter, asyncio.Future[object]]] = []
                for original in letters:
                    letter = self._fitting(original)
                    try:
                        sent.append((letter, await self._send(producer, letter)))
                    except _UNSENDABLE:  # refused by the client
                        await self._send_alone(producer, letter)
                for letter, ack in sent:
                    try:
                        await ack
                    except _UNSENDABLE:  # the broker refused its batch, maybe for another letter
                        await self._send_alone(producer, letter)
        except Exception as error:
            # A producer that failed is not reused: later sends can hang (aiokafka#759, #1017).
            # Whatever it raised, the letters are sent again, by a new one.
            await self.stop()
            raise DeadLetterUnavailable(f"{self.topic}: {type(error).__name__}: {error}") from error

    async def _send(self, producer: AIOKafkaProducer, letter: DeadLetter) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = await producer.send(
            self.topic, key=letter.key, value=letter.value, headers=letter.headers
        )
        return ack

    async def _send_alone(self, producer: AIOKafkaProducer, letter: DeadLetter) -> None:
        """Sends the letter by itself and awaits it, smaller each time it is refused."""
        while True:
            try:
                await (await self._send(producer, letter))
                return
            except _UNSENDABLE as error:
                if isinstance(error, KafkaError):
                    self._refused_bytes = min(self._refused_bytes or letter.size, letter.size)
                letter = self._smaller(letter, type(error).__name__)

    def _fitting(self, letter: DeadLetter) -> DeadLetter:
        while self._refused_bytes is not None and letter.size >= self._refused_bytes:
            letter = self._smaller(letter, f"not below {self._refused_bytes} bytes")
        return letter

    def _smaller(self, letter: DeadLetter, why: str) -> DeadLetter:
        smaller = letter.smaller()
        if smaller is None:  # only our own few headers left: only a bug gets here
            raise DeadLetterUnavailable(f"{self.topic}: the letter of {letter.source} is refused")
        log.error(
            "dead letter of %s refused (%s); sending it without its %s",
            letter.source,
            why,
            (dict(smaller.headers)[OMITTED_HEADER] or b"").decode(),
        )
        return smaller

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers,
                client_id="studentperf-recorder-dead-letters",
                enable_idempotence=True,
                acks="all",
                request_timeout_ms=int(self._timeout_s * 1000),
                **self._client_options,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._timeout_s)


async def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Creates the dead-letter topic when it is missing (brokers here do not auto-create).

    Whoever creates the main topic should create this one too; this only covers deployments
    that did not. Being refused is logged, not fatal: the topic may exist under rules (ACLs)
    that hide it, and a send that cannot land stalls the recorder visibly (degraded) anyway.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(client_options or {}))
    try:
        await admin.start()
        brokers = (await admin.describe_cluster()).get("brokers") or [None]
        replicas = min(3, len(brokers))
        response = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=replicas)]
        )
        for entry in response.to_object()["topic_errors"]:
            code = int(entry["error_code"])
            if code == 0:
                log.info("created dead-letter topic %s (%d partitions)", topic, partitions)
            elif code != TopicAlreadyExistsError.errno:
                log.warning(
                    "cannot create dead-letter topic %s: error %d %s",
                    topic,
                    code,
                    entry.get("error_message"),
                )
    except KafkaError as error:
        log.warning("cannot create dead-letter topic %s: %s", topic, error)
    except AttributeError:
        # aiokafka's way of saying the metadata names no controller yet (a broker that just
        # started): not a reason to stop the recorder.
        log.warning("cannot create dead-letter topic %s: no Kafka controller known yet", topic)
    finally:
        await admin.close()
