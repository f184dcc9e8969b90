"""Promoted versions in the database for many machines (migration 0015): each version's files
with their SHA-256, and the `current` pointer (studentperf/model_store.py uses them).
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
# $1: the version to serve, $2: the version the pointer must still name (NULL: none yet), so
# that two trainers deciding against the same old version cannot both move it. Its status,
# "INSERT 0 1" or "INSERT 0 0", says whether it moved.
MOVE_POINTER: Final = """
INSERT INTO model_pointer AS p (name, model_version) VALUES ('current', $1)
ON CONFLICT (name) DO UPDATE SET model_version = EXCLUDED.model_version, moved_at = now()
WHERE p.model_version IS NOT DISTINCT FROM $2::text
"""
# $1: the version.
VERSION_FILES: Final = """
SELECT file_name, content, sha256 FROM model_artifact_files
WHERE model_version = $1 ORDER BY file_name
"""
# Every stored version, with when the trainer last promoted it (model_versions.promoted_at;
# NULL: never promoted, or not registered); a rollback chooses among them (trainer/rollback.py).
PUBLISHED_VERSIONS: Final = """
SELECT a.model_version, v.promoted_at
FROM model_artifacts a LEFT JOIN model_versions v ON v.model_version = a.model_version
ORDER BY a.model_version
"""
