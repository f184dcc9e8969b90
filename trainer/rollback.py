"""Which version a rollback serves (`studentperf-rollback`, `make rollback`): the rules alone,
no I/O, so each is tested on its own (trainer/rollback_cli.py applies them to a model source).

- A named version must be one the source holds (published: a version folder on one machine, a
  stored version in the database); serving it again is a move of `current`, nothing retrained.
- Without a name: the version the one served now replaced when the gate promoted it, so
  repeated rollbacks walk back through the promotions one by one. A rollback itself promotes
  nothing. So a version a rollback took off is not gone back to: A promoted, then B; B rolled
  back to A; C promoted against A: a rollback from C serves A again, not B. Where the source
  did not note what a promotion replaced (promotions from before it did), the version promoted
  last before the one served now.
- Whatever is chosen must still hash to what the trainer recorded; that check is the source's
  (ArtifactRefused), made before `current` moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from studentperf.model_store import Published


class RollbackRefused(Exception):
    """The rollback cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Choice:
    version: str
    # Why this version, for the operator: "named", or the promotion it goes back to.
    reason: str
    already_current: bool = False


def choose_version(
    requested: str | None, current: str | None, published: Sequence[Published]
) -> Choice:
    """The version to serve; RollbackRefused when there is none to go back to."""
    by_name = {p.version: p for p in published}
    if requested is not None:
        found = by_name.get(requested)
        if found is None:
            raise RollbackRefused(
                f"version {requested} does not exist here; {_listing(published, current)}"
            )
        return Choice(
            requested,
            "named" if found.promoted_at else "named (never promoted by the gate before)",
            already_current=requested == current,
        )
    if current is None:
        raise RollbackRefused("no version is served yet: there is nothing to roll back from")
    served = by_name.get(current)
    if served is not None and served.replaced_known:
        return _replaced(served, by_name, published)
    since = served.promoted_at if served is not None else None
    earlier = sorted(
        (
            p
            for p in published
            if p.promoted_at is not None
            and p.version != current
            and (since is None or p.promoted_at < since)
        ),
        key=lambda p: (p.promoted_at, p.version),
    )
    if not earlier:
        raise RollbackRefused(
            f"no version was promoted before {current}, the one served: nothing to roll back "
            f"to; {_listing(published, current)}"
        )
    chosen = earlier[-1]
    return Choice(chosen.version, f"the version promoted before {current} ({chosen.promoted_at})")


def _replaced(
    served: Published, by_name: dict[str, Published], published: Sequence[Published]
) -> Choice:
    """The version `served` took `current` from when the gate promoted it."""
    if served.replaced is None:
        raise RollbackRefused(
            f"{served.version}, the one served, was the first version promoted: nothing to roll "
            f"back to; {_listing(published, served.version)}"
        )
    if served.replaced not in by_name:
        raise RollbackRefused(
            f"{served.version} replaced {served.replaced}, which is not held here any more; "
            f"{_listing(published, served.version)}"
        )
    return Choice(
        served.replaced,
        f"the version {served.version} replaced when promoted ({served.promoted_at})",
    )


def _listing(published: Sequence[Published], current: str | None, most: int = 5) -> str:
    """The latest versions held, for the refusal message."""
    if not published:
        return "none is published"
    names = sorted(p.version for p in published)[-most:]
    marked = [f"{n} (current)" if n == current else n for n in names]
    more = f" (the latest {most} of {len(published)})" if len(published) > most else ""
    return f"published{more}: {', '.join(marked)}"
