"""Which import events the recorder has stored: `imported_rows` (migration 0011).

An imported CSV row is stored once per event id: a row imported before is dropped from the
recorder's batch before anything is spread, so importing a file again stores nothing; the
importer's role reads the ids back to wait for them.
"""

from __future__ import annotations

from typing import Final


def skip_imported(batch: str) -> str:
    """Drops from the table `batch` the rows of import events stored before, and every copy of
    an import event but its first in the log (a file imported twice while the recorder was
    away): a later copy carries a later time, and would win over an outcome given in between.
    One student's events share a partition, so their offsets compare.

    Both run on every batch, and most batches are predictions alone: each looks further only
    at the rows of import events (no probe of imported_rows, no join, for the others)."""
    return f"""DELETE FROM {batch} b USING imported_rows i
WHERE b.import_event_id IS NOT NULL AND b.import_event_id = i.event_id;
DELETE FROM {batch} b WHERE b.import_event_id IS NOT NULL AND EXISTS (
    SELECT FROM {batch} earlier
    WHERE earlier.import_event_id = b.import_event_id AND earlier.log_offset < b.log_offset)"""


def note_imported(batch: str) -> str:
    """Notes the import events of the table `batch` as stored: their ids only. The student is
    not noted (nothing needs it), so no row ties a student to a file, and an erasure leaves
    the same here however its events fell into batches (migration 0019 allows it)."""
    return f"""
INSERT INTO imported_rows (event_id)
SELECT DISTINCT import_event_id FROM {batch}
WHERE import_event_id IS NOT NULL
ON CONFLICT (event_id) DO NOTHING"""


# $1: event ids (uuid[]); those stored, as text.
FIND_IMPORTED: Final = "SELECT event_id::text FROM imported_rows WHERE event_id = ANY($1::uuid[])"

# $1: ids (uuid[]) of import events the recorder skipped as of an erased student: noted without
# the student, so the same file imported again skips them as any stored before, and
# `make import --wait` counts them as handled.
NOTE_SKIPPED: Final = """INSERT INTO imported_rows (event_id) SELECT unnest($1::uuid[])
ON CONFLICT (event_id) DO NOTHING"""
