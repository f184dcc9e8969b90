"""Splitting a long list of students over the server's batch and request-size limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    MAX_EXPLAINED_BATCH,
    REQUEST_FIELDS_BYTES,
    max_request_bytes,
)
from studentperf.v1.student_pb2 import Student


def batch_limit(top_factors: int, batch_size: int | None = None) -> int:
    """Students per BatchPredict call: `batch_size`, else the server's default limit (lower when
    explanations are asked for)."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if top_factors and batch_size > MAX_EXPLAINED_BATCH:
            raise ValueError(
                f"with top_factors the server takes at most {MAX_EXPLAINED_BATCH} students per "
                f"call, got batch_size={batch_size}"
            )
        return batch_size
    return MAX_EXPLAINED_BATCH if top_factors else DEFAULT_MAX_BATCH_SIZE


@dataclass(frozen=True)
class Chunk:
    start: int  # the index of its first student in the whole list
    students: Sequence[Student]


def chunks(students: Sequence[Student], size: int) -> list[Chunk]:
    """Consecutive slices covering `students` in order, each of at most `size` students, and no
    larger on the wire than the request limit of a server whose batch limit is `size`
    (limits.max_request_bytes, less the request's other fields at their longest): students it
    refuses one by one (a 200-character id) can be longer than the valid ones its limit is made
    for. A student too large to go with any other goes alone (and is refused alone)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    max_bytes = max_request_bytes(size) - REQUEST_FIELDS_BYTES
    found: list[Chunk] = []
    start = used = 0
    for index, student in enumerate(students):
        length = student.ByteSize()
        wire = 1 + _varint_bytes(length) + length  # the field's tag, its length, the student
        if index > start and (index - start >= size or used + wire > max_bytes):
            found.append(Chunk(start, students[start:index]))
            start, used = index, 0
        used += wire
    if start < len(students):
        found.append(Chunk(start, students[start:]))
    return found


def _varint_bytes(number: int) -> int:
    return max(1, (number.bit_length() + 6) // 7)
