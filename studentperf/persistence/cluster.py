"""A PostgreSQL cluster's own bookkeeping, for the dev stack and the tests' servers
(infra/devstack/postgres.py): is it up, and creating a role and a database in it.

Role and database names go into the text as quoted identifiers (`quote_ident`): CREATE ROLE and
CREATE DATABASE take no parameters.
"""

from __future__ import annotations

from typing import Final

# The readiness probe: a server that answers it accepts connections and runs queries.
PROBE: Final = "SELECT 1"
ROLE_EXISTS: Final = "SELECT 1 FROM pg_roles WHERE rolname = $1"
DATABASE_EXISTS: Final = "SELECT 1 FROM pg_database WHERE datname = $1"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_login_role(name: str) -> str:
    return f"CREATE ROLE {quote_ident(name)} LOGIN"


def create_database(name: str, owner: str | None = None) -> str:
    sql = f"CREATE DATABASE {quote_ident(name)}"
    if owner is not None:
        sql += f" OWNER {quote_ident(owner)}"
    return sql
