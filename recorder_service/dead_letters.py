"""The dead-letter topic: records that can never be written, kept with the reason.

A dead letter is the original record (key, value, headers) plus `dead-letter-*` headers naming
the reason and where the record came from (see studentperf.envelope). They are sent, and their
acknowledgement awaited, before the batch's offsets are committed: a crash in between sends
them again, and (source topic, partition, offset) tells the copies apart.
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
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from recorder_service.triage import Rejected
from studentperf import envelope

log = logging.getLogger(__name__)

VALUE_OMITTED_HEADER = "dead-letter-value-omitted"


class DeadLetterUnavailable(RuntimeError):
    """The dead-letter topic did not acknowledge in time; nothing may be committed yet."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str


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
    return DeadLetter(record.key, record.value, headers, rejected.reason.value)


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

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns once the broker has acknowledged every letter; raises DeadLetterUnavailable
        when it does not within the timeout (the caller retries the whole batch)."""
        if not letters:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._started()
                acks = [await self._send_one(producer, letter) for letter in letters]
                for ack in acks:
                    await ack
        except (KafkaError, TimeoutError) as error:
            # A producer that failed is not reused: later sends can hang (aiokafka#759, #1017).
            await self.stop()
            raise DeadLetterUnavailable(f"{self.topic}: {type(error).__name__}: {error}") from error

    async def _send_one(
        self, producer: AIOKafkaProducer, letter: DeadLetter
    ) -> asyncio.Future[object]:
        try:
            ack: asyncio.Future[object] = await producer.send(
                self.topic, key=letter.key, value=letter.value, headers=letter.headers
            )
        except MessageSizeTooLargeError:
            # The headers pushed a record at the size limit over it: keep the headers, which say
            # where the original still is, rather than block the partition forever.
            log.error("dead letter too large; sending it without its value: %s", letter.headers)
            ack = await producer.send(
                self.topic,
                key=letter.key,
                value=None,
                headers=[*letter.headers, (VALUE_OMITTED_HEADER, b"too large")],
            )
        return ack

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
    finally:
        await admin.close()
