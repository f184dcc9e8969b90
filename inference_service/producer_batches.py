"""Producer batches of the service's own: every publish's records join one open batch per
partition, and all of them leave together, one generation at a time.

Why: each produce request costs the service a fixed share of CPU in aiokafka (building and
encoding it, the sender task's turns, reading and decoding the answer), and each record given
to `send` costs a chain of coroutines, a future and a RecordMetadata. Here a record costs an
append to a batch, and a batch one future, whatever it holds.

When a generation leaves: once the one before it is settled (acknowledged or failed: the
producer sends one request per broker at a time anyway, so records gather here while the last
request is out, as they would in aiokafka's own batches), and
- at the end of the event-loop turn in which its first record came, so that a lone call's
  event leaves at once and the calls of one turn go together; or
- while the process is busy (`Load.busy`: its event loop wanted a core most of the last tenth
  of a second), up to `hold_s` after its first record. A busy server's calls queue for the
  CPU anyway; holding their events a few milliseconds more makes fewer, fuller produce
  requests and so frees CPU for the calls themselves, where a fixed linger would cost a
  lightly loaded server's callers that wait on every call.
A partition's batches leave in the order they were opened, and a generation only after the one
before it is settled, so one student's events (one key, one partition) keep their order. A
batch that the producer does not take fails, and so do the later batches of its partition in
the generation: their records go to the spool behind it, never ahead of it.

What a publish waits on is the future of each batch its records joined (`add`): done once the
broker acknowledged the batch, or failed with what the producer raised. A batch the producer
never took (it was replaced, or stopped) fails with KafkaConnectionError.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from studentperf.envelope import KafkaRecord

# How long a busy process may hold a generation after its first record.
HOLD_S = 0.010
# What busy means: this share of the last window spent running or waiting for a CPU.
BUSY_SHARE = 0.8
_WINDOW_S = 0.1
# Open batches beyond which `add` refuses while a generation is out: the broker is not
# answering, and what is refused goes to the spool rather than into memory.
MAX_OPEN_BATCHES = 64


class RecordTooLarge(ValueError):
    """A record larger than a producer batch may be (max_batch_size)."""


class Load:
    """Whether the event loop's thread wanted a core most of the last complete window: the time
    it ran plus the time it waited for a CPU (/proc/self/schedstat), over the wall time. The
    wait counts because on a shared machine a saturated server gets less than a core: its own
    CPU time alone would call it idle exactly when the CPU is what its calls wait for. Where the
    kernel does not say, the process's CPU time alone."""

    def __init__(self, window_s: float = _WINDOW_S) -> None:
        self._window_s = window_s
        self._started = time.monotonic()
        self._wanted = _cpu_wanted_s()
        self._share = 0.0

    def busy(self) -> bool:
        now = time.monotonic()
        if now - self._started >= self._window_s:
            wanted = _cpu_wanted_s()
            self._share = (wanted - self._wanted) / (now - self._started)
            self._started, self._wanted = now, wanted
        return self._share >= BUSY_SHARE


