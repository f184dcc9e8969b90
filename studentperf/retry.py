"""The one backoff of the project: capped exponential pauses between tries (`Backoff`), and
retrying a start-up step while the service it needs is not there yet (`with_backoff`).

The recorder's write loop, the spool's replay, the erasure's confirmation poll, the start-up
steps and the client's retry policy all pause by it. It imports nothing beyond the standard
library, so the client, which installs without the services' dependencies, shares it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses of `first_s`, then `multiplier` times the one before, never more than `max_s`."""

    first_s: float
    max_s: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(
                f"backoff needs 0 < first_s <= max_s, got {self.first_s}, {self.max_s}"
            )
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be at least 1, got {self.multiplier}")

    def pause(self, retry: int) -> float:
        """The pause before retry number `retry` (1 for the first retry)."""
        pause = self.first_s
        # Multiplied step by step rather than raised to a power: a long outage's thousandth
        # retry would overflow a float.
        for _ in range(retry - 1):
            if pause >= self.max_s:
                break
            pause *= self.multiplier
        return min(pause, self.max_s)

    def pauses(self) -> Iterator[float]:
        """The pause before each retry in turn, without end (start again with a new iterator)."""
        pause = self.first_s
        while True:
            yield pause
            pause = min(pause * self.multiplier, self.max_s)


async def with_backoff(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[Exception], ...] = (),
    retry_if: Callable[[Exception], bool] | None = None,
    give_up_after_s: float,
    first_delay_s: float = 0.5,
    max_delay_s: float = 5.0,
) -> T:
    """Calls `attempt` until it succeeds, doubling the pause between tries.

    Errors of the `retry_on` types, or for which `retry_if` says yes, are logged as "<what>
    not reachable yet" and retried; once `give_up_after_s` would pass, the last one is raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    pauses = Backoff(first_delay_s, max_delay_s).pauses()
    while True:
        try:
            return await attempt()
        except Exception as error:
            if not (isinstance(error, retry_on) or (retry_if is not None and retry_if(error))):
                raise
            delay = next(pauses)
            if loop.time() + delay > deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying in %.1f s", what, error, delay)
        await asyncio.sleep(delay)
