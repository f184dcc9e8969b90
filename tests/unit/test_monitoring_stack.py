"""The Grafana dashboard and the Prometheus alert rules against what the processes export, and
compose's monitoring profile mounting them, all checked without a Docker engine.

"What the processes export" is read from the processes' own collectors: the inference
service's and the recorder's registries scraped as Prometheus would (the inference service's
state gauges over stand-ins for its core and publisher), and the monitor's text file rendered
from a report. So a metric renamed in the code fails here until the dashboard and rules follow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference_service.core import PredictionCore
from inference_service.delivery import DurablePublisher
from inference_service.health_endpoint import InferenceHealth
from inference_service.metrics import InferenceMetrics
from recorder_service.health import RecorderHealth
from tests.unit.test_compose import ROOT, container_ports, mounts, services
from trainer.monitor.report_textfile import as_prometheus_text

GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
PROMETHEUS = ROOT / "infra" / "prometheus"
# Series Prometheus makes itself, not scraped: the alert rules' state.
BUILT_IN = {"ALERTS", "ALERTS_FOR_STATE"}
# PromQL words that look like metric names but are functions, keywords or label names.
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABEL_SETS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def exported_series(text: str) -> set[str]:
    """Every series name a scrape of this exposition text can hold (empty families included,
    so a labelled metric with no sample yet still counts)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
    return names


def inference_exposition() -> str:
    registry = CollectorRegistry()
    InferenceMetrics(registry)
    spool = SimpleNamespace(
        records=0, bytes=0, max_bytes=1, set_aside_records=0, damaged_bytes=0,
        damaged_regions=0, full=False,
    )  # fmt: skip
    publisher = SimpleNamespace(spool=spool, kafka_connected=True)
    core = SimpleNamespace(in_flight=0, cut_off=0)
    InferenceHealth(cast(PredictionCore, core), cast(DurablePublisher, publisher), registry)
    return generate_latest(registry).decode()


EXPORTED = (
    exported_series(inference_exposition())
    | exported_series(RecorderHealth().metrics())
    | exported_series(as_prometheus_text(None, 0, 0.0))
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRINGS.sub("", expr)
    text = _LABEL_SETS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPINGS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() in {"and", "or", "unless", "bool", "offset", "inf", "nan"}:
            continue
        names.add(match.group())
    return names


def test_the_expression_reader_finds_names_and_only_names() -> None:
    expr = (
        'sum by (method) (rate(a_total{code=~"X|Y"}[5m])) / on (job) b > 0.05 '
        "and histogram_quantile(0.99, sum by (le) (rate(c_bucket[1m]))) or time() - d"
    )
    assert metric_names(expr) == {"a_total", "b", "c_bucket", "d"}


def test_the_processes_export_what_the_readme_lists() -> None:
    # A few anchors, so an empty scrape cannot make every later check pass.
    assert {
        "studentperf_inference_rpc_duration_seconds_count",
        "studentperf_inference_spool_events",
        "studentperf_inference_kafka_connected",
        "studentperf_recorder_consumer_lag",
        "studentperf_monitor_alerts",
    } <= EXPORTED


# --- the dashboard --------------------------------------------------------------------------


def dashboards() -> list[Path]:
    found = sorted(DASHBOARDS.glob("*.json"))
    assert found, f"no dashboard in {DASHBOARDS}"
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row holds its panels
    return [p for p in found if p["type"] != "row"]


def datasource_uids() -> set[str]:
    uids = set()
    for path in (PROVISIONING / "datasources").glob("*.yml"):
        uids |= {d["uid"] for d in yaml.safe_load(path.read_text())["datasources"]}
    return uids


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_every_panel_queries_metrics_the_processes_export(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    queried = 0
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] in datasource_uids(), panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            unknown = names - EXPORTED - BUILT_IN
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}"
            queried += 1
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    print(f"{path.name}: {len(ids)} panels, {queried} queries, every metric exported")


def test_the_dashboard_shows_every_alerts_metric() -> None:
    shown = {
        name
        for path in dashboards()
        for panel in panels(json.loads(path.read_text()))
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    assert alert_metrics() <= shown


# --- the alert rules ------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alert_metrics() -> set[str]:
    return {name for rule in rules() for name in metric_names(str(rule["expr"]))}


def test_every_alert_rule_queries_metrics_the_processes_export() -> None:
    for rule in rules():
        names = metric_names(str(rule["expr"]))
        assert names and not names - EXPORTED, (rule["alert"], sorted(names - EXPORTED))


def test_the_alerts_the_issue_asks_for_exist_and_each_is_unit_tested() -> None:
    alerts = {rule["alert"] for rule in rules()}
    asked = {
        "InferenceSpoolBacklog",  # spool depth
        "InferenceKafkaDisconnected",
        "RecorderConsumerLagHigh",
        "InferenceErrorRatioHigh",
        "ModelDriftAlert",
    }
    assert asked <= alerts
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {
        case["alertname"]: case["exp_alerts"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    silent = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    # Each alert is shown firing, and shown silent where it must not fire.
    assert set(tested) == alerts and silent == alerts


# --- compose --------------------------------------------------------------------------------


def mounted(service: str, target: str) -> Path:
    [source] = [src for src, dst, _ in mounts(service) if dst == target]
    return (ROOT / source).resolve()


def test_prometheus_loads_the_rules_file_compose_mounts() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [rule_file] = config["rule_files"]
    assert mounted("prometheus", rule_file) == (PROMETHEUS / "alerts.yml").resolve()


def test_grafana_is_provisioned_from_the_project_files() -> None:
    grafana = services()["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana" and re.fullmatch(r"\d+\.\d+\.\d+", tag)
    assert mounted("grafana", "/etc/grafana/provisioning") == PROVISIONING.resolve()
    assert all(mode == "ro" for src, _, mode in mounts("grafana") if src.startswith("./"))
    # The dashboard provider reads the folder compose mounts the dashboards at.
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "studentperf.yml").read_text())[
        "providers"
    ]
    assert mounted("grafana", provider["options"]["path"]) == DASHBOARDS.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, name = home.rpartition("/")
    assert folder == provider["options"]["path"] and (DASHBOARDS / name).is_file()


def test_grafana_reads_the_compose_prometheus() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    host, _, port = source["url"].removeprefix("http://").partition(":")
    assert host == "prometheus" and int(port) in container_ports(host)
    assert source["type"] == "prometheus"
    assert "prometheus" in services()["grafana"]["depends_on"]
