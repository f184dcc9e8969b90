"""Reading the public "Students Performance in Exams" CSV, row by row, with an error per bad row.

The header must be exactly

    "gender","race/ethnicity","parental level of education","lunch","test preparation course",
    "math score","reading score","writing score"

What has a counterpart in our schema is mapped: gender, parental education, lunch program, test
preparation, and final score = math score (0-100). The rest is left missing (age, the academic
record) or ignored: reading and writing scores, and race/ethnicity, which is never read at all:
a sensitive attribute has no place in a decision about a student.

"some high school" (a parent who did not finish high school; about one row in five of the
published file) is the level some_high_school, below high_school. An empty category is "not
given"; an empty or out-of-range math score, or one that is not written as a plain decimal
number (no sign, exponent, underscore or other digits than 0-9), makes the row bad. A line with
nothing in it, blank or only the commas a spreadsheet pads with, is skipped.

The file has no student ids: each row's id is `csv-<first 12 hex of the file's SHA-256>-<line>`,
so importing the same file again finds the same students, and a changed file is a new set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from studentperf.features import CATEGORIES
from studentperf.outcomes import score_is_valid

HEADER: Final = (
    "gender",
    "race/ethnicity",
    "parental level of education",
    "lunch",
    "test preparation course",
    "math score",
    "reading score",
    "writing score",
)

# CSV value -> our category name (studentperf.features.CATEGORIES).
_VALUES: Final[dict[str, dict[str, str]]] = {
    "gender": {"female": "female", "male": "male"},
    "parental level of education": {
        "some high school": "some_high_school",
        "high school": "high_school",
        "some college": "some_college",
        "associate's degree": "associate",
        "bachelor's degree": "bachelor",
        "master's degree": "master",
    },
    "lunch": {"standard": "standard", "free/reduced": "free_or_reduced"},
    "test preparation course": {"none": "none", "completed": "completed"},
}
_FEATURE: Final = {
    "gender": "gender",
    "parental level of education": "parental_education",
    "lunch": "lunch_program",
    "test preparation course": "test_preparation",
}
if any(
    name not in CATEGORIES[_FEATURE[column]]
    for column, known in _VALUES.items()
    for name in known.values()
):
    raise ImportError("trainer.kaggle maps a CSV value to a category CATEGORIES does not have")


class KaggleFormatError(Exception):
    """The file as a whole cannot be read (unreadable, or another header)."""


@dataclass(frozen=True, slots=True)
class KaggleRow:
    line: int
    student_id: str
    gender: str | None
    parental_education: str | None
    lunch_program: str | None
    test_preparation: str | None
    final_score: float


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class KaggleFile:
    path: Path
    sha256: str
    rows: tuple[KaggleRow, ...]
    errors: tuple[RowError, ...]


# What a score is written as; float() would also take "7_2", "1e1", "-0" or other scripts' digits.
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _header(text: str) -> tuple[str, ...]:
    # newline="": the csv module's own line endings, CR alone included, as for the rows.
    first = next(csv.reader(io.StringIO(text, newline="")), [])
    return tuple(name.strip() for name in first)


def is_kaggle_file(path: Path) -> bool:
    """Whether the file starts with the Kaggle header (read errors: no)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return _header(handle.readline()) == HEADER
    except (OSError, UnicodeDecodeError):
        return False


def student_id(sha256: str, line: int) -> str:
    return f"csv-{sha256[:12]}-{line:06d}"


def read(path: Path) -> KaggleFile:
    """Every good row and an error for every bad one, with its line number (the header is 1)."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise KaggleFormatError(f"cannot read {path}: {err}") from err
    if _header(text) != HEADER:
        expected = ",".join(f'"{h}"' for h in HEADER)
        raise KaggleFormatError(f"{path} does not start with the header {expected}")
    sha256 = hashlib.sha256(raw).hexdigest()
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    rows: list[KaggleRow] = []
    errors: list[RowError] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            errors.append(RowError(reader.line_num, f"not valid CSV: {err}"))
            continue
        line = reader.line_num
        if not any(field.strip() for field in fields):
            continue  # nothing in it: a blank line, or a spreadsheet's padding
        parsed = _row(fields, line, sha256)
        if isinstance(parsed, RowError):
            errors.append(parsed)
        else:
            rows.append(parsed)
    return KaggleFile(path, sha256, tuple(rows), tuple(errors))


def _row(fields: list[str], line: int, sha256: str) -> KaggleRow | RowError:
    if len(fields) != len(HEADER):
        return RowError(line, f"expected {len(HEADER)} fields, got {len(fields)}")
    given = dict(zip(HEADER, (field.strip() for field in fields), strict=True))
    problems: list[str] = []
    categories: dict[str, str | None] = {}
    for column, known in _VALUES.items():
        value = given[column].lower()
        if value == "":
            categories[_FEATURE[column]] = None
        elif value in known:
            categories[_FEATURE[column]] = known[value]
        else:
            expected = ", ".join(repr(k) for k in known)
            problems.append(
                f"{column}: unknown value {given[column]!r}; expected one of {expected}"
            )
    score_text = given["math score"]
    score = float(score_text) if _DECIMAL.fullmatch(score_text) else float("nan")
    if not score_is_valid(score):
        problems.append(f"math score: {score_text!r} is not a number from 0 to 100")
    if problems:
        return RowError(line, "; ".join(problems))
    return KaggleRow(
        line=line,
        student_id=student_id(sha256, line),
        final_score=score,
        **categories,
    )
