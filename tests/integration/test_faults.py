"""Fault tests: real broker, real database, real service processes, real signals.

The promise under test: every prediction answered OK ends up as exactly one row. Each test
runs load through the inference service while something fails, lets the system recover, and
prints `sent / acknowledged / spooled / stored / duplicates / lost`. Duplicates are counted
where they can appear (tests/integration/duplicates.py): rows of the child tables repeating
one of the same student, events in the topic beyond one per prediction id, and rows of
predictions no caller was answered for: `stored` must be `acknowledged` plus the calls the
client saw fail after their events were published, each named. Lost and duplicate rows must be
0; Kafka may hold an event twice only when a spool replay sent it again.

SIGTERM is checked from the client's side: calls the service had taken in before the stop
began (held there by a paused broker) end OK, health turns NOT_SERVING while they still run,
and calls still running when `STUDENTPERF_SHUTDOWN_GRACE_S` ends are cut off.
This module has a broker and a database server of its own, so killing or pausing them disturbs
no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference_service.spool import read_segment
from infra.devstack import KafkaBroker, PostgresServer
from infra.up import wait_serving
from studentperf import envelope
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.helpers import eventually, student, topic_size
from tests.integration.processes import Load, Tally, drive_load
from tests.integration.service_stack import ServiceStack


class Faults(ServiceStack):
    def report(self, name: str, load: Load, counts: Tally) -> None:
        print(f"\n{counts.line(name)}; refused {dict(load.failures) or 0}")
        print(f"  slowest call {load.slowest_s:.2f} s; refusals: {sorted(load.failure_details)}")
        if counts.problems():
            print("--- inference log\n" + self.inference.log_tail())
            print("--- recorder log\n" + self.recorder.log_tail())


@pytest.fixture
async def faults(
    own_kafka: KafkaBroker, own_postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> AsyncIterator[Faults]:
    stack = await Faults.create(own_kafka, own_postgres, model_path, tmp_path, "f")
    yield stack
    await stack.close()


async def under_load(
    faults: Faults, fault: Callable[[], object], *, before_s: float = 2.0, after_s: float = 3.0
) -> Load:
    """Runs load, applies `fault` (awaited if it is a coroutine) midway, returns the load."""
    stop = asyncio.Event()
    load_task = asyncio.create_task(drive_load(faults.address, stop))
    await asyncio.sleep(before_s)
    outcome = fault()
    if asyncio.iscoroutine(outcome):
        await outcome
    await asyncio.sleep(after_s)
    stop.set()
    return await load_task


def assert_promise_kept(counts: Tally) -> None:
    assert counts.problems() == []
    # A second copy of an event in the topic comes only from a spool replay of an event whose
    # first send landed after all (README, Guarantees).
    assert counts.duplicate_events <= counts.spooled


async def test_kafka_killed_under_load_and_back_10_s_later(faults: Faults) -> None:
    await faults.start()

    async def fault() -> None:
        faults.kafka.kill()
        await asyncio.sleep(10)
        await faults.kafka_back()

    load = await under_load(faults, fault)
    counts = await faults.tally(load, await faults.spooled())
    faults.report("kafka SIGKILL, 10 s down", load, counts)
    assert_promise_kept(counts)
    assert counts.spooled > 0, "calls answered while Kafka was away were spooled"
    assert not load.failures, "the spool answers while Kafka is away"


async def test_kafka_down_when_the_service_starts(faults: Faults) -> None:
    faults.kafka.stop()
    await faults.start(kafka_up=False)  # serves without Kafka: the spool takes them

    async def fault() -> None:
        await faults.kafka_back()

    load = await under_load(faults, fault, before_s=5)
    counts = await faults.tally(load, await faults.spooled())
    faults.report("kafka down at start, up after 5 s", load, counts)
    assert_promise_kept(counts)
    assert counts.spooled > 0
    assert not load.failures


async def test_postgres_stopped_10_s_under_load(faults: Faults) -> None:
    await faults.start()

    async def fault() -> None:
        faults.postgres.stop()
        await asyncio.sleep(10)
        await faults.postgres_back()

    load = await under_load(faults, fault)
    counts = await faults.tally(load, await faults.spooled())
    faults.report("postgres stopped 10 s", load, counts)
    assert_promise_kept(counts)
    assert not load.failures, "predictions do not depend on the database"


async def test_recorder_killed_mid_batch_and_restarted(faults: Faults) -> None:
    await faults.start()

    async def fault() -> None:
        await faults.recorder.kill_async()
        await asyncio.sleep(2)
        faults.recorder.start()

    load = await under_load(faults, fault)
    counts = await faults.tally(load, await faults.spooled())
    faults.report("recorder SIGKILL", load, counts)
    assert_promise_kept(counts)


async def test_inference_killed_with_events_in_its_spool(faults: Faults) -> None:
    await faults.start()
    faults.kafka.stop()  # from here on, events wait in the spool

    async def fault() -> None:
        await faults.inference.kill_async()

    load = await under_load(faults, fault, before_s=3, after_s=0.5)
    segments = sorted((faults.inference.log_path.parent / "spool").glob("*.spool"))
    assert segments, "the killed process left its spool behind"
    # Counted on disk: the killed process's counters died with it.
    spooled = sum(len(read_segment(path).records) for path in segments)
    await faults.kafka_back()
    faults.inference.start()  # replays what the killed process had spooled
    await wait_serving(faults.address)
    counts = await faults.tally(load, spooled)
    faults.report("inference SIGKILL with a spool", load, counts)
    assert_promise_kept(counts)


# uvloop is the default loop; asyncio's own is the fallback (inference_service.event_loop).
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_inference_sigterm_under_load_fails_no_call_in_flight(
    faults: Faults, loop: str
) -> None:
    faults.inference.env["STUDENTPERF_EVENT_LOOP"] = loop
    await faults.start()
    stop_began: list[float] = []
    spooled: list[int] = []

    async def fault() -> None:
        spooled.append(await faults.spooled())  # its counters go with the process
        stop_began.append(time.monotonic())
        faults.inference.signal(signal.SIGTERM)
        assert await faults.inference.wait_async(30) == 0

    load = await under_load(faults, fault, after_s=1)
    counts = await faults.tally(load, spooled[0])
    faults.report("inference SIGTERM", load, counts)
    # The calls running when the signal was sent, as the client saw them: each ended OK, or
    # was refused with nothing published (a call cut off after publishing would leave a row
    # no caller was answered for: `failed_after_publishing` names such rows).
    running = [c for c in load.calls if c.started < stop_began[0] < c.ended]
    ok = sum(c.code == "OK" for c in running)
    print(f"  calls running when SIGTERM was sent: {len(running)}, {ok} of them answered OK")
    assert_promise_kept(counts)
    assert counts.failed_after_publishing == []
    # Calls that arrive once shutdown began are refused: UNAVAILABLE, or CANCELLED for those
    # the transport had taken but no handler had started yet (grpc/grpc#41785).
    assert set(load.failures) <= {"UNAVAILABLE", "CANCELLED"}
    assert "stopped: 0 call(s) cut off in flight" in faults.inference.log_tail()
    assert f"({loop} event loop)" in faults.inference.log_path.read_text()


# Far longer than any test pauses the broker: a held call waits for Kafka, never spools.
HELD_PUBLISH_TIMEOUT_S = 300
HELD_CALLS = 8  # Predict calls, and one BatchPredict of HELD_BATCH students beside them
HELD_BATCH = 5


@contextlib.contextmanager
def paused(broker: KafkaBroker) -> Iterator[None]:
    """The broker SIGSTOPped: connections stay open, nothing is acknowledged."""
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def calls_in_flight(faults: Faults) -> int:
    metrics = await asyncio.to_thread(faults.status.metrics)
    return int(metrics["studentperf_inference_calls_in_flight"])


async def hold_calls(
    faults: Faults, stub: api_grpc.PredictionServiceAsyncStub, prefix: str
) -> list[asyncio.Task[list[str]]]:
    """Calls the service takes in and cannot answer while the broker is paused; returns once
    the service holds every one of them (its calls-in-flight gauge counts them)."""

    async def predict(i: int) -> list[str]:
        reply = await stub.Predict(api.PredictRequest(student=student(f"{prefix}-{i}")))
        return [reply.prediction.prediction_id]

    async def batch() -> list[str]:
        students = [student(f"{prefix}-b{i}") for i in range(HELD_BATCH)]
        answer = await stub.BatchPredict(api.BatchPredictRequest(students=students))
        return [r.prediction.prediction_id for r in answer.results]

    calls = [asyncio.create_task(predict(i)) for i in range(HELD_CALLS)]
    calls.append(asyncio.create_task(batch()))
    assert await eventually(lambda: calls_in_flight(faults), len(calls), timeout=60) == len(
        calls
    ), "the service did not take in every call"
    assert not any(c.done() for c in calls), "a call was answered with the broker paused"
    return calls


def held_start(
    faults: Faults, grace_s: float, publish_timeout_s: float = HELD_PUBLISH_TIMEOUT_S
) -> None:
    faults.inference.env.update(
        {
            "STUDENTPERF_PUBLISH_TIMEOUT_S": str(publish_timeout_s),
            "STUDENTPERF_SHUTDOWN_GRACE_S": str(grace_s),
        }
    )


async def http_health(faults: Faults) -> tuple[int, str]:
    """The inference service's /health: its status code and the state it gives."""
    code, body = await asyncio.to_thread(faults.status.get, "/health")
    return code, str(json.loads(body)["state"])


