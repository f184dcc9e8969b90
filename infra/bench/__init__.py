"""`make bench`: throughput figures measured on this machine, printed as one table.

Each case is an async function taking the shared `Bench` (a Kafka broker and a PostgreSQL
server started for the run, and the quick flag) and returning table rows. Add a case by
writing a module with such a function and listing it in `infra/bench/__main__.py`. Each row
may name a peer measured in the same run (another row's label): the table then shows the
ratio to it, since absolute figures on a shared 2-core machine are only rough.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.devstack import KafkaBroker, PostgresServer


@dataclass(frozen=True)
class Bench:
    kafka: KafkaBroker
    postgres: PostgresServer
    work_dir: Path
    quick: bool  # a smoke run: small inputs, seconds not minutes
    repeat: int = 1  # runs of each measurement; the best is shown (the machine may be shared)


@dataclass(frozen=True)
class Row:
    case: str
    label: str
    items: int
    seconds: float
    unit: str = "events"
    peer: str = ""  # label of the row this one is compared with
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


Case = Callable[[Bench], Awaitable[list[Row]]]


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, with each row's ratio to its peer."""
    rates = {row.label: row.rate for row in rows}
    header = ("case", "what", "items", "seconds", "per second", "vs. peer", "note")
    body = []
    for row in rows:
        ratio = f"{row.rate / rates[row.peer]:.2f}x {row.peer}" if row.peer in rates else ""
        body.append(
            (
                row.case,
                row.label,
                f"{row.items:,} {row.unit}",
                f"{row.seconds:.2f}",
                f"{row.rate:,.0f}",
                ratio,
                row.note,
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])
