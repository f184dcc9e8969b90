import asyncio

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