async def http_health_code(faults: Faults) -> int:
    return (await http_health(faults))[0]


async def test_sigterm_turns_health_not_serving_and_lets_taken_calls_finish_ok(
    faults: Faults,
) -> None:
    held_start(faults, grace_s=HELD_PUBLISH_TIMEOUT_S)
    await faults.start()
    health_seen: list[str] = []
    async with grpc.aio.insecure_channel(faults.address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), 30)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert await http_health(faults) == (200, "serving")
        with paused(faults.kafka):
            calls = await hold_calls(faults, stub, "held")
            faults.inference.signal(signal.SIGTERM)
            # Health says NOT_SERVING on both while every taken call still waits for Kafka.
            turned = await asyncio.wait_for(watch.read(), 60)
            health_seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(turned.status))
            watch.cancel()  # a watch is a call in flight too: it would hold the stop
            await eventually(lambda: http_health_code(faults), 503, timeout=60)
            stopping = await http_health(faults)
            health_seen.append(f"/health {stopping}")
            still_running = sum(not c.done() for c in calls)
            # A call sent now, after the stop began, is refused rather than taken in.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(api.PredictRequest(student=student("held-late")), timeout=30)
        answers = await asyncio.wait_for(asyncio.gather(*calls), 120)
    assert await faults.inference.wait_async(60) == 0
    ids = {uuid.UUID(i) for answer in answers for i in answer}
    load = Load("held", sent=HELD_CALLS + HELD_BATCH + 1, acknowledged=ids)
    load.failures[refused.value.code().name] += 1
    load.failed_students.add("held-late")
    counts = await faults.tally(load, spooled=0)
    faults.report("inference SIGTERM with calls held by a paused broker", load, counts)
    print(
        f"  health after SIGTERM: {health_seen}, with {still_running} of {len(calls)} taken "
        f"calls still running; a call sent then: {refused.value.code().name}"
    )
    assert turned.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert stopping == (503, "stopping")
    assert still_running == len(calls), "health turned only after calls had drained"
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert len(ids) == HELD_CALLS + HELD_BATCH, "every taken call ended OK"
    assert counts.problems() == []
    assert counts.failed_after_publishing == []


