"""What every dev-stack server shares: the project's folders, free ports, and `Service`, one
server process supervised by this Python process (started through `infra.processes`, waited
for until it answers, stopped in order, its log's errors quoted when it fails).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from infra.processes import REPO_ROOT, ChildProcess

LOCALHOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_KAFKA_CONTROLLER_PORT = 9093
DEFAULT_POSTGRES_PORT = 5432
DEFAULT_DATABASE = "studentperf"
POSTGRES_SUPERUSER = "postgres"


class ServiceError(RuntimeError):
    """A service could not be started, did not become ready, or failed."""


def repo_root() -> Path:
    """The repository's top folder (the parent of ``infra/``)."""
    return REPO_ROOT


def local_dir() -> Path:
    """The git-ignored folder holding everything project-local (``<repo>/.local``)."""
    return repo_root() / ".local"


# Below Linux's default ephemeral range (32768-60999): the kernel never hands these to an
# outgoing connection, so a port chosen here cannot be taken by some client's socket between
# the choice and the server's bind (CI saw Kafka's controller lose its port that way).
_CHOSEN_PORTS = range(20000, 32768)
# Handed out by this process already: two ports asked for before either is bound (a broker's
# and its controller's) must differ, and a free port that is not bound yet looks free again.
_handed_out: set[int] = set()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now and that this process has not handed out before (for
    tests; another process may still take it)."""
    for _ in range(50):
        port = random.choice(_CHOSEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_end(path: Path, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


_ERROR_MARKERS = (" ERROR ", " FATAL ", "FATAL:", "PANIC:", "ERROR:", "Caused by:", "Exception: ")


def _error_lines(lines: list[str], limit: int) -> list[str]:
    """The last ``limit`` lines that report an error (stack frames left out)."""
    hits = [
        line
        for line in lines
        if any(marker in line for marker in _ERROR_MARKERS) and not line.startswith("\tat ")
    ]
    return hits[-limit:]


# Services still running when the interpreter exits (a test run aborted half-way, an unhandled
# exception in the CLI) are stopped so no broker or postmaster outlives its owner by accident.
_live_services: set[Service] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_live_services):
        with contextlib.suppress(Exception):
            service.stop(timeout=10)


class Service(ABC):
    """One server process, started and supervised by this Python process."""

    name: ClassVar[str] = "service"

    def __init__(self, state_dir: Path | str, *, host: str, port: int) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self._child: ChildProcess | None = None

    # -- to implement --------------------------------------------------------------------------

    @abstractmethod
    def start(self) -> None:
        """Prepare the state folder (first time only) and launch the server process."""

    @abstractmethod
    async def _probe(self) -> bool:
        """One readiness check; True when the service answers real requests."""

    @abstractmethod
    def log_files(self) -> list[Path]:
        """The service's log files, most useful first (their tails go into error messages)."""

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGTERM

    # -- process handling ----------------------------------------------------------------------

    @property
    def stdout_path(self) -> Path:
        return self.state_dir / f"{self.name}.out"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def returncode(self) -> int | None:
        return self._child.returncode if self._child is not None else None

    def _launch(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self._child = ChildProcess(
            as_user(user, cmd),
            env=env,
            cwd=cwd or self.state_dir,
            log_path=self.stdout_path,
            new_session=True,
            header=True,
        )
        self._child.start()
        _live_services.add(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown; SIGKILL when it takes longer than ``timeout`` seconds."""
        if self._child is not None:
            self._child.stop(timeout, self._stop_signal())
        _live_services.discard(self)

    def kill(self) -> None:
        """Crash the service (SIGKILL, no shutdown work), e.g. for fault-injection tests."""
        if self._child is not None:
            self._child.kill()
        _live_services.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        """Error lines and the last ``lines`` lines of each log file (for error messages)."""
        parts = []
        for path in [*self.log_files(), self.stdout_path]:
            content = _read_end(path)
            if not any(line.strip() for line in content):
                continue
            errors = _error_lines(content, 12)
            if errors:
                parts.append(f"--- {path}: errors\n" + "\n".join(errors))
            parts.append(f"--- {path}: last {lines} lines\n" + "\n".join(content[-lines:]))
        return "\n".join(parts) or "(no log output)"

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until the service answers; returns the seconds waited.

        Raises ServiceError, with the tail of the logs, when the process exits or when
        ``timeout`` seconds pass first.
        """
        if self._child is None:
            raise ServiceError(f"{self.name} was not started")
        started = time.monotonic()
        deadline = started + timeout
        last_error = "no answer yet"
        while True:
            code = self.returncode
            if code is not None:
                _live_services.discard(self)
                raise ServiceError(
                    f"{self.name} exited with code {code} before it was ready\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    f"{self.name} not ready after {timeout:.0f} s (last probe: {last_error})\n"
                    f"{self.log_tail()}"
                )
            try:
                async with asyncio.timeout(min(remaining, 5.0)):
                    if await self._probe():
                        return time.monotonic() - started
                last_error = "not ready"
            except Exception as exc:  # still starting: refused, not ready, timed out, ...
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)

    async def start_and_wait(self, timeout: float = 60.0) -> float:
        """``start()`` then ``wait_ready()``; stops the process again if it never gets ready."""
        self.start()
        try:
            return await self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def describe(self) -> str:
        return f"{self.name} on {self.host}:{self.port}"


def as_user(user: str | None, cmd: Sequence[str]) -> list[str]:
    """``cmd`` run as ``user`` (only when we are root), through ``setpriv``, which execs.

    Not Popen(user=...): that makes subprocess fork instead of vfork, and a fork of a process
    with gRPC loaded runs gRPC's fork handlers, which crash the child now and then (seen as a
    postmaster dying with SIGSEGV before it logged a line, in the fault tests).
    """
    if user is None or os.geteuid() != 0:
        return list(cmd)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]
