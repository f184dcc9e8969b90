"""A publish waits for all of its acknowledgements on one future (one callback at a time, from
the last); a timeout leaves them alone."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError

from inference_service.publisher import _all_done


async def test_done_once_every_ack_is_whatever_it_ended_with() -> None:
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[object]] = [loop.create_future() for _ in range(3)]
    waiting = _all_done(acks)
    acks[0].set_result(None)
    acks[1].set_exception(KafkaError("refused"))
    await asyncio.sleep(0)
    assert not waiting.done()
    acks[2].cancel()
    await asyncio.sleep(0)
    assert waiting.done()
    acks[1].exception()  # retrieved, as the publisher's ack.result() does


async def test_acks_already_done_need_no_wait() -> None:
    ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    assert _all_done([ack]).done()


async def test_a_timed_out_wait_leaves_the_acks_to_wait_on_again() -> None:
    """A replay that timed out waits for the same sends on its retry (delivery.PendingSends):
    cancelling the wait must not cancel them, as asyncio.gather would."""
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[object]] = [loop.create_future() for _ in range(2)]
    first = _all_done(acks)
    first.cancel()
    await asyncio.sleep(0)
    assert not any(ack.cancelled() for ack in acks)
    retry = _all_done(acks)
    for ack in acks:
        ack.set_result(None)
    await retry


async def test_an_earlier_ack_still_pending_when_the_last_is_done_is_waited_for() -> None:
    """The wait follows the last ack first (a producer batch's are set together), but acks done
    out of that order are each still waited for."""
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[object]] = [loop.create_future() for _ in range(3)]
    waiting = _all_done(acks)
    acks[2].set_result(None)
    await asyncio.sleep(0)
    assert not waiting.done()
    acks[0].set_result(None)
    await asyncio.sleep(0)
    assert not waiting.done()
    acks[1].set_result(None)
    await asyncio.sleep(0)
    assert waiting.done()
