"""The status endpoint's blocking mode (the worker supervisor's, which asks its workers): a
/health that waits on something else must not stop the event loop meanwhile."""

from __future__ import annotations

import asyncio
import threading

from studentperf.health_http import serve_health
from tests.raw_http import get_status


async def test_a_blocking_health_leaves_the_loop_free_until_it_answers() -> None:
    release = threading.Event()
    asked = threading.Event()

    def health() -> tuple[bool, dict[str, object]]:
        asked.set()
        release.wait(10)  # a worker that does not answer
        return True, {}

    server = await serve_health(health, lambda: "", "127.0.0.1", 0, blocking=True)
    try:
        port = server.sockets[0].getsockname()[1]
        waiting = asyncio.create_task(get_status(port, "/health"))
        await asyncio.to_thread(asked.wait, 10)
        # While /health waits, the loop runs: other requests are answered, timers fire.
        assert await asyncio.wait_for(get_status(port, "/elsewhere"), 5) == 404
        assert not waiting.done()
        release.set()
        assert await waiting == 200
    finally:
        release.set()
        server.close()
        await server.wait_closed()
