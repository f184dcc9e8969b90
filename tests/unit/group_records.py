"""Per-group quality records as a version from before interval coverage per group kept them,
for the tests of the gate and of GetModelInfo that read such a version."""

from __future__ import annotations

import copy
from typing import Any


def before_interval_coverage(recorded: dict[str, Any]) -> dict[str, Any]:
    """`recorded` (a GroupQuality.as_dict()) as it was written before coverage per group was
    measured: no stated_coverage, and no interval_coverage figure or gap anywhere."""
    old = copy.deepcopy(recorded)
    del old["stated_coverage"]
    for attribute in old["attributes"]:
        attribute["gaps"] = [g for g in attribute["gaps"] if g["figure"] != "interval_coverage"]
        for group in attribute["groups"]:
            del group["figures"]["interval_coverage"]
    return old
