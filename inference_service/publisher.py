"""Sending prediction events to Kafka with aiokafka and waiting for the broker's acknowledgement.

Producer settings, in one place, and why:
- `enable_idempotence=True` (implies `acks="all"`): an acknowledged record is on every in-sync
  replica, and the producer's own retries never write it twice.
- Records are not given to aiokafka's `send` one by one: they join producer batches of the
  service's own, one open per partition, and every partition's batch leaves together, once
  the batches before them are acknowledged (inference_service.producer_batches): a lone call's
  event at once, and under load what came while the last produce request was out, in one
  request. `send` cost a chain of coroutines, a future and a RecordMetadata per record; a batch
  costs one future. While the process is busy (most of a core), a generation is held up to
  10 ms after its first record: each produce request costs a fixed 0.2-0.7 ms of CPU in
  aiokafka whatever it carries, and a busy server's calls wait for the CPU anyway. A fixed
  `linger_ms` did the same for busy servers but cost a lightly loaded one's callers the linger
  on every call (5 ms: a third of c=16's calls/s); it is left at aiokafka's 0, and a closed
  batch does not linger anyway.
  Partitions are chosen exactly as `send` would (the default murmur2 partitioner on the key),
  so one student's events still share a partition, in order.
- A send that times out is not taken back (aiokafka cannot): the broker may store it later, and
  the replay of the spooled copy makes a second one (the recorder writes each prediction once).
  A replay that times out is not sent again on retry: the retry waits for the same sends
  (`delivery.PendingSends`), so a stall of any length adds at most that one extra copy (one
  more if the producer is replaced meanwhile: the replay then sends on the new one). Nor does
  a retry send again the batches the broker did acknowledge: only those of the partitions
  where a batch failed.
- `request_timeout_ms` = the publish timeout, and every wait is bounded by it again here:
  aiokafka has no `max.block.ms`, and with idempotence on its batches never expire
  (aio-libs/aiokafka#1101), so an unbounded wait could hang a call for the whole outage.
- A producer that failed to start, or hit a non-retriable error, is replaced rather than reused:
  its later sends can hang (aio-libs/aiokafka#759) or stay stuck on sequence errors (#1017).
What is not acknowledged in time is not lost: `delivery.DurablePublisher` spools it.
Each connection also asks the cluster for its id (a metadata request: aiokafka reads it from
metadata responses but does not keep it), so the spool can say which cluster its events are for.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.protocol.metadata import MetadataRequest

from inference_service.core import PublishUnavailable
from inference_service.delivery import FLUSH_BOUND_S, Handed, PendingSends
from inference_service.metrics import InferenceMetrics
from inference_service.partitioning import partition_of
from inference_service.producer_batches import Load, OpenBatches, RecordTooLarge
from inference_service.spool import Destination
from studentperf.envelope import KafkaRecord
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)


class KafkaPublisher:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        publish_timeout_s: float,
        extra_options: dict[str, Any] | None = None,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        self._topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._cluster_id = ""  # the last connected cluster's; kept while disconnected
        self._metrics = metrics
        self._timeout_s = publish_timeout_s
        self._producer_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": "studentperf-inference",
            "enable_idempotence": True,
            "acks": "all",
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": int(publish_timeout_s * 1000),
            **(extra_options or {}),
        }
        self._producer: AIOKafkaProducer | None = None
        self._batches: OpenBatches | None = None  # the producer's
        self._load = Load()
        self._background: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        # False from a publish the broker did not acknowledge in time until one it did: the
        # producer is kept through an outage (a timeout never replaces it), so `connected`
        # alone stays set while no broker answers. The kafka_connected gauge and /health read
        # both.
        self.answering = True

    @property
    def destination(self) -> Destination:
        """The topic, and the cluster once connected (its id stays known after a disconnect)."""
        return Destination(self._topic, self._bootstrap_servers, self._cluster_id)

    async def _start_one(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self._producer_options)
        try:
            await producer.start()
            self._cluster_id = await self._ask_cluster_id(producer)
        except BaseException:
            await self._stop_producer(producer)
            raise
        return producer

    async def _ask_cluster_id(self, producer: AIOKafkaProducer) -> str:
        client = producer.client
        node = client.get_random_node()
        if node is None:
            raise KafkaError("no broker known to ask for the cluster id")
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await client.send(node, MetadataRequest([]))
        except TimeoutError:
            raise KafkaTimeoutError("no answer to a metadata request") from None
        found = getattr(response, "cluster_id", None)  # metadata v2 on (Kafka 0.10.1)
        # A cluster too old to name itself is known by the addresses that lead to it.
        return str(found) if found else f"unnamed at {self._bootstrap_servers}"

    async def connect(self, *, give_up_after_s: float = float("inf")) -> None:
        """Starts a producer, retrying with backoff while the broker does not answer."""
        try:
            self._producer = await with_backoff(
                self._start_one,
                what="Kafka",
                retry_on=(KafkaError,),
                give_up_after_s=give_up_after_s,
            )
        except KafkaError as exc:
            raise PublishUnavailable(f"Kafka broker not reachable: {exc}") from exc
        self._batches = OpenBatches(self._producer, self._topic, load=self._load)
        self.answering = True
        self.connected.set()
        log.info("connected to Kafka")

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        """Returns once the broker acknowledged every record; raises PublishUnavailable.

        With `pending` (the spool's replayer), a retry of the same records after a timeout waits
        for the sends already handed to the producer instead of sending them again.
        """
        producer, batches = self._producer, self._batches
        if producer is None or batches is None:
            raise PublishUnavailable("not connected to Kafka")
        started = time.perf_counter()
        try:
            await self._publish(producer, batches, records, pending)
        except PublishUnavailable:
            if self._metrics is not None:
                self._metrics.publish_failed()
            raise
        if self._metrics is not None:
            self._metrics.published(time.perf_counter() - started)

    async def _publish(
        self,
        producer: AIOKafkaProducer,
        batches: OpenBatches,
        records: Sequence[KafkaRecord],
        pending: PendingSends | None,
    ) -> None:
        acks: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                if pending is None:
                    acks = await self._hand_over(producer, batches, records)
                else:
                    waiting, again = pending.left(producer, records)
                    sends = list(waiting)
                    try:
                        await self._send_batches(producer, again, sends)
                    finally:
                        # Kept even when the timeout cuts the hand-over short: the batches
                        # handed over so far are in the producer, not to be handed over again.
                        handed = {id(r) for send in sends for r in send.records}
                        pending.keep(producer, sends, [r for r in again if id(r) not in handed])
                    acks = [send.ack for send in sends]
                if acks:
                    await _all_done(acks)
            for ack in acks:
                ack.result()  # raises what the broker answered, if not an acknowledgement
            self.answering = True
        except (TimeoutError, KafkaTimeoutError):
            self.answering = False
            for ack in acks:
                ack.add_done_callback(_retrieve)
            raise PublishUnavailable(
                f"the Kafka broker did not acknowledge {len(records)} event(s) "
                f"within {self._timeout_s:g} s"
            ) from None
        except KafkaError as exc:
            await self._replace(producer, exc)
            raise PublishUnavailable(f"Kafka refused the event(s): {exc}") from exc

    async def _hand_over(
        self, producer: AIOKafkaProducer, batches: OpenBatches, records: Sequence[KafkaRecord]
    ) -> list[asyncio.Future[Any]]:
        """The records join the producer's open batches (inference_service.producer_batches);
        the futures to wait on, one per batch they joined."""
        # The partition is chosen here, as `send` would choose it (inference_service.partitioning).
        partitions = len(await producer.partitions_for(self._topic))
        try:
            acks = [batches.add(partition_of(r.key, partitions), r) for r in records]
        except RecordTooLarge as error:
            raise PublishUnavailable(str(error)) from None
        return list(dict.fromkeys(acks))  # many records share one batch's future

    async def _send_batches(
        self, producer: AIOKafkaProducer, records: Sequence[KafkaRecord], sends: list[Handed]
    ) -> None:
        """Hands the records to the producer in per-partition batches, closed so that they
        leave without lingering (aiokafka sends a closed batch at once); adds each to `sends`
        as soon as the producer took it."""
        if not records:
            return
        partitions = len(await producer.partitions_for(self._topic))
        open_batches: dict[int, tuple[Any, list[KafkaRecord]]] = {}

        async def send(partition: int) -> None:
            batch, batch_records = open_batches.pop(partition)
            batch.close()
            ack = await producer.send_batch(batch, self._topic, partition=partition)
            sends.append(Handed(partition, batch_records, ack))

        for record in records:
            partition = partition_of(record.key, partitions)
            opened = open_batches.get(partition)
            if opened is not None and not _append(opened[0], record):
                await send(partition)  # full: it leaves, and the record starts the next one
                opened = None
            if opened is None:
                opened = open_batches[partition] = (producer.create_batch(), [])
                if not _append(opened[0], record):
                    raise PublishUnavailable(f"an event of {len(record.value)} B is too large")
            opened[1].append(record)
        for partition in list(open_batches):
            await send(partition)

    async def _replace(self, broken: AIOKafkaProducer, error: KafkaError) -> None:
        if self._producer is not broken:
            return  # another call replaced it already
        log.warning("replacing the Kafka producer after %r", error)
        batches, self._producer, self._batches = self._batches, None, None
        self.connected.clear()
        for work in (self._stop_producer(broken), self.connect()):
            task = asyncio.create_task(work, context=contextvars.Context())  # not the call's ids
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if batches is not None:
            # Only once the replacement is under way, and to its end: a call cancelled here (a
            # deadline, the replayer at stop) must leave neither the publisher without a
            # producer nor the old batches unfailed.
            await asyncio.shield(batches.close())

    async def _stop_producer(self, producer: AIOKafkaProducer, timeout_s: float = 5.0) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout_s)
        except TimeoutError:
            log.warning("a Kafka producer did not stop within %.1f s; dropped", timeout_s)
            _drop(producer)
        except asyncio.CancelledError:
            # stop() cancels a replacement's stop of the producer it replaced: dropped too.
            _drop(producer)
            raise
        except KafkaError as exc:
            log.warning("stopping a Kafka producer: %r", exc)

    async def stop(self, timeout_s: float = FLUSH_BOUND_S) -> None:
        """Flushes what is pending and disconnects, waiting at most `timeout_s`."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        producer, self._producer = self._producer, None
        batches, self._batches = self._batches, None
        self.connected.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # one bound for both: they flush the same batches
        if batches is not None:
            await batches.close(flush_s=timeout_s)
        if producer is not None:
            await self._stop_producer(producer, max(0.0, deadline - loop.time()))


# Producers being ended after a stop that timed out (referenced, so that no task is collected).
_ABANDONED: set[asyncio.Task[None]] = set()


def _drop(producer: AIOKafkaProducer) -> None:
    ending = asyncio.create_task(_abandon(producer), context=contextvars.Context())
    _ABANDONED.add(ending)
    ending.add_done_callback(_ABANDONED.discard)


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Ends what a producer's stop() leaves running when its flush is cut short: its sender,
    which would retry the unsent batches for ever (against a broker that may never come back,
    one more such producer per replacement during an outage), its metadata sync and its
    connections. aiokafka has no stop without a flush, hence its private parts. The connections
    are aborted, not closed: a close waits for a broker that does not read to take what is
    buffered. The sender's end still waits for its requests in flight to back off (about a
    second), so this runs in the background, not within the stop's bound. The batches' own
    futures are failed; the calls waiting on them were answered by OpenBatches.close."""
    try:
        # A stop cancelled before its first step never marked it closed: aiokafka would report
        # it unclosed when it is collected.
        producer._closed = True
        client = producer.client
        for connection in list(client._conns.values()):
            if connection._writer is not None:
                connection._writer.transport.abort()
        if producer._sender is not None:
            await producer._sender.close()
        await client.close()
        accumulator = producer._message_accumulator
        # A batch sent once and queued again keeps the done-callback of its first send, which
        # removes it from the pending set it has left: put it back, or failing it raises there.
        for queued in accumulator._batches.values():
            accumulator._pending_batches.update(queued)
        # Ends stop()'s flush, which waits on them.
        accumulator.fail_all(KafkaConnectionError("the producer was dropped"))
    except Exception:  # a background task: nobody else would see it
        log.exception("ending a dropped Kafka producer failed")


def _all_done(acks: Sequence[asyncio.Future[Any]]) -> asyncio.Future[None]:
    """A future done once every ack is. Cancelling it (a timeout) leaves the acks alone, for a
    retry to wait on: not gather, which would cancel them.

    It waits on one ack at a time, from the last: a producer batch's acks are all set at once,
    so when the last record's is done the records before it in its batch are too. That takes
    about one callback (one event-loop handle) per producer batch rather than one per record;
    any ack found not done yet is waited for in its turn, so the result does not rest on that
    order, only the cost does.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(acks)  # acks[left:] are done

    def wait_next(_: object = None) -> None:
        nonlocal left
        while left:
            ack = acks[left - 1]
            if not ack.done():
                ack.add_done_callback(wait_next)
                return
            left -= 1
        if not done.done():
            done.set_result(None)

    wait_next()
    return done


def _retrieve(ack: asyncio.Future[Any]) -> None:
    """Marks a late send's outcome as seen: its records are in the spool either way."""
    if not ack.cancelled():
        ack.exception()


def _append(batch: Any, record: KafkaRecord) -> bool:
    appended = batch.append(
        key=record.key, value=record.value, timestamp=None, headers=record.headers
    )
    return appended is not None