def _cpu_wanted_s() -> float:
    """Seconds this thread has run or waited to run, since it started."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stats:
            ran_ns, waited_ns, _ = stats.read().split()
    except (OSError, ValueError):
        return time.process_time()
    return (int(ran_ns) + int(waited_ns)) / 1e9


class _Batch:
    __slots__ = ("acked", "builder")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody may wait any more (their publishes timed out): an outcome is still seen.
        self.acked.add_done_callback(_seen)


class OpenBatches:
    """One producer's open batches for one topic; `close` when the producer is replaced or
    stopped."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, *, load: Load, hold_s: float = HOLD_S
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._load = load
        self._hold_s = hold_s
        self._open: dict[int, list[_Batch]] = {}  # per partition, oldest first
        self._open_count = 0
        self._first_at = 0.0  # loop time of the open generation's first record
        self._timer: asyncio.TimerHandle | None = None
        self._out = 0  # batches of the generation under way, not yet settled
        self._handing: asyncio.Task[None] | None = None
        self._left: list[tuple[int, _Batch]] = []  # the generation's, not handed over yet
        self._closed = False

    def add(self, partition: int, record: KafkaRecord) -> asyncio.Future[None]:
        """Appends the record to the partition's open batch (a new one when there is none, or
        it is full) and returns that batch's future. Raises RecordTooLarge, or KafkaError when
        closed or too much waits already."""
        if self._closed:
            raise KafkaConnectionError("the Kafka producer was replaced or stopped")
        batches = self._open.get(partition)
        if batches is None:
            batches = self._open[partition] = []
        if not batches or not _append(batches[-1].builder, record):
            if self._out and self._open_count >= MAX_OPEN_BATCHES:
                raise KafkaTimeoutError(f"{self._open_count} producer batches wait already")
            batch = _Batch(self._producer.create_batch())
            if not _append(batch.builder, record):
                raise RecordTooLarge(f"an event of {len(record.value)} B is too large")
            batches.append(batch)
            self._open_count += 1
            if self._open_count == 1:
                self._first_at = asyncio.get_running_loop().time()
        self._schedule()
        return batches[-1].acked

    def _schedule(self) -> None:
        if self._timer or self._handing or self._out or self._closed or not self._open:
            return
        loop = asyncio.get_running_loop()
        delay = 0.0
        if self._load.busy():
            delay = max(0.0, self._first_at + self._hold_s - loop.time())
        # call_later(0) runs after the callbacks already due: this turn's publishes join first.
        self._timer = loop.call_later(delay, self._hand_over)

    def _hand_over(self) -> None:
        self._timer = None
        generation, self._open, self._open_count = self._open, {}, 0
        left = [(p, batch) for p, batches in generation.items() for batch in batches]
        self._out, self._left = len(left), left
        # Not a call's context: a generation serves the publishes of many calls.
        self._handing = asyncio.get_running_loop().create_task(
            self._send(left), context=contextvars.Context()
        )

    async def _send(self, left: list[tuple[int, _Batch]]) -> None:
        failed: dict[int, BaseException] = {}
        try:
            while left:
                partition, batch = left[0]
                if partition in failed:
                    self._settle(batch, failed[partition])
                else:
                    batch.builder.close()
                    try:
                        sent = await self._producer.send_batch(
                            batch.builder, self._topic, partition=partition
                        )
                    except KafkaError as error:  # a timeout while the broker is away, included
                        failed[partition] = error
                        self._settle(batch, error)
                    else:
                        sent.add_done_callback(lambda outcome, b=batch: self._settle(b, outcome))
                del left[0]
        finally:
            dropped = KafkaConnectionError("the Kafka producer was replaced before taking it")
            for _, batch in left:  # cancelled (close) before the producer took them
                self._settle(batch, dropped)
            left.clear()
            self._handing = None
            self._schedule()

    def _settle(self, batch: _Batch, outcome: asyncio.Future[Any] | BaseException) -> None:
        self._out -= 1
        acked = batch.acked
        if not acked.done():
            if isinstance(outcome, BaseException):
                acked.set_exception(outcome)
            elif outcome.cancelled():
                acked.set_exception(KafkaConnectionError("the producer dropped the batch"))
            elif (error := outcome.exception()) is not None:
                acked.set_exception(error)
            else:
                acked.set_result(None)
        if not self._out:
            self._schedule()

    async def close(self, *, flush_s: float = 0.0) -> None:
        """Hands over what is open, without holding it, and waits up to `flush_s` for every
        batch to settle; then fails every batch the producer has not taken. Later `add`s
        raise."""
        self._hold_s = 0.0
        if self._timer is not None:  # it may hold: reschedule without
            self._timer.cancel()
            self._timer = None
            self._schedule()
        try:
            async with asyncio.timeout(flush_s):
                while self._open or self._out:  # noqa: ASYNC110 (settling sets no event)
                    await asyncio.sleep(0.005)
        except TimeoutError:
            pass
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handing is not None:
            self._handing.cancel()
            await asyncio.gather(self._handing, return_exceptions=True)
        error = KafkaConnectionError("the Kafka producer was replaced or stopped")
        # A `_send` cancelled before its first step never reached its `finally`.
        for _, batch in self._left:
            self._settle(batch, error)
        self._left, self._handing = [], None
        for batches in self._open.values():
            for batch in batches:
                if not batch.acked.done():
                    batch.acked.set_exception(error)
        self._open, self._open_count = {}, 0


def _append(builder: Any, record: KafkaRecord) -> bool:
    appended = builder.append(
        key=record.key, value=record.value, timestamp=None, headers=record.headers
    )
    return appended is not None


def _seen(acked: asyncio.Future[None]) -> None:
    if not acked.cancelled():
        acked.exception()
