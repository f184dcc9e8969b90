import asyncio
import contextlib

import pytest

from inference_service.inflight import InFlightBytes


async def test_holders_share_the_budget_and_the_rest_wait_in_order() -> None:
    budget = InFlightBytes(10)
    order: list[str] = []
    release = {name: asyncio.Event() for name in ("a", "b", "big", "small")}

    async def use(name: str, size: int) -> None:
        async with budget.hold(size):
            order.append(name)
            await release[name].wait()

    tasks = {name: asyncio.create_task(use(name, size))
             for name, size in (("a", 6), ("b", 4), ("big", 8), ("small", 1))}  # fmt: skip
    await asyncio.sleep(0)
    # a and b fill the budget; small would fit nowhere either, and must not pass big.
    assert order == ["a", "b"] and budget.used == 10 and budget.waiting == 2
    release["a"].set()
    await tasks["a"]
    await asyncio.sleep(0)
    assert order == ["a", "b"]  # 4 + 8 > 10: big still waits, small behind it
    release["b"].set()
    await tasks["b"]
    await asyncio.sleep(0)
    assert order == ["a", "b", "big", "small"] and budget.used == 9
    release["big"].set()
    release["small"].set()
    await asyncio.gather(*tasks.values())
    assert budget.used == 0 and budget.waiting == 0


async def test_a_request_larger_than_the_budget_takes_all_of_it() -> None:
    budget = InFlightBytes(10)
    async with budget.hold(1000):
        assert budget.used == 10
    assert budget.used == 0


async def test_a_waiter_cancelled_gives_its_place_and_its_bytes_back() -> None:
    budget = InFlightBytes(10)
    gate = asyncio.Event()

    async def hold(size: int) -> None:
        async with budget.hold(size):
            await gate.wait()

    first = asyncio.create_task(hold(10))
    waiting = asyncio.create_task(hold(5))
    behind = asyncio.create_task(hold(5))
    await asyncio.sleep(0)
    assert budget.waiting == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await asyncio.gather(first, behind)
    assert budget.used == 0 and budget.waiting == 0


async def test_a_waiter_granted_then_cancelled_returns_the_bytes() -> None:
    budget = InFlightBytes(10)
    entered = asyncio.Event()

    async def hold(size: int) -> None:
        async with budget.hold(size):
            entered.set()

    holder = budget.hold(10)
    await holder.__aenter__()
    waiter = asyncio.create_task(hold(5))
    await asyncio.sleep(0)
    await holder.__aexit__(None, None, None)  # grants the waiter its bytes...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not entered.is_set()
    assert budget.used == 0 and budget.waiting == 0


async def test_small_requests_never_wait_nor_hold_any_of_the_budget() -> None:
    budget = InFlightBytes(10, small=2)
    gate = asyncio.Event()

    async def hold(size: int) -> None:
        async with budget.hold(size):
            await gate.wait()

    holder = asyncio.create_task(hold(10))
    queued = asyncio.create_task(hold(3))
    await asyncio.sleep(0)
    assert budget.waiting == 1
    async with budget.hold(2):  # would deadlock here if it queued behind the 3 bytes
        assert budget.used == 10
    gate.set()
    await asyncio.gather(holder, queued)
    assert budget.used == 0


def test_the_least_budget_is_one_byte_and_small_means_at_most() -> None:
    assert InFlightBytes(1).limit == 1
    with pytest.raises(ValueError, match="at least 1 byte"):
        InFlightBytes(0)
    budget = InFlightBytes(10, small=2)
    assert budget.is_small(2) and not budget.is_small(3)


async def held(budget: InFlightBytes, size: int) -> contextlib.AbstractAsyncContextManager[None]:
    holder = budget.hold(size)
    await holder.__aenter__()
    return holder


async def test_a_waiter_that_fits_exactly_what_is_freed_goes_ahead() -> None:
    budget = InFlightBytes(10)
    first, second = await held(budget, 6), await held(budget, 4)
    waiter = asyncio.create_task(held(budget, 4))
    await asyncio.sleep(0)
    assert budget.waiting == 1
    await second.__aexit__(None, None, None)
    await asyncio.sleep(0)
    assert waiter.done() and budget.used == 10, "6 + 4 fills the budget: no need to wait"
    await (await waiter).__aexit__(None, None, None)
    await first.__aexit__(None, None, None)


async def test_the_first_waiter_cancelled_lets_those_behind_it_go_when_they_fit() -> None:
    budget = InFlightBytes(10)
    holder = await held(budget, 6)
    big = asyncio.create_task(held(budget, 8))
    small = asyncio.create_task(held(budget, 3))
    await asyncio.sleep(0)
    assert budget.waiting == 2  # 3 fits, but does not pass the 8 ahead of it
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    await asyncio.sleep(0)
    assert small.done() and budget.used == 9, "nothing is ahead of it any more"
    await (await small).__aexit__(None, None, None)
    await holder.__aexit__(None, None, None)


async def test_a_waiter_cancelled_in_the_turn_the_bytes_are_freed_passes_them_on() -> None:
    budget = InFlightBytes(10)
    holder = await held(budget, 10)
    first = asyncio.create_task(held(budget, 5))
    second = asyncio.create_task(held(budget, 5))
    await asyncio.sleep(0)
    first.cancel()  # its future is cancelled now, its own clean-up runs next turn
    await holder.__aexit__(None, None, None)
    assert budget.used == 5, "the freed bytes went to the next waiter at once"
    with pytest.raises(asyncio.CancelledError):
        await first
    await (await asyncio.wait_for(second, 1)).__aexit__(None, None, None)
    assert budget.used == 0 and budget.waiting == 0


async def test_a_waiter_granted_keeps_no_later_call_waiting() -> None:
    budget = InFlightBytes(10)
    holder = await held(budget, 8)
    waiter = asyncio.create_task(held(budget, 4))
    await asyncio.sleep(0)
    await holder.__aexit__(None, None, None)
    granted = await waiter
    later = asyncio.create_task(held(budget, 3))
    await asyncio.sleep(0)
    assert later.done() and budget.used == 7, "4 + 3 fit and nobody waits"
    await (await later).__aexit__(None, None, None)
    await granted.__aexit__(None, None, None)
