"""The monitor's verdict as Prometheus gauges, for a node_exporter textfile collector.

`--prometheus-textfile PATH` (make monitor PROM=path) writes `as_prometheus_text` to PATH after
each run; the collector serves it, and the `ModelDriftAlert` rule (infra/prometheus/alerts.yml)
fires on `studentperf_monitor_alerts`. Every series of the file is replaced on each run, so a
version that left the window leaves the file too.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Final

from trainer.monitor.assess import MonitorReport

PREFIX: Final = "studentperf_monitor_"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def as_prometheus_text(report: MonitorReport | None, exit_code: int, finished: float) -> str:
    """Gauges of the run, in the text exposition format; `finished` is Unix time."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        for labels, value in samples:
            pairs = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            selector = f"{PREFIX}{name}{{{pairs}}}" if pairs else PREFIX + name
            # repr: the shortest text that reads back as the same float (a Unix time keeps its
            # fraction; `:g` would round it to six digits).
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{selector} {number}")

    gauge(
        "last_run_timestamp_seconds",
        "When the last monitor run finished (Unix time).",
        [({}, finished)],
    )
    gauge(
        "exit_code",
        "The last run's exit status: 0 fine, 1 a threshold crossed, 2 an error.",
        [({}, exit_code)],
    )
    versions = report.versions if report is not None else ()
    gauge(
        "alerts",
        "Thresholds the last run found crossed, per model version (drift, quality, groups).",
        [({"model_version": v.version}, len(v.alerts)) for v in versions],
    )
    gauge(
        "predictions",
        "Predictions of the version the last run read.",
        [({"model_version": v.version}, v.predictions) for v in versions],
    )
    gauge(
        "feature_psi",
        "Population stability index of a feature: recent inputs against training inputs.",
        [
            ({"model_version": v.version, "feature": d.feature}, d.psi)
            for v in versions
            for d in v.drift
            if math.isfinite(d.psi)
        ],
    )
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all: a collector reading the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
