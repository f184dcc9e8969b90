"""The `model_versions` row of a trained version: the facts of its metadata.json
(the statement is studentperf.persistence.registry's).

The recorder inserts a bare row (just the version) the first time it sees a version in an event,
so the trainer upserts: whichever comes first, the row ends up with the trainer's facts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from studentperf.persistence.registry import REGISTER_VERSION
from trainer.db_source import DatabaseUnavailable, connect


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


async def register_version(
    database_url: str, metadata: Mapping[str, Any], *, decision: str, promoted: bool
) -> None:
    """Upserts the version's row; raises DatabaseUnavailable when it cannot be written."""
    conn = await connect(database_url)
    try:
        await conn.execute(
            REGISTER_VERSION,
            metadata["version"],
            datetime.fromisoformat(metadata["created_at"]),
            metadata["pass_mark"],
            metadata["data_source"],
            metadata["data_sha256"],
            metadata["train_rows"],
            metadata["validation_rows"],
            metadata["test_rows"],
            metadata["estimators"]["score"],
            metadata["estimators"]["pass"],
            list(metadata["feature_columns"]),
            _json(metadata["libraries"]),
            _json(metadata["metrics"]),
            _json(metadata["baseline_metrics"]),
            _json(metadata),
            decision,
            promoted,
            _json(metadata["group_quality"]) if "group_quality" in metadata else None,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"writing model_versions failed: {err}") from err
    finally:
        await conn.close()
