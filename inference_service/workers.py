"""`python -m inference_service`: one server process, or STUDENTPERF_WORKERS of them on one port.

A grpc.aio server answers on one core; N workers use N. As in grpc's multiprocessing example,
the supervisor (this process) binds the port with SO_REUSEPORT without listening, which reserves
it (and picks it, for port 0) for as long as it runs, and starts the workers, each of which
builds its own server on that port with `grpc.so_reuseport`: the kernel spreads connections
over them. SO_REUSEPORT would let a second service with workers share the port too, so the
supervisor also holds the port's lock (inference_service.port_lock): a second live supervisor
fails to take it and refuses to start, while a killed one's dies with it, so a service restarted
at once starts beside the old workers still finishing their calls. Workers are spawned (fresh
interpreters, not forks) and this process never imports grpc, so no gRPC state is ever shared
or inherited.

Each worker is a whole service (inference_service.server): its own model, Kafka producer and spool
folder, `<spool_dir>/worker-<i>` for slot i (inference_service.spool_folders), and runs on the loop
STUDENTPERF_EVENT_LOOP names (uvloop by default, inference_service.event_loop); the supervisor,
which answers no calls, runs on asyncio's. On SIGTERM (or SIGINT) the supervisor's /health turns 503
and every worker gets SIGTERM and stops as one process does: health NOT_SERVING first, in-flight
calls finished, every answered event acknowledged or spooled. A worker that dies otherwise is
replaced: its successor reopens the slot's spool folder and replays what it left there (after 0.5 s,
doubling up to 30 s while successors keep dying young). A worker that cannot start at all (exit
status 2: bad settings, no model) before its slot ever served stops the whole service with status 2.
A worker whose supervisor is gone (killed) stops by itself, as on SIGTERM, within half a second; a
service started again meanwhile waits for it to let go of its spool folder (`_stop_bound_s`). One
process (STUDENTPERF_WORKERS=1) runs with no supervisor, as before workers existed; either way,
spool folders left by another worker count are gathered first (inference_service.spool_folders).

STUDENTPERF_INFERENCE_HEALTH_PORT is served by the supervisor for all workers: each worker
serves its own endpoint on a free loopback port and tells the supervisor which. /health is 200
while no stop began, at least one worker serves and every worker that runs is healthy (a slot
whose successor is still starting does not count against it), with each worker's detail;
/metrics is every worker's metrics, each sample labelled `worker="<i>"` (sum them without that
label for the service's), plus `studentperf_inference_worker_info{worker,pid}`,
`..._worker_up{worker}` and `..._worker_restarts_total{worker}`. Requests to the endpoint are
answered one at a time, each asking the workers (at most a second each).

Why this module is over 300 lines: the supervisor is one state machine over its slots
(start, replace, stop, the health endpoint that reports them) whose parts share that state, and
the worker side (`_work`, `_serve_slot`) is the other end of the same pipe; each is read beside
the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from inference_service import event_loop
from inference_service.metrics import PREFIX
from inference_service.port_lock import hold_port
from inference_service.settings import Settings
from inference_service.spool_folders import gather_orphans, slot_folder
from inference_service.stop_bound import longest_stop_s
from studentperf.config import ConfigError, configure_logging
from studentperf.durable import hold_folder_lock, hold_folder_lock_once_free
from studentperf.health_http import serve_health

log = logging.getLogger(__name__)

CANNOT_START = 2
FIRST_RESTART_DELAY_S = 0.5
LAST_RESTART_DELAY_S = 30.0
# A worker that ran this long died of something new: its successor starts without backoff.
STEADY_S = 60.0
# Past its longest graceful stop and this margin, a worker is killed: its spool keeps what it had.
STOP_MARGIN_S = 10.0


def _stop_bound_s(settings: Settings) -> float:
    """How long a worker may take to stop, on SIGTERM or once its supervisor is gone (its
    calls finished, their events published or spooled, its connections closed), holding its
    spool folder meanwhile: the supervisor kills one that takes longer, and a service started
    again at once after its supervisor was killed waits this long for such a folder before it
    gives up on it."""
    return longest_stop_s(settings) + STOP_MARGIN_S


def main() -> None:
    try:
        configure_logging(os.environ)
        settings = Settings.from_env(os.environ)
        if settings.workers == 1:
            code = _serve_alone(settings)
        else:
            code = asyncio.run(Supervisor(settings).run())
    except ConfigError as error:
        log.error("cannot start: %s", error)
        code = CANNOT_START
    raise SystemExit(code)


def _serve_alone(settings: Settings) -> int:
    spool_dir = Path(settings.spool_dir)
    lock = hold_folder_lock(spool_dir, "spool folder")
    try:
        gather_orphans(spool_dir, 1, _stop_bound_s(settings))
    finally:
        os.close(lock)  # the spool takes it again when it opens
    # Here, not at the top: a supervisor must never load grpc (see the module docstring).
    from inference_service.core import PublishUnavailable
    from inference_service.server import serve
    from studentperf.model_artifact import ModelArtifactError

    try:
        event_loop.run(serve(settings), settings.event_loop)
    except (ModelArtifactError, PublishUnavailable) as error:
        log.error("cannot start: %s", error)
        return CANNOT_START
    return 0


# -- a worker ---------------------------------------------------------------------------------


def _work(
    settings: Settings, slot: int, status: bool, reports: Connection, supervisor: int
) -> None:
    """A worker process's entry point (spawned by the process `supervisor`)."""
    configure_logging(os.environ)
    from inference_service.core import PublishUnavailable
    from studentperf.model_artifact import ModelArtifactError

    try:
        event_loop.run(
            _serve_slot(settings, slot, status, reports, supervisor), settings.event_loop
        )
    except (ConfigError, ModelArtifactError, PublishUnavailable) as error:
        log.error("worker %d cannot start: %s", slot, error)
        raise SystemExit(CANNOT_START) from None


