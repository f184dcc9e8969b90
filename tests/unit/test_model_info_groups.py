"""GetModelInfo's per-group quality: metadata.json's figures as the GroupQuality message."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from inference_service.model import load_served_model
from studentperf.model_artifact import METADATA_FILE, save_artifact
from tests.unit.group_records import before_interval_coverage
from trainer import synthetic
from trainer.fit import TrainingResult, fit_and_evaluate
from trainer.pipeline import logistic, ridge


@pytest.fixture(scope="module")
def fitted() -> TrainingResult:
    return fit_and_evaluate(
        synthetic.generate(1500, 4),
        pass_mark=50.0,
        seed=4,
        score_options=[ridge(1.0)],
        pass_options=[logistic(1.0)],
    )


def test_model_info_carries_the_groups_and_gaps_of_metadata(
    tmp_path: Path, fitted: TrainingResult
) -> None:
    groups = fitted.evaluation.groups
    path = save_artifact(
        tmp_path, fitted.model, fingerprint="0" * 8, details={"group_quality": groups.as_dict()}
    )
    info = load_served_model(str(path), expected_pass_mark=50.0).info()
    found = info.group_quality
    assert (found.rows, found.seed, found.resamples) == (300, 4, groups.resamples)
    assert (found.min_group_rows, found.min_class_rows) == (
        groups.min_group_rows,
        groups.min_class_rows,
    )
    assert [a.attribute for a in found.attributes] == [
        "profile.gender",
        "profile.lunch_program",
        "profile.parental_education",
    ]
    for message, quality in zip(found.attributes, groups.attributes, strict=True):
        assert [(g.group, g.rows, g.judged) for g in message.groups] == [
            (g.group, g.rows, g.judged) for g in quality.groups
        ]
        for group_message, group in zip(message.groups, quality.groups, strict=True):
            # Undefined figures are left out of the map, the others kept exactly.
            defined = {k: v for k, v in group.figures.items() if v is not None}
            assert dict(group_message.figures) == defined
        assert [
            (g.figure, g.gap, g.highest_group, g.lowest_group, g.interval_low, g.beyond_noise)
            for g in message.gaps
        ] == [
            (g.figure, g.gap, g.highest, g.lowest, g.interval_low, g.beyond_noise)
            for g in quality.gaps
        ]
    lunch = found.attributes[1]
    assert {g.group for g in lunch.groups if g.judged} == {"standard", "free_or_reduced"}
    assert {g.figure for g in lunch.gaps} >= {"score_rmse", "false_negative_rate"}
    # The level each group's interval_coverage is read against, as the record states it.
    assert groups.stated_coverage is not None
    assert found.HasField("stated_coverage") and found.stated_coverage == groups.stated_coverage
    assert all("interval_coverage" in g.figures for g in lunch.groups if g.judged)


def test_stated_coverage_is_unset_where_the_figures_have_no_interval_coverage(
    tmp_path: Path, fitted: TrainingResult
) -> None:
    recorded = fitted.evaluation.groups.as_dict()
    # Figures as a version without an interval records them: stated_coverage null.
    bare = save_artifact(
        tmp_path,
        fitted.model,
        fingerprint="3" * 8,
        details={"group_quality": recorded | {"stated_coverage": None}},
    )
    found = load_served_model(str(bare), expected_pass_mark=50.0).info().group_quality
    assert found.rows == recorded["rows"] and not found.HasField("stated_coverage")

    # Figures recorded before interval coverage per group: no key and no such figure, while
    # the version itself has an interval. Its stated level is not borrowed from that interval:
    # nothing says these figures were measured against it.
    before = before_interval_coverage(recorded)
    old = save_artifact(
        tmp_path,
        fitted.model,
        fingerprint="4" * 8,
        details={"group_quality": before, "score_interval": fitted.interval.as_dict()},
    )
    info = load_served_model(str(old), expected_pass_mark=50.0).info()
    assert info.HasField("score_interval") and info.score_interval.coverage > 0
    assert info.HasField("group_quality") and not info.group_quality.HasField("stated_coverage")
    assert not any(
        "interval_coverage" in g.figures for a in info.group_quality.attributes for g in a.groups
    )


def test_a_version_without_figures_or_with_broken_ones_still_serves(
    tmp_path: Path, fitted: TrainingResult, caplog: pytest.LogCaptureFixture
) -> None:
    old = save_artifact(tmp_path, fitted.model, fingerprint="1" * 8, details={})
    info = load_served_model(str(old), expected_pass_mark=50.0).info()
    assert not info.HasField("group_quality") and info.model_version == old.name

    broken = save_artifact(tmp_path, fitted.model, fingerprint="2" * 8, details={})
    metadata = json.loads((broken / METADATA_FILE).read_text())
    (broken / METADATA_FILE).write_text(json.dumps(metadata | {"group_quality": {"rows": "many"}}))
    with caplog.at_level(logging.WARNING):
        info = load_served_model(str(broken), expected_pass_mark=50.0).info()
    assert not info.HasField("group_quality") and info.model_version == broken.name
    assert "unreadable group_quality" in caplog.text
