"""Splitting a long list of students over the server's batch limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from studentperf.limits import DEFAULT_MAX_BATCH_SIZE, MAX_EXPLAINED_BATCH

T = TypeVar("T")


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


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most `size` items, covering `items` in order."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [items[start : start + size] for start in range(0, len(items), size)]
