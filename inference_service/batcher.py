"""Adaptive micro-batching: concurrent single-student calls share one model call and one publish.

A call's item waits in the open batch until one of these happens:
- the batch holds `max_items`;
- nothing is being processed: the batch goes at the end of the current event-loop turn, so a
  lone caller pays no wait at all, and callers that arrived together still go together;
- a batch finishes processing while this one waits: the freed capacity takes it at once;
- `max_wait_s` has passed since the batch opened: the bound on the added latency.
So batches grow with the load and stay at one item when there is none.

Each batch runs as its own task: a caller that goes away (deadline, cancellation) does not
cancel the work of the others in it. When processing fails, every caller in that batch gets the
exception; a result that is an exception goes to its caller alone.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Processes one batch: one result (or exception) per item, in order.
Process = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class MicroBatcher(Generic[T, R]):
    def __init__(self, process: Process[T, R], *, max_wait_s: float, max_items: int) -> None:
        if max_wait_s <= 0 or max_items < 1:
            raise ValueError("a micro-batcher needs a positive wait and at least one item")
        self._process = process
        self._max_wait_s = max_wait_s
        self._max_items = max_items
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # how many batches were processed: for tests and logs

    async def submit(self, item: T) -> R:
        """Processes `item` in some batch and returns its result (or raises its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._max_items:
            self._flush()
        elif self._timer is None:
            delay = self._max_wait_s if self._running else 0.0
            # call_later(0) runs after the callbacks already due, i.e. the other calls that
            # arrived in this loop turn join first.
            self._timer = loop.call_later(delay, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        # In a context of its own: the batch serves several calls, its log lines none's ids.
        task = asyncio.get_running_loop().create_task(
            self._run(items, futures), context=contextvars.Context()
        )
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._items:
            self._flush()  # capacity is free: waiting longer would only add latency

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        self.batches += 1
        try:
            results = await self._process(items)
            if len(results) != len(items):
                raise RuntimeError(f"{len(results)} results for a batch of {len(items)}")
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as error:  # every caller of the batch gets it
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in zip(futures, results, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Sends what waits and returns once every batch started has finished."""
        self._flush()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
