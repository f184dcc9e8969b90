"""What a replay of dead letters did with each letter, counted by the letter's reason: the
progress line it logs and the table it ends with, and its exit status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    REPLAYED = "replayed"
    ERASED = "erased"  # skipped: the student was erased at or after the letter's time
    FILTERED = "filtered"  # skipped: not of a --reason asked for; left for another run
    NOT_REPLAYABLE = "not replayable"  # its original is gone
    # skipped: a copy (same source) of a letter this run replayed or skipped as erased; the
    # recorder sends a batch's letters again when their acknowledgement is lost.
    COPY = "copies"


# The exit statuses (docs/recorder.md, "Replaying dead letters").
DONE = 0
SOME_NOT_REPLAYABLE = 1
BAD_SETTINGS = 2


@dataclass(slots=True)
class Tally:
    dry_run: bool = False
    counts: Counter[tuple[str, Outcome]] = field(default_factory=Counter)

    def add(self, reason: str, outcome: Outcome) -> None:
        self.counts[reason or "(none)", outcome] += 1

    def of(self, outcome: Outcome) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)

    def by_reason(self, outcome: Outcome) -> dict[str, int]:
        return {r: n for (r, o), n in sorted(self.counts.items()) if o == outcome}

    @property
    def read(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> int:
        return SOME_NOT_REPLAYABLE if self.of(Outcome.NOT_REPLAYABLE) else DONE

    def progress(self, total: int) -> str:
        return f"{self.read:,} of {total:,} letters read: " + ", ".join(
            f"{self._label(o)} {self.of(o):,}" for o in Outcome
        )

    def table(self) -> str:
        reasons = sorted({r for r, _ in self.counts})
        width = max([len("reason"), len("total"), *map(len, reasons)])
        head = f"  {'reason':<{width}}" + "".join(f" {self._label(o):>16}" for o in Outcome)
        lines = [head]
        for reason in [*reasons, "total"]:
            cells = [self.of(o) if reason == "total" else self.counts[reason, o] for o in Outcome]
            lines.append(f"  {reason:<{width}}" + "".join(f" {n:>16,}" for n in cells))
        return "\n".join(lines)

    def _label(self, outcome: Outcome) -> str:
        if outcome == Outcome.REPLAYED and self.dry_run:
            return "would replay"
        return str(outcome)
