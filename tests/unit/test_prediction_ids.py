"""Prediction ids drawn in bulk are still random version-4 UUIDs, in their canonical form."""

import uuid

from inference_service.core import new_uuid4s


def test_bulk_ids_are_distinct_canonical_version_4_uuids() -> None:
    ids = new_uuid4s(5000)
    assert len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_no_ids_for_an_empty_batch() -> None:
    assert new_uuid4s(0) == []
