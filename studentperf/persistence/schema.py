"""The migration runner's bookkeeping (studentperf/migrate.py): which migrations are applied, the
lock that serializes runners, and the roles' passwords. The migrations themselves are the
files of studentperf/migrations/.
"""

from __future__ import annotations

from typing import Final

# NULL until the first migration run created the table.
MIGRATIONS_TABLE_EXISTS: Final = "SELECT to_regclass('schema_migrations')"
APPLIED_VERSIONS: Final = "SELECT version FROM schema_migrations"
CURRENT_USER: Final = "SELECT current_user"
# $1: the runners' lock key; held until the transaction ends.
LOCK_RUNNERS: Final = "SELECT pg_advisory_xact_lock($1)"
CREATE_MIGRATIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version text PRIMARY KEY,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)
IS_APPLIED: Final = "SELECT count(*) FROM schema_migrations WHERE version = $1"
NOTE_APPLIED: Final = "INSERT INTO schema_migrations (version) VALUES ($1)"
# The statement that gives role $1 password $2, built server-side: %L quotes the password.
SET_PASSWORD: Final = "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)"
