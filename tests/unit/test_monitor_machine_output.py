"""The monitor's verdict for machines on fixed data: the JSON document (trainer.monitor.
report_json), the Prometheus text file (trainer.monitor.report_textfile) and their flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from studentperf.features import FEATURE_COLUMNS
from tests.unit.test_monitor import HELD_OUT, NOW, recent_frame
from trainer import synthetic
from trainer.monitor.assess import MonitorReport, Thresholds, VersionReport, assess_version
from trainer.monitor.cli import parse_args
from trainer.monitor.report_json import SCHEMA, Retrain, as_dict, as_json
from trainer.monitor.report_textfile import as_prometheus_text, write_atomically

ENV = {"STUDENTPERF_DATABASE_URL": "postgresql://u@localhost/db"}


def drifted_version() -> VersionReport:
    """Study hours and lunch program shifted (as in test_monitor), outcomes all passes: no
    ROC-AUC, which must come out as null."""
    reference = synthetic.generate(2000, 1)[list(FEATURE_COLUMNS)]
    drifted = synthetic.generate(400, 2)
    drifted["study_hours_per_week"] = drifted["study_hours_per_week"] + 10
    drifted["lunch_program"] = np.where(np.arange(400) % 5 == 0, "standard", "free_or_reduced")
    recent = recent_frame(drifted, outcomes=True)
    recent["final_score"] = 90.0
    return assess_version(
        "v-drift", recent, reference=reference, held_out=HELD_OUT, thresholds=Thresholds()
    )


def calm_version() -> VersionReport:
    reference = synthetic.generate(2000, 1)[list(FEATURE_COLUMNS)]
    recent = recent_frame(synthetic.generate(400, 3))
    return assess_version(
        "v-calm", recent, reference=reference, held_out=HELD_OUT, thresholds=Thresholds()
    )


@pytest.fixture(scope="module")
def report() -> MonitorReport:
    versions = (drifted_version(), calm_version())
    return MonitorReport(NOW, "the last 400 predictions", Thresholds(), versions)


def test_the_json_names_the_drifting_features_per_version(report: MonitorReport) -> None:
    document = json.loads(as_json(as_dict(report, 1, html=Path("r.html"))))
    assert document["schema"] == SCHEMA
    assert (document["status"], document["exit_code"], document["error"]) == ("alert", 1, None)
    assert document["report"] == "r.html" and document["window"] == "the last 400 predictions"
    assert document["generated_at"] == NOW.isoformat()
    by_version = {v["version"]: v for v in document["versions"]}
    drift, calm = by_version["v-drift"], by_version["v-calm"]
    assert set(drift["drifting_features"]) == {"study_hours_per_week", "lunch_program"}
    assert calm["drifting_features"] == [] and calm["alerts"] == [] and calm["quality"] is None
    assert {a["version"] for a in document["alerts"]} == {"v-drift"}
    assert {a["subject"] for a in document["alerts"]} >= {"study_hours_per_week", "score_rmse"}
    psi = {d["feature"]: d for d in drift["drift"]}
    assert psi["study_hours_per_week"]["crosses"].startswith("PSI")
    assert psi["age"]["crosses"] is None and psi["age"]["psi"] < 0.2
    # Every outcome a pass: no ROC-AUC, null in the JSON (json.dumps refuses NaN here).
    assert drift["quality"]["pass_roc_auc"] is None and drift["quality"]["outcomes"] == 400
    assert document["thresholds"]["psi"] == 0.2 and document["retrain"] is None


def test_the_json_of_a_failure_and_of_a_retrain() -> None:
    failed = as_dict(None, 2, error="database unreachable")
    assert (failed["status"], failed["exit_code"], failed["error"]) == (
        "error",
        2,
        "database unreachable",
    )
    assert failed["versions"] == [] and failed["alerts"] == [] and failed["window"] is None
    retrained = as_dict(None, 1, retrain=Retrain(version="v9", promoted=False))
    assert retrained["retrain"] == {"version": "v9", "promoted": False}
    refused = as_dict(None, 2, retrain=Retrain(error="too few rows"))
    assert refused["retrain"] == {"error": "too few rows"}


def test_the_text_file_holds_the_alerts_and_psi_per_version(report: MonitorReport) -> None:
    text = as_prometheus_text(report, 1, 1764750000.125)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("studentperf_monitor_last_run_timestamp_seconds", ())] == 1764750000.125
    assert samples[("studentperf_monitor_exit_code", ())] == 1
    drifted, calm = report.versions
    assert drifted.alerts
    for version in report.versions:
        key = ("studentperf_monitor_alerts", (("model_version", version.version),))
        assert samples[key] == len(version.alerts)
    assert samples[("studentperf_monitor_alerts", (("model_version", "v-calm"),))] == 0
    for d in drifted.drift:
        labels = (("feature", d.feature), ("model_version", "v-drift"))
        assert samples[("studentperf_monitor_feature_psi", labels)] == pytest.approx(d.psi)
    assert (
        calm.predictions
        == samples[("studentperf_monitor_predictions", (("model_version", "v-calm"),))]
    )


def test_the_text_file_escapes_label_values() -> None:
    odd = MonitorReport(NOW, "w", Thresholds(), (VersionReport('a"b\\c', 3, None, None),))
    [family] = [
        f
        for f in text_string_to_metric_families(as_prometheus_text(odd, 0, 0.0))
        if f.name == "studentperf_monitor_predictions"
    ]
    assert [s.labels["model_version"] for s in family.samples] == ['a"b\\c']


def test_files_are_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "collector" / "studentperf.prom"
    write_atomically(target, "first\n")
    write_atomically(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["studentperf.prom"]
    with pytest.raises(OSError):
        write_atomically(tmp_path / "collector" / "studentperf.prom" / "x", "under a file")


def test_json_and_textfile_flags() -> None:
    assert parse_args([], ENV, NOW).json is None
    assert parse_args(["--json"], ENV, NOW).json == "-"
    assert parse_args(["--json", "out/v.json"], ENV, NOW).json == "out/v.json"
    config = parse_args(["--json", "--prometheus-textfile", "m.prom", "--last", "5"], ENV, NOW)
    assert (config.json, config.textfile, config.last) == ("-", Path("m.prom"), 5)