async def _serve_slot(
    settings: Settings, slot: int, status: bool, reports: Connection, supervisor: int
) -> None:
    """Serves until SIGTERM, or until the supervisor is gone: its pid is passed in, not read
    here, as a supervisor that died while this worker was starting has left it another
    parent already."""
    from inference_service.server import start_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the server starts: a SIGTERM during start-up stops it gracefully once started.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Only a worker of this slot holds its folder; one that does now is a killed supervisor's,
    # stopping: waited for, not taken for a service that cannot start. A stop, or the end of
    # this worker's supervisor, ends the wait as it would end the serving.
    lock = await asyncio.to_thread(
        hold_folder_lock_once_free,
        Path(settings.spool_dir),
        "spool folder",
        _stop_bound_s(settings),
        lambda: not stop.is_set() and os.getppid() == supervisor,
    )
    if lock is None:
        log.info("worker %d: stopped while it waited for its spool folder", slot)
        return
    os.close(lock)  # the spool takes it again when it opens
    running = await start_server(settings)
    try:  # whatever happens from here, the server stops, or the process would never end
        status_port = 0
        if status:
            assert running.status is not None
            running.status_server = await running.status.serve("127.0.0.1", 0)
            status_port = running.status_server.sockets[0].getsockname()[1]
        try:
            reports.send((os.getpid(), status_port))
        except OSError:  # the supervisor's end is closed: it is gone
            stop.set()
        else:
            log.info(
                "worker %d (pid %d) serving on the %s event loop, spool %s",
                slot,
                os.getpid(),
                event_loop.running_loop_name(),
                settings.spool_dir,
            )
        while not stop.is_set() and os.getppid() == supervisor:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        if os.getppid() != supervisor:
            log.error("worker %d: the supervisor is gone; stopping", slot)
    finally:
        await running.stop(settings.shutdown_grace_s)
    log.info(
        "worker %d stopped: %d call(s) cut off in flight, %d event(s) left in the spool",
        slot,
        running.core.cut_off,
        running.publisher.spool.records,
    )


