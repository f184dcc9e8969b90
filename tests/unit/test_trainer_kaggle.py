"""The Kaggle exam CSV: mapping, a clear error per bad row, stable ids, training from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studentperf.features import CATEGORIES, FEATURE_COLUMNS
from studentperf.group_quality_record import GroupQuality
from tests.kaggle_csv import kaggle_rows, write
from trainer import kaggle
from trainer.__main__ import main
from trainer.data import load_training_data
from trainer.group_quality import NOT_GIVEN, format_group_quality

GOOD = [
    ["female", "group B", "bachelor's degree", "standard", "none", "72", "72", "74"],
    ["male", "group A", "some high school", "free/reduced", "completed", "47", "57", "44"],
    ["female", "group C", "master's degree", "standard", "none", "0", "90", "95"],
]
BAD = [
    ["male", "group C", "some college", "free", "none", "69", "90", "88"],  # line 5
    ["female", "group D", "high school", "standard", "none", "120", "50", "50"],  # line 6
    ["male", "group E", "associate's degree", "standard"],  # line 7
    ["robot", "group B", "PhD", "standard", "none", "", "1", "2"],  # line 8
]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write(tmp_path / "exams.csv", [*GOOD, *BAD])


def test_good_rows_are_mapped_and_bad_rows_reported_by_line(mixed: Path) -> None:
    found = kaggle.read(mixed)
    assert [(r.line, r.gender, r.parental_education, r.lunch_program) for r in found.rows] == [
        (2, "female", "bachelor", "standard"),
        (3, "male", "some_high_school", "free_or_reduced"),  # not "not given" (None)
        (4, "female", "master", "standard"),
    ]
    assert [r.test_preparation for r in found.rows] == ["none", "completed", "none"]
    assert [r.final_score for r in found.rows] == [72.0, 47.0, 0.0]  # the math score
    assert [str(e) for e in found.errors] == [
        "line 5: lunch: unknown value 'free'; expected one of 'standard', 'free/reduced'",
        "line 6: math score: '120' is not a number from 0 to 100",
        "line 7: expected 8 fields, got 4",
        "line 8: gender: unknown value 'robot'; expected one of 'female', 'male'; "
        "parental level of education: unknown value 'PhD'; expected one of 'some high school', "
        "'high school', 'some college', \"associate's degree\", \"bachelor's degree\", "
        "\"master's degree\"; math score: '' is not a number from 0 to 100",
    ]


def test_ids_are_stable_per_file_and_race_is_never_read(tmp_path: Path, mixed: Path) -> None:
    first, again = kaggle.read(mixed), kaggle.read(mixed)
    assert [r.student_id for r in first.rows] == [r.student_id for r in again.rows]
    assert first.rows[0].student_id == f"csv-{first.sha256[:12]}-000002"
    # Another race/ethnicity changes the file (so its ids) but nothing about the students.
    other = write(tmp_path / "other.csv", [[r[0], "group E", *r[2:]] for r in GOOD])
    changed = kaggle.read(other)
    assert changed.sha256 != first.sha256

    def strip(r: kaggle.KaggleRow) -> tuple[object, ...]:
        return (r.gender, r.parental_education, r.lunch_program, r.final_score)

    assert [strip(r) for r in changed.rows] == [strip(r) for r in first.rows]
    assert not any("race" in column for column in FEATURE_COLUMNS)


def test_another_header_is_refused_whole(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("gender,math score\nfemale,70\n")
    assert not kaggle.is_kaggle_file(other)
    with pytest.raises(kaggle.KaggleFormatError, match="does not start with the header"):
        kaggle.read(other)


def test_lines_ended_by_cr_alone_are_read_like_any_other(tmp_path: Path) -> None:
    """Some spreadsheets export lines ended by a carriage return alone; the header's check read
    them as one unquoted field with a newline in it, and both commands ended in a traceback."""
    lines = [",".join(f'"{field}"' for field in row) for row in [list(kaggle.HEADER), *GOOD]]
    path = tmp_path / "exams.csv"
    path.write_bytes(("\r".join(lines) + "\r").encode())
    assert kaggle.is_kaggle_file(path)
    found = kaggle.read(path)
    assert [r.line for r in found.rows] == [2, 3, 4] and found.errors == ()


def test_a_score_is_a_plain_decimal_number(tmp_path: Path) -> None:
    """float() also reads "7_2" as 72, "1e1" as 10 and other scripts' digits as ours."""
    scores = ["7_2", "1e1", "\u0667\u0662", "+72", "72.5", ".5", "72."]
    found = kaggle.read(
        write(tmp_path / "exams.csv", [[*GOOD[0][:5], s, "1", "1"] for s in scores])
    )
    assert [r.final_score for r in found.rows] == [72.5, 0.5, 72.0]
    assert [e.line for e in found.errors] == [2, 3, 4, 5]


