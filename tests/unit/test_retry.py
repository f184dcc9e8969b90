import pytest

from studentperf.retry import Backoff, with_backoff


async def test_retries_listed_errors_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")
        return "up"

    result = await with_backoff(
        flaky, what="x", retry_on=(ConnectionError,), give_up_after_s=5, first_delay_s=0.01
    )
    assert (result, calls) == ("up", 3)


async def test_gives_up_with_the_last_error() -> None:
    async def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        await with_backoff(
            down, what="x", retry_on=(ConnectionError,), give_up_after_s=0.05, first_delay_s=0.01
        )


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bug")

    with pytest.raises(ValueError):
        await with_backoff(broken, what="x", retry_on=(ConnectionError,), give_up_after_s=5)
    assert calls == 1


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=0.2, max_s=1.0)
    pauses = backoff.pauses()
    assert [next(pauses) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [backoff.pause(n) for n in (1, 2, 3, 4, 5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_survives_a_long_outage() -> None:
    # 2.0 ** 2000 overflows a float: the thousandth retry must still pause the cap.
    assert Backoff(first_s=0.1, max_s=5.0).pause(2000) == 5.0


@pytest.mark.parametrize(("first_s", "max_s", "multiplier"), [(0, 1, 2), (2, 1, 2), (0.1, 1, 0.5)])
def test_backoff_refuses_pauses_that_do_not_grow_to_a_cap(
    first_s: float, max_s: float, multiplier: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first_s, max_s, multiplier)


async def test_retry_if_decides_which_errors_are_retried() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("retried: retry_if says so")
        if calls == 2:
            raise KeyError("not retried")
        return "never"

    with pytest.raises(KeyError):
        await with_backoff(
            flaky,
            what="x",
            retry_if=lambda error: isinstance(error, ConnectionError),
            give_up_after_s=5,
            first_delay_s=0.01,
        )
    assert calls == 2
