"""The one classifier of "the database is unavailable" (studentperf.database_errors)."""

import asyncpg
import pytest

from studentperf.database_errors import database_unavailable

AWAY = [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
]
WRONG = [
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.UndefinedTableError('relation "predictions" does not exist'),
    asyncpg.DataError("invalid input for query argument $1"),
    asyncpg.InvalidPasswordError("password authentication failed"),
    KeyError("not a database error at all"),
]


@pytest.mark.parametrize("error", AWAY, ids=lambda e: type(e).__name__)
def test_a_database_that_is_away_is_unavailable(error: Exception) -> None:
    assert database_unavailable(error)
    assert database_unavailable(error, connecting=True)


@pytest.mark.parametrize("error", WRONG, ids=lambda e: type(e).__name__)
def test_work_the_database_refuses_is_not_an_outage(error: Exception) -> None:
    assert not database_unavailable(error)


def test_while_connecting_every_refusal_by_the_server_means_unavailable() -> None:
    assert database_unavailable(asyncpg.InvalidPasswordError("no"), connecting=True)
    assert database_unavailable(asyncpg.InvalidCatalogNameError("no database"), connecting=True)
    assert not database_unavailable(KeyError("not from the database"), connecting=True)
