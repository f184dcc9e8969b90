"""Repeated, interleaved measurement: the order cases run in, and what a set of repeats says.

One run of a case on a shared machine moves by a third (issue 17), so the serving benchmark
runs every case several times and reports medians with their range. The cases compared with
each other (the trivial server, the service, MLServer at one concurrency) run in turn, round
after round, so a burst of other work on the machine lands on all of them rather than on
whichever happened to run then; ratios are taken within a round, between neighbours in time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True)
class Spread:
    """The median of some repeats, with their minimum and maximum."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """Of the values that are numbers: a run without a figure (NaN, e.g. no latency
        because no call succeeded) is left out rather than poisoning the median."""
        found = [v for v in values if not math.isnan(v)]
        if not found:
            nan = float("nan")
            return cls(nan, nan, nan, 0)
        return cls(statistics.median(found), min(found), max(found), len(found))

    def format(self, spec: str = ".2f", suffix: str = "") -> str:
        """`0.58x (0.51-0.63)`; just the median when there is nothing to range over."""
        median = f"{self.median:{spec}}{suffix}"
        if self.count < 2 or self.low == self.high:
            return median
        return f"{median} ({self.low:{spec}}-{self.high:{spec}})"


def interleaved(
    cases: Sequence[T], repeats: int, group: Callable[[T], Hashable]
) -> list[tuple[int, T]]:
    """(round, case) in the order to run them: the cases of one group (those compared with
    each other) take turns, `repeats` rounds of the group before the next group; groups keep
    the order of their first case, and cases their order within the group."""
    groups: dict[Hashable, list[T]] = {}
    for case in cases:
        groups.setdefault(group(case), []).append(case)
    return [
        (round_, case)
        for members in groups.values()
        for round_ in range(repeats)
        for case in members
    ]


def paired_ratios(numerators: dict[K, float], denominators: dict[K, float]) -> list[float]:
    """numerator / denominator for each key (a round) both have, the denominator non-zero."""
    return [numerators[key] / denominators[key] for key in numerators if denominators.get(key)]
