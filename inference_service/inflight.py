"""A budget of request bytes decoded or being served at once: what a flood of large requests
can make the process hold.

A request's size is a poor guide to what it costs once decoded (a request of nothing but empty
batch items takes about 28 times its bytes as messages), so the server sizes the budget in
maximum-size requests rather than in bytes of memory. Large calls wait in order of arrival; a
smaller large call does not overtake a bigger one that waits, so none is starved. Small calls
never wait. The bytes of a request that waits are held already (gRPC has read them); it is the
decoded messages, many times larger, that the budget bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

# What a small request holds: nothing (one instance serves every call).
_FREE: contextlib.nullcontext[None] = contextlib.nullcontext()


class InFlightBytes:
    def __init__(self, limit: int, small: int = 0) -> None:
        """Requests of at most `small` bytes never wait and hold none of the budget: every
        Predict a client means, and batches of up to about a hundred students, are never
        queued behind large batches (decoded, thousands of them at once cost little)."""
        if limit < 1:
            raise ValueError(f"the budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self.used = 0
        self._small = small
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiting if not future.done())

    def is_small(self, size: int) -> bool:
        """Whether a request of `size` bytes goes ahead at once, holding nothing."""
        return size <= self._small

    def hold(self, size: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Holds `size` bytes of the budget (all of it, if larger) for the block's duration,
        waiting until they are free; a small request goes ahead at once."""
        if size <= self._small:
            return _FREE
        return self._hold(min(size, self.limit))

    @contextlib.asynccontextmanager
    async def _hold(self, size: int) -> AsyncIterator[None]:
        if self._waiting or self.used + size > self.limit:
            await self._wait(size)
        else:
            self.used += size
        try:
            yield
        finally:
            self.used -= size
            self._wake()

    async def _wait(self, size: int) -> None:
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].cancelled():
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiting.remove(entry)
            else:  # granted, then cancelled before it could run: give the bytes back
                self.used -= size
            self._wake()
            raise

    def _wake(self) -> None:
        while self._waiting:
            size, future = self._waiting[0]
            if future.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if self.used + size > self.limit:
                return
            self._waiting.popleft()
            self.used += size
            future.set_result(None)
