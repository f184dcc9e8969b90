"""Letting the event loop run a few turns: what was scheduled (call_soon, call_later(0), a
task's next step) has run by then, without waiting on any clock."""

from __future__ import annotations

import asyncio


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)
