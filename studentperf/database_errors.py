"""The one answer to "is the database unavailable?", for every process that uses PostgreSQL:
the recorder's write loop and start-up, the service's history reads, the trainer's connections
and the import's wait.

Unavailable means waiting and trying again may succeed: the server is not reachable, starting or
stopping, out of connections, or the connection was lost. A statement or a value the server
refuses is not: trying it again gives the same answer.
"""

from __future__ import annotations

import asyncpg

# SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many connections),
# 57 operator intervention (shutting down, not yet accepting connections).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})


def database_unavailable(error: BaseException, *, connecting: bool = False) -> bool:
    """Whether `error` says the database cannot be used now, rather than that the work is wrong.

    `connecting`: the error came while opening a connection, where every refusal by the server
    (a wrong password, a database or role that does not exist yet) means the same to the caller.
    """
    if isinstance(error, asyncpg.PostgresError):
        return connecting or str(error.sqlstate)[:2] in _UNAVAILABLE_CLASSES
    if isinstance(error, ValueError):
        # asyncpg's client-side DataError ("invalid input for query argument") is an
        # InterfaceError too, but it is about a value, not the connection.
        return False
    # InternalClientError: a connection the server dropped mid-query, found broken when the
    # pool resets it on release.
    return isinstance(
        error, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    )
