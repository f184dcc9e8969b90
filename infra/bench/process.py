"""A recorder as a child process (`python -m recorder_service`), watched through its /health
and /metrics endpoint: the benchmark runs these, and so do the recorder's fault tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from infra.devstack import free_port
from infra.processes import ChildProcess
from recorder_service.health import parse_metrics


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


class HealthClient:
    """GETs a process's health endpoint (a recorder's, the inference service's); blocking, so
    async callers use asyncio.to_thread."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> None:
        self.port = port
        self.host = host
        self.timeout_s = timeout_s

    def get(self, path: str) -> tuple[int, str]:
        """(status code, body); raises OSError while nothing listens."""
        url = f"http://{self.host}:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics")[1])


class RecorderProcess(HealthClient):
    """`python -m recorder_service` with `env` on top of this process's environment, its
    endpoint on a free port, and its output in `log_path`."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(free_port())
        self.log_path = log_path
        self._child = ChildProcess.python_module(
            "recorder_service",
            env={**env, "STUDENTPERF_RECORDER_HEALTH_PORT": str(self.port)},
            log_path=log_path,
        )

    def start(self) -> None:
        self._child.start()

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def running(self) -> bool:
        return self._child.running

    def metrics(self) -> dict[str, float]:
        if self._child.process is not None and not self.running:
            raise RuntimeError(
                f"the recorder exited ({self._child.returncode}):\n{self.log_tail()}"
            )
        return super().metrics()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then its exit code (SIGKILL after `timeout`); None if never started."""
        return self._child.stop(timeout)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown work."""
        self._child.kill()

    def log_tail(self, lines: int = 40) -> str:
        return self._child.log_tail(lines)
