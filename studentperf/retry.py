"""Retrying a start-up step while the service it needs is not there yet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


async def with_backoff(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    give_up_after_s: float,
    first_delay_s: float = 0.5,
    max_delay_s: float = 5.0,
) -> T:
    """Calls `attempt` until it succeeds, doubling the pause between tries.

    Errors of the `retry_on` types are logged as "<what> not reachable yet" and retried;
    once `give_up_after_s` would pass, the last one is raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    delay = first_delay_s
    while True:
        try:
            return await attempt()
        except retry_on as error:
            if loop.time() + delay > deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying in %.1f s", what, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
