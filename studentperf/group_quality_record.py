"""A version's per-group quality as metadata.json and the `model_versions` row keep it: the
result types of trainer.group_quality, with their JSON form (`as_dict`) and its one reader
(`from_dict`), which the trainer's gate, the monitor and the service's GetModelInfo all use.
Only the standard library: the service reads it without the trainer's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MIN_GROUP_ROWS: Final = 50
MIN_CLASS_ROWS: Final = 10
RESAMPLES: Final = 2000


@dataclass(frozen=True)
class GroupFigures:
    group: str
    rows: int
    judged: bool  # at least MIN_GROUP_ROWS rows, and not "not_given"
    # None: undefined (too few of a class, or no served intervals). A record written before a
    # figure existed lacks its key (`GroupQuality.predates`).
    figures: Mapping[str, float | None]


@dataclass(frozen=True)
class Gap:
    figure: str
    gap: float  # highest - lowest, among the judged groups
    highest: str
    lowest: str
    interval_low: float
    interval_high: float
    level: float  # the interval's (Bonferroni-widened) coverage

    @property
    def beyond_noise(self) -> bool:
        return self.interval_low > 0


@dataclass(frozen=True)
class AttributeQuality:
    attribute: str
    groups: tuple[GroupFigures, ...]
    gaps: tuple[Gap, ...]  # the figures defined for at least two judged groups

    def gap(self, figure: str) -> Gap | None:
        return next((g for g in self.gaps if g.figure == figure), None)


@dataclass(frozen=True)
class GroupQuality:
    attributes: tuple[AttributeQuality, ...]
    rows: int
    seed: int
    min_group_rows: int = MIN_GROUP_ROWS
    min_class_rows: int = MIN_CLASS_ROWS
    resamples: int = RESAMPLES
    # The coverage the score intervals behind `interval_coverage` state (None: no intervals,
    # or a record from before the figure).
    stated_coverage: float | None = None

    def attribute(self, name: str) -> AttributeQuality | None:
        return next((a for a in self.attributes if a.attribute == name), None)

    def predates(self, figure: str) -> bool:
        """Whether the record was written before `figure` existed: it has groups and none holds
        the figure, not even as None (undefined), so its gaps cannot be told from "no gap"."""
        groups = [g for a in self.attributes for g in a.groups]
        return bool(groups) and not any(figure in g.figures for g in groups)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what metadata.json and the model_versions row keep."""
        return {
            "rows": self.rows,
            "seed": self.seed,
            "min_group_rows": self.min_group_rows,
            "min_class_rows": self.min_class_rows,
            "resamples": self.resamples,
            "stated_coverage": self.stated_coverage,
            "attributes": [
                {
                    "attribute": a.attribute,
                    "groups": [
                        {
                            "group": g.group,
                            "rows": g.rows,
                            "judged": g.judged,
                            "figures": dict(g.figures),
                        }
                        for g in a.groups
                    ],
                    "gaps": [
                        {
                            "figure": g.figure,
                            "gap": g.gap,
                            "highest": g.highest,
                            "lowest": g.lowest,
                            "interval_low": g.interval_low,
                            "interval_high": g.interval_high,
                            "level": g.level,
                            "beyond_noise": g.beyond_noise,
                        }
                        for g in a.gaps
                    ],
                }
                for a in self.attributes
            ],
        }

    @classmethod
    def from_dict(cls, found: Mapping[str, Any]) -> GroupQuality:
        """The inverse of as_dict (KeyError or TypeError when `found` is not one). A record
        from before `interval_coverage` reads as it was: no such figure, stated_coverage None."""
        return cls(
            attributes=tuple(
                AttributeQuality(
                    attribute=str(a["attribute"]),
                    groups=tuple(
                        GroupFigures(
                            group=str(g["group"]),
                            rows=int(g["rows"]),
                            judged=bool(g["judged"]),
                            figures=dict(g["figures"]),
                        )
                        for g in a["groups"]
                    ),
                    gaps=tuple(
                        Gap(
                            figure=str(g["figure"]),
                            gap=float(g["gap"]),
                            highest=str(g["highest"]),
                            lowest=str(g["lowest"]),
                            interval_low=float(g["interval_low"]),
                            interval_high=float(g["interval_high"]),
                            level=float(g["level"]),
                        )
                        for g in a["gaps"]
                    ),
                )
                for a in found["attributes"]
            ),
            rows=int(found["rows"]),
            seed=int(found["seed"]),
            min_group_rows=int(found["min_group_rows"]),
            min_class_rows=int(found["min_class_rows"]),
            resamples=int(found["resamples"]),
            stated_coverage=_optional_float(found.get("stated_coverage")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
