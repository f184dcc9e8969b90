"""Promoted versions in the database for many machines (migration 0015): each version's files
with their SHA-256, and the `current` pointer with the record of its moves (migration 0017;
studentperf/model_store.py uses them).
"""

from __future__ import annotations

from typing import Final

# $1: the version.
STORE_VERSION: Final = "INSERT INTO model_artifacts (model_version) VALUES ($1)"
# $1: the version, $2: a file name, $3: its bytes, $4: their SHA-256 (hex).
STORE_FILE: Final = """
INSERT INTO model_artifact_files (model_version, file_name, content, sha256)
VALUES ($1, $2, $3, $4)
"""
VERSION_STORED: Final = "SELECT 1 FROM model_artifacts WHERE model_version = $1"
# The version `current` names; no row: none promoted through the database yet.
CURRENT_POINTER: Final = "SELECT model_version FROM model_pointer WHERE name = 'current'"
# $1: the version to serve, $2: the version the pointer must still name (NULL: none yet, the
# first promotion), so that two trainers deciding against the same old version cannot both move
# it; $3: the kind of move ('promotion' or 'rollback'), $4: why. One statement moves the pointer
# and records the move in model_pointer_moves (migration 0017), so neither happens without the
# other. It returns the move's row, or no row when the pointer did not move; a move always goes
# from $2, which is why the first pointer is inserted only when $2 is NULL.
MOVE_POINTER: Final = """
WITH updated AS (
    UPDATE model_pointer SET model_version = $1::text, moved_at = now()
    WHERE name = 'current' AND model_version = $2::text
    RETURNING model_version
), inserted AS (
    INSERT INTO model_pointer (name, model_version)
    SELECT 'current', $1::text WHERE $2::text IS NULL
    ON CONFLICT (name) DO NOTHING
    RETURNING model_version
)
INSERT INTO model_pointer_moves (from_version, to_version, kind, reason)
SELECT $2::text, model_version, $3::text, $4::text
FROM (SELECT model_version FROM updated UNION ALL SELECT model_version FROM inserted) AS moved
RETURNING id, moved_at, moved_by
"""
# $1: a version, $2: how many steps back at most. The versions $1 replaced, nearest first: the
# one its last promotion took `current` from, the one that one's last promotion took it from,
# and so on (a replica's fallback when $1 does not load there: inference_service/reload.py).
# Promotions only, as a rollback walks (trainer/rollback.py): a version a rollback took off is
# never gone back to. The bound also ends a walk that comes round to a version again.
REPLACED_VERSIONS: Final = """
WITH RECURSIVE replaced (model_version, step) AS (
    SELECT $1::text, 0
    UNION ALL
    SELECT p.from_version, r.step + 1
    FROM replaced r
    CROSS JOIN LATERAL (
        SELECT m.from_version FROM model_pointer_moves m
        WHERE m.kind = 'promotion' AND m.to_version = r.model_version
        ORDER BY m.id DESC LIMIT 1
    ) p
    WHERE r.step < $2 AND p.from_version IS NOT NULL
)
SELECT model_version FROM replaced WHERE step > 0 ORDER BY step
"""
# $1: the version. Each file's name, size and SHA-256, not its bytes: those come in parts.
VERSION_FILES: Final = """
SELECT file_name, octet_length(content) AS size, sha256 FROM model_artifact_files
WHERE model_version = $1 ORDER BY file_name
"""
# $1: the version, $2: a file name, $3: the first byte wanted (from 1), $4: how many bytes.
# NULL when the file is not there (any more).
FILE_PART: Final = """
SELECT substring(content FROM $3 FOR $4) FROM model_artifact_files
WHERE model_version = $1 AND file_name = $2
"""
# Every stored version, with when the trainer last promoted it (model_versions.promoted_at;
# NULL: never promoted, or not registered); a rollback chooses among them (trainer/rollback.py).
# Each stored version, its last promotion, and the version that promotion took `current` from
# (replaced_known false: never promoted through the pointer since migration 0017 recorded moves).
PUBLISHED_VERSIONS: Final = """
SELECT a.model_version, v.promoted_at, p.from_version AS replaced,
       p.id IS NOT NULL AS replaced_known
FROM model_artifacts a
LEFT JOIN model_versions v ON v.model_version = a.model_version
LEFT JOIN LATERAL (
    SELECT m.id, m.from_version FROM model_pointer_moves m
    WHERE m.kind = 'promotion' AND m.to_version = a.model_version
    ORDER BY m.id DESC LIMIT 1
) p ON true
ORDER BY a.model_version
"""