# -- the supervisor ---------------------------------------------------------------------------


class SpawnFailed(Exception):
    """No pipe or no process for a worker (out of file descriptors, or of processes)."""


@contextlib.contextmanager
def _may_pass() -> Iterator[None]:
    """An OSError in here is a state of the machine that may pass (no file descriptors,
    processes or memory), so it becomes SpawnFailed: the slot is tried again later."""
    try:
        yield
    except OSError as error:
        raise SpawnFailed(error) from error


@dataclass
class Slot:
    number: int
    pid: int = 0
    status_port: int = 0
    ready: bool = False  # its current worker serves
    served: bool = False  # some worker of this slot has served
    restarts: int = 0
    started_at: float = 0.0


@contextlib.contextmanager
def reserve_port(listen_address: str) -> Iterator[str]:
    """Binds (without listening) the address's port with SO_REUSEPORT, so only processes of
    this user that also set it (the workers; another service's are kept out by
    inference_service.port_lock) can bind it meanwhile; yields host:port."""
    host, _, port = listen_address.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = found[0]
        holder = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise ConfigError(f"STUDENTPERF_LISTEN_ADDRESS={listen_address!r}: {error}") from None
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind(address)
        except OSError as error:
            raise ConfigError(
                f"STUDENTPERF_LISTEN_ADDRESS: cannot listen on {listen_address}: "
                f"{error.strerror}: is another service there? Stop it, or set another address"
            ) from None
        yield f"{host}:{holder.getsockname()[1]}"
    finally:
        holder.close()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots = [Slot(i) for i in range(settings.workers)]
        self.stopping = False
        self._spawn = multiprocessing.get_context("spawn")

    async def run(self) -> int:
        spool_dir = Path(self.settings.spool_dir)
        # Held while the workers run: one process, or another supervisor, on this spool
        # folder refuses to start.
        lock = await asyncio.to_thread(hold_folder_lock, spool_dir, "spool folder")
        try:
            # The port before the orphans: a start refused for an address another service
            # with workers holds is refused at once, before it moves any spool segment.
            with reserve_port(self.settings.listen_address) as address, hold_port(address):
                await asyncio.to_thread(
                    gather_orphans, spool_dir, self.settings.workers, _stop_bound_s(self.settings)
                )
                return await self._supervise(address)
        finally:
            os.close(lock)

    async def _supervise(self, address: str) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        status_server = None
        if self.settings.health_port:
            host, port = self.settings.health_host, self.settings.health_port
            try:
                # Off the loop: a hung worker's second of silence must not hold up the
                # supervisor's signals and its workers' exits.
                status_server = await serve_health(
                    self.health, self.metrics, host, port, blocking=True
                )
            except OSError as error:
                raise ConfigError(f"cannot serve health on {host}:{port}: {error}") from None
        keepers = [asyncio.create_task(self._keep(slot, address, stop)) for slot in self.slots]
        log.info("listening on %s with %d workers", address, len(self.slots))
        try:
            await stop.wait()
            self.stopping = True
            log.info("stopping: every worker finishes its in-flight calls")
            # Every keeper to its end, whatever one of them raised: each waits for its worker.
            ended = await asyncio.gather(*keepers, return_exceptions=True)
        finally:
            if status_server is not None:
                status_server.close()
        codes = []
        for slot, outcome in zip(self.slots, ended, strict=True):
            if isinstance(outcome, BaseException):
                log.error("worker %d's keeper failed", slot.number, exc_info=outcome)
                codes.append(1)
            else:
                codes.append(outcome)
        log.info("stopped: all %d workers", len(self.slots))
        return max(codes)

    async def _keep(self, slot: Slot, address: str, stop: asyncio.Event) -> int:
        """Runs the slot's worker, and its successors, until `stop`; returns 0, or CANNOT_START
        when the slot's first worker could not start (which sets `stop`)."""
        settings = replace(
            self.settings,
            listen_address=address,
            spool_dir=str(slot_folder(Path(self.settings.spool_dir), slot.number)),
            health_port=0,
        )
        delay = FIRST_RESTART_DELAY_S
        while True:
            try:
                code: int | None = await self._run_worker(slot, settings, stop)
            except SpawnFailed as error:
                # No pipe or no process (out of file descriptors, or of processes): a state
                # of the machine that may pass, so tried again as a worker that died would be.
                log.error("worker %d could not be started: %s", slot.number, error)
                code, slot.started_at = None, time.monotonic()
            except Exception:
                # A fault of the supervisor's own (its worker was killed): it would fail again
                # on every try, so every worker stops and the service exits, to be restarted
                # and seen rather than retry for ever behind a /health that says serving.
                log.exception("worker %d: keeping it failed: stopping every worker", slot.number)
                stop.set()
                return 1
            if stop.is_set():
                return 0
            if code == CANNOT_START and not slot.served:
                log.error("worker %d cannot start (see above): stopping every worker", slot.number)
                stop.set()
                return CANNOT_START
            lived = time.monotonic() - slot.started_at
            delay = FIRST_RESTART_DELAY_S if lived > STEADY_S else delay
            if code is not None:
                log.error(
                    "worker %d (pid %d) exited with status %s after %.0f s; its successor "
                    "starts in %.1f s and replays its spool",
                    slot.number,
                    slot.pid,
                    code,
                    lived,
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return 0
            slot.restarts += 1
            delay = min(delay * 2, LAST_RESTART_DELAY_S)

    async def _run_worker(self, slot: Slot, settings: Settings, stop: asyncio.Event) -> int:
        """Starts one worker for the slot and returns its exit status once it has ended;
        SIGTERMs it when `stop` is set."""
        with _may_pass():
            receive, send = self._spawn.Pipe(duplex=False)
        status = bool(self.settings.health_port)
        process: BaseProcess = self._spawn.Process(
            target=_work,
            args=(settings, slot.number, status, send, os.getpid()),
            name=f"inference-worker-{slot.number}",
        )
        with _may_pass():
            try:
                process.start()
            except BaseException:
                receive.close()
                raise
            finally:
                send.close()  # the worker holds the only writer: its end reads as EOF when it dies
        slot.pid, slot.ready, slot.started_at = process.pid or 0, False, time.monotonic()
        with _may_pass():  # epoll refusing the worker's sentinel: no memory
            await self._watch(slot, process, receive, stop)
        return process.exitcode if process.exitcode is not None else -1

    async def _watch(
        self, slot: Slot, process: BaseProcess, receive: Connection, stop: asyncio.Event
    ) -> None:
        """Takes the worker's report and waits for it to end, SIGTERMing it when `stop` is set
        and killing it if it outlives its grace; the worker has ended when this returns."""
        loop = asyncio.get_running_loop()
        ended, reported = asyncio.Event(), asyncio.Event()
        listening_to_reports = True
        stop_by: float | None = None
        killed = False
        try:
            loop.add_reader(process.sentinel, ended.set)
            loop.add_reader(receive.fileno(), reported.set)
            while not ended.is_set():
                waits = [ended.wait()]
                if listening_to_reports:
                    waits.append(reported.wait())
                if stop_by is None:
                    waits.append(stop.wait())
                timeout = None if stop_by is None else max(stop_by - time.monotonic(), 0)
                if killed:
                    timeout = None
                await _first_of(waits, timeout)
                if listening_to_reports and reported.is_set():
                    loop.remove_reader(receive.fileno())
                    listening_to_reports = False
                    self._take_report(slot, receive)
                if stop.is_set() and stop_by is None:
                    process.terminate()  # SIGTERM: a graceful stop
                    stop_by = time.monotonic() + _stop_bound_s(self.settings)
                elif stop_by is not None and not killed and time.monotonic() >= stop_by:
                    log.error("worker %d did not stop in time: killing it", slot.number)
                    process.kill()
                    killed = True
        except BaseException:
            # The worker must not run on untracked, beside a successor for its slot and spool
            # folder.
            process.kill()
            raise
        finally:
            loop.remove_reader(process.sentinel)
            if listening_to_reports:
                loop.remove_reader(receive.fileno())
            receive.close()
            # Ended (its sentinel said so) or killed just now: at once, and on the loop, not
            # behind whatever else waits for a thread.
            process.join()
            slot.ready = False

    def _take_report(self, slot: Slot, receive: Connection) -> None:
        try:
            pid, slot.status_port = receive.recv()
        except (EOFError, OSError):
            return  # it died before serving
        slot.ready = slot.served = True
        log.info("worker %d (pid %d) serving", slot.number, pid)

    # -- the HTTP endpoint, for all workers ---------------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        workers: list[dict[str, object]] = []
        for slot in self.slots:
            entry: dict[str, object] = {"worker": slot.number, "pid": slot.pid}
            entry["restarts"] = slot.restarts
            found = self._ask(slot, "/health")
            if found is None:
                entry.update(healthy=False, state="starting" if not self.stopping else "stopped")
            else:
                code, body = found
                entry["healthy"] = code == 200
                with contextlib.suppress(ValueError):
                    entry.update(json.loads(body))
            workers.append(entry)
        running = [w for w in workers if w.get("state") != "starting"]
        serving = [w for w in running if w["healthy"]]
        healthy = not self.stopping and bool(serving) and len(serving) == len(running)
        if self.stopping:
            state = "stopping"
        elif not serving:
            state = "starting" if not running else "not serving"
        elif len(serving) < len(running):
            state = "not serving"  # a worker refuses calls: a share of every client's fail
        else:
            state = "serving" if len(serving) == len(workers) else "serving, worker(s) starting"
        spooled = [w.get("spool_events") for w in workers]
        detail: dict[str, object] = {
            "state": state,
            "workers_serving": len(serving),
            "workers": workers,
            "spool_events": sum(n for n in spooled if isinstance(n, int)),
        }
        return healthy, detail

    def metrics(self) -> str:
        texts = []
        for slot in self.slots:
            found = self._ask(slot, "/metrics")
            if found is not None and found[0] == 200:
                texts.append((slot.number, found[1]))
        return generate_latest(Families(merge_worker_metrics(texts), self._own_metrics())).decode()

    def _own_metrics(self) -> list[Metric]:
        info = GaugeMetricFamily(
            PREFIX + "worker_info", "A worker process: its slot and pid.", labels=["worker", "pid"]
        )
        up = GaugeMetricFamily(
            PREFIX + "worker_up", "1 while the slot's worker serves.", labels=["worker"]
        )
        restarts = CounterMetricFamily(
            PREFIX + "worker_restarts",
            "Workers replaced after one died.",
            labels=["worker"],
        )
        for slot in self.slots:
            info.add_metric([str(slot.number), str(slot.pid)], 1)
            up.add_metric([str(slot.number)], 1 if slot.ready else 0)
            restarts.add_metric([str(slot.number)], slot.restarts)
        return [info, up, restarts]

    def _ask(self, slot: Slot, path: str) -> tuple[int, str] | None:
        """(status, body) of the slot's worker's endpoint; None when it does not answer."""
        if not slot.ready or not slot.status_port:
            return None
        url = f"http://127.0.0.1:{slot.status_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return None


def merge_worker_metrics(texts: Iterable[tuple[int, str]]) -> list[Metric]:
    """Each worker's families merged into one of each name, every sample labelled `worker`."""
    families: dict[str, Metric] = {}
    for number, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            for sample in family.samples:
                labels = {"worker": str(number), **sample.labels}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
    return list(families.values())


class Families(Collector):
    def __init__(self, *groups: list[Metric]) -> None:
        self._families = [family for group in groups for family in group]

    def collect(self) -> Iterable[Metric]:
        return self._families


async def _first_of(waits: list[Coroutine[Any, Any, Any]], timeout: float | None) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
