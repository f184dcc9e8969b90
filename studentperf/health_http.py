"""A tiny HTTP endpoint for a service's state: `GET /health` and `GET /metrics`.

Nothing but asyncio streams: /health answers 200 when the service says it is healthy, 503
otherwise, with a JSON body; /metrics answers Prometheus text. Each service supplies the two
functions that describe it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

Health = Callable[[], tuple[bool, dict[str, object]]]


async def serve_health(
    health: Health, metrics: Callable[[], str], host: str, port: int, *, blocking: bool = False
) -> asyncio.Server:
    """Starts the endpoint; the caller closes the returned server. `blocking`: `health` and
    `metrics` wait on something else (the worker supervisor asks its workers), so they run in
    a thread, not on the event loop, which must go on serving meanwhile."""

    # One thread of its own, so that requests are answered one at a time and never wait
    # behind (or hold up) other work on the loop's default threads; a request that comes
    # while the same path is being answered shares that answer rather than queueing another.
    pool = ThreadPoolExecutor(1, thread_name_prefix="status") if blocking else None
    answering: dict[str, asyncio.Future[Any]] = {}

    async def answer(path: str, work: Callable[[], T]) -> T:
        if pool is None:
            return work()
        shared = answering.get(path)
        if shared is None:
            shared = answering[path] = asyncio.get_running_loop().run_in_executor(pool, work)
            shared.add_done_callback(lambda _: answering.pop(path, None))
        result: T = await asyncio.shield(shared)
        return result

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers: nothing in them matters here
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/health":
                healthy, detail = await answer(path, health)
                code, kind, body = (200 if healthy else 503), "application/json", json.dumps(detail)
            elif path == "/metrics":
                code, kind, body = 200, "text/plain; version=0.0.4", await answer(path, metrics)
            else:
                code, kind, body = 404, "text/plain", "GET /health or /metrics\n"
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass  # a client that went away or sent garbage gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    log.info("health endpoint on http://%s:%d/health and /metrics", host, port)
    return server


_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