async def test_sigterm_cuts_off_calls_still_running_after_the_grace(faults: Faults) -> None:
    grace_s, publish_timeout_s = 2.0, 20.0
    held_start(faults, grace_s=grace_s, publish_timeout_s=publish_timeout_s)
    await faults.start()
    async with grpc.aio.insecure_channel(faults.address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        with paused(faults.kafka):
            calls = await hold_calls(faults, stub, "cut")
            faults.inference.signal(signal.SIGTERM)
            # While the broker is paused a call can end OK only by spooling, once the publish
            # timeout is up: ended before, or with an error, it was cut off by the stop.
            outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 120)
            # The stop still waits for the micro-batch of the cut Predict calls: its events are
            # spooled at the publish timeout (and sent at the next start).
            exit_code = await faults.inference.wait_async(120)
    codes = sorted(
        f"{o.code().name}: {o.details()}" if isinstance(o, grpc.aio.AioRpcError) else repr(o)
        for o in outcomes
    )
    stopped = [line for line in faults.inference.log_tail(10).splitlines() if "stopped:" in line]
    # What became of their events once the broker woke up is not promised either way.
    cut_students = {f"cut-{i}" for i in range(HELD_CALLS)} | {
        f"cut-b{i}" for i in range(HELD_BATCH)
    }
    load = Load("cut", sent=len(cut_students), failed_students=cut_students)
    for index, outcome in enumerate(outcomes):  # the last call is the batch
        if isinstance(outcome, grpc.aio.AioRpcError):
            load.failures[outcome.code().name] += 1 if index < HELD_CALLS else HELD_BATCH
    counts = await faults.tally(load, spooled=0, stall_timeout_s=10)
    faults.report(f"inference SIGTERM, calls held past a {grace_s:g} s grace", load, counts)
    print(f"  the held calls ended {codes}; exit code {exit_code}; {stopped}")
    # Ended with an error, each: gRPC cancels them when the grace is up (its clients see
    # UNAVAILABLE), none was answered OK.
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(errors) == len(calls), "a call held past the grace was not cut off"
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAVAILABLE}
    assert exit_code == 0
    # The cut Predict calls' micro-batch was spooled at the publish timeout, for the next
    # start; the batch call's publish was cancelled with it.
    assert stopped, "no stop line in the log"
    assert (
        f"stopped: {len(calls)} call(s) cut off in flight, {HELD_CALLS} event(s) left in the spool"
        in stopped[0]
    )
    assert counts.problems() == ["no call was acknowledged: nothing was tested"]