def test_a_line_with_nothing_in_it_is_skipped_as_blank(tmp_path: Path) -> None:
    path = tmp_path / "exams.csv"
    good = ",".join(f'"{field}"' for field in GOOD[0])
    path.write_text("\n".join([",".join(kaggle.HEADER), good, "", ",,,,,,,", " , ", good]) + "\n")
    found = kaggle.read(path)
    assert [r.line for r in found.rows] == [2, 6] and found.errors == ()


def test_training_data_from_the_file_leaves_the_rest_missing(mixed: Path) -> None:
    data = load_training_data(csv=mixed, seed=0)
    assert len(data.frame) == 3 and data.dropped_rows == 4
    assert data.notes[0].endswith("3 good rows, 4 bad rows left out")
    assert "line 5: lunch" in data.notes[1]
    assert data.frame["age"].isna().all() and data.frame["previous_gpa"].isna().all()
    assert "race/ethnicity" not in data.frame.columns
    assert "Kaggle exam format" in data.source


# The parental education levels of the published file, as it spells them.
FILE_LEVELS = (
    "some high school",
    "high school",
    "some college",
    "associate's degree",
    "bachelor's degree",
    "master's degree",
)


def test_every_level_of_the_file_is_one_of_ours(tmp_path: Path) -> None:
    """The file's six levels, "some high school" among them, each map to a level of ours."""
    rows = [
        ["female", "group B", level, "standard", "none", "60", "60", "60"] for level in FILE_LEVELS
    ]
    found = kaggle.read(write(tmp_path / "levels.csv", rows))
    assert not found.errors
    assert [r.parental_education for r in found.rows] == [
        "some_high_school",
        "high_school",
        "some_college",
        "associate",
        "bachelor",
        "master",
    ]
    assert set(CATEGORIES["parental_education"]) - {r.parental_education for r in found.rows} == {
        "doctorate"  # the file has no doctorate level
    }


def test_the_trainer_trains_on_a_kaggle_file_and_judges_it_per_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write(tmp_path / "exams.csv", [*kaggle_rows(400, seed=5), BAD[0]])
    models = tmp_path / "models"
    assert main(["--csv", str(csv), "--models-dir", str(models), "--no-database"]) == 0
    out = capsys.readouterr().out
    assert "400 good rows, 1 bad rows left out" in out and "line 402: lunch" in out
    metadata = json.loads((models / "current" / "metadata.json").read_text())
    assert metadata["rows"] == 400 and metadata["dropped_rows"] == 1

    # The per-group table is printed and kept for a CSV as for synthetic data, and "some high
    # school" is a group of its own rather than part of not_given.
    kept = GroupQuality.from_dict(metadata["group_quality"])
    assert format_group_quality(kept) in out
    education = kept.attribute("parental_education")
    assert education is not None
    rows = {g.group: g.rows for g in education.groups}
    print("parental_education rows in the test split:", rows)
    assert rows.get("some_high_school", 0) > 0
    assert sum(rows.values()) == kept.rows == 80  # the 20 % test split of 400
    # Only the generator's blanked values (2.5 %) are not given, not one row in five.
    assert rows.get(NOT_GIVEN, 0) < 0.08 * kept.rows
    importances = {i["feature"]: i["rmse_increase"] for i in metadata["feature_importances"]}
    # Inputs the file does not have cannot matter; test preparation, which it has, does.
    assert importances["academic_record.previous_gpa"] == 0.0
    assert importances["profile.age"] == 0.0
    assert importances["profile.test_preparation"] > 0.1


def test_the_sample_file_the_readme_offers_imports_whole() -> None:
    """docs/examples/exams_sample.csv, for trying `make import`: every row good, none
    refused (a user's first import should not start with errors they did not make)."""
    sample = Path(__file__).parents[2] / "docs" / "examples" / "exams_sample.csv"
    found = kaggle.read(sample)
    assert len(found.rows) == 300 and found.errors == ()
