"""Writing "Students Performance in Exams" CSV files for tests, from synthetic students."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from trainer import kaggle, synthetic

_BACK = {
    "parental_education": {
        "some_high_school": "some high school",
        "high_school": "high school",
        "some_college": "some college",
        "associate": "associate's degree",
        "bachelor": "bachelor's degree",
        "master": "master's degree",
        "doctorate": "master's degree",  # the file has no doctorate level
    },
    "lunch_program": {"standard": "standard", "free_or_reduced": "free/reduced"},
    "test_preparation": {"none": "none", "completed": "completed"},
    "gender": {"female": "female", "male": "male", "other": "female"},
}
GROUPS = ("group A", "group B", "group C", "group D", "group E")


def kaggle_rows(n: int, seed: int) -> list[list[str]]:
    """`n` rows in the file's format; math score = the synthetic final score, rounded."""
    frame = synthetic.generate(n, seed)
    rng = np.random.default_rng(seed)
    rows = []
    for index, student in frame.iterrows():
        fields = [
            _BACK[c].get(student[c], "") if student[c] is not None else ""
            for c in ("gender", "parental_education", "lunch_program", "test_preparation")
        ]
        score = round(student["final_score"])
        rows.append(
            [
                fields[0],
                str(GROUPS[index % len(GROUPS)]),
                fields[1],
                fields[2],
                fields[3],
                str(score),
                str(int(np.clip(score + rng.normal(0, 5), 0, 100))),
                str(int(np.clip(score + rng.normal(0, 5), 0, 100))),
            ]
        )
    return rows


def write(path: Path, rows: list[list[str]]) -> Path:
    """Quoted like the published file: every field in double quotes."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(kaggle.HEADER)
        writer.writerows(rows)
    return path