async def copy_topic_records(bootstrap: str, topic: str, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to `limit` (key, value) pairs already in `topic`, read from its beginning."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        found: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while len(found) < limit:
                batch = await consumer.getmany(timeout_ms=500, max_records=limit)
                found += [(r.key, r.value) for records in batch.values() for r in records]
        return found[:limit]
    finally:
        await consumer.stop()


async def test_poison_and_duplicate_records_injected_under_load(faults: Faults) -> None:
    await faults.start()
    bootstrap = faults.kafka.bootstrap_servers
    poison = [b"\x00not protobuf", b"", PredictionEvent(schema_version=99).SerializeToString()]
    copied: list[uuid.UUID] = []

    async def fault() -> None:
        # Events the service already published, produced again (a producer retry after a lost
        # acknowledgement looks just like this), with poison in between.
        again = await copy_topic_records(bootstrap, faults.topic, 500)
        copied.extend(uuid.UUID(envelope.decode(value).event_id) for _, value in again)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for index, (key, value) in enumerate(again):
                await producer.send(faults.topic, key=key, value=value)
                if index % 200 == 0:
                    await producer.send(faults.topic, key=key, value=poison[index // 200])
            await producer.flush()
        finally:
            await producer.stop()

    load = await under_load(faults, fault)
    counts = await faults.tally(load, await faults.spooled())
    dead_letters = f"{faults.topic}.dead-letter"
    dead = await eventually(lambda: topic_size(bootstrap, dead_letters), 3, timeout=30)
    faults.report(
        f"500 duplicates and 3 poison records injected; {dead} dead-lettered", load, counts
    )
    assert counts.problems() == []
    # The copies are counted in the topic (and stored once): the count sees duplicates.
    assert len(copied) == 500
    assert 500 <= counts.duplicate_events <= 500 + counts.spooled
    assert dead == 3
    async with asyncpg.create_pool(faults.database_url, min_size=1, max_size=1) as db:
        rows = await db.fetchval("SELECT count(*) FROM predictions")
    assert rows == counts.stored, "no row but the load's own"
