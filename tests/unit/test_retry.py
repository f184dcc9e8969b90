import pytest

from studentperf.retry import with_backoff


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
