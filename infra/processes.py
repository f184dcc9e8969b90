"""The one way this repository runs a child process: the dev stack's servers, `make up`'s
services, the benchmarks' peers and the fault tests' services all start, signal, stop and kill
their children through `ChildProcess`.

A child's output goes to a log file (opened for appending, so a restart keeps the earlier run)
or, without one, to this process's terminal. Stopping is a signal (SIGTERM unless told), a wait,
then SIGKILL: a child that ignores its stop signal cannot hang its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from signal import SIGKILL, SIGTERM, Signals

REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildProcess:
    """One child process: `command` with `env` (this process's environment when None) in
    `cwd` (the repository when None), its output appended to `log_path` (or inherited).

    `new_session` puts it in a session of its own, so a Ctrl-C in the terminal reaches only the
    supervising process, which then stops its children in order. `header`, when given, is
    written to the log before the child's first line (which command ran, and when).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        new_session: bool = False,
        header: bool = False,
    ) -> None:
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd or REPO_ROOT
        self.log_path = log_path
        self.new_session = new_session
        self.header = header
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def console_script(
        cls,
        name: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        new_session: bool = False,
    ) -> ChildProcess:
        """The console script `name` (pyproject's [project.scripts], installed beside this
        interpreter) with `args`, and `env` on top of this process's environment."""
        return cls(
            [str(Path(sys.executable).parent / name), *args],
            env={**os.environ, **(env or {})},
            log_path=log_path,
            new_session=new_session,
        )

    @classmethod
    def python_module(
        cls,
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        new_session: bool = False,
    ) -> ChildProcess:
        """`python -m module args...` with `env` on top of this process's environment."""
        return cls(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **(env or {})},
            log_path=log_path,
            new_session=new_session,
        )

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.command[0]} is already running (pid {self.pid})")
        with self._output() as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=self.new_session,
            )

    @contextlib.contextmanager
    def _output(self) -> Iterator[int | None]:
        if self.log_path is None:
            yield None
            return
        # The child has its own copy of the descriptor: ours is closed once it started.
        with self.log_path.open("ab") as out:
            if self.header:
                out.write(f"\n===== {time.strftime('%F %T')} {' '.join(self.command)}\n".encode())
                out.flush()
            yield out.fileno()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.command[0]} has not been started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited; None while it runs or before it started."""
        return self.process.poll() if self.process is not None else None

    def signal(self, sig: Signals) -> None:
        """Sends `sig` if it still runs (an exited child is not an error)."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Its exit code; TimeoutError when it still runs after `timeout` seconds."""
        if self.process is None:
            raise RuntimeError(f"{self.command[0]} has not been started")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.command[0]} did not exit within {timeout} s") from None

    def stop(self, timeout: float = 30.0, sig: Signals = SIGTERM) -> int | None:
        """`sig`, then its exit code (SIGKILL after `timeout`); None if never started."""
        if self.process is None:
            return None
        self.signal(sig)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown work."""
        self.signal(SIGKILL)
        if self.process is not None:
            self.process.wait()

    # The same, for an event loop that must keep running meanwhile (polling: no thread).

    async def wait_async(self, timeout: float = 30.0) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.command[0]} has not been started")
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.command[0]} did not exit within {timeout} s")
            await asyncio.sleep(0.05)
        return code

    async def stop_async(self, timeout: float = 30.0, sig: Signals = SIGTERM) -> int | None:
        if self.process is None:
            return None
        self.signal(sig)
        try:
            return await self.wait_async(timeout)
        except TimeoutError:
            return await self.kill_async()

    async def kill_async(self) -> int:
        self.signal(SIGKILL)
        return await self.wait_async()

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_path
        text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def started(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, stop_timeout: float = 20.0
) -> Iterator[ChildProcess]:
    """`command` (with exactly `env`) running for the block, stopped after it however the block
    ends."""
    child = ChildProcess(command, env=env, log_path=log_path)
    child.start()
    try:
        yield child
    finally:
        child.stop(stop_timeout)
