"""The monitor's verdict as a JSON document, for a scheduler.

`make monitor JSON=-` (python -m trainer.monitor --json [PATH]) prints `as_json` on stdout, or
writes it to PATH, so a scheduler acts on `status`, `exit_code` and `alerts` without reading the
HTML (trainer.monitor.report_textfile is the same verdict for Prometheus).

The JSON document (`schema` names its version; a field is only ever added to version 1):

    {"schema": "studentperf.monitor/1", "status": "ok" | "alert" | "error", "exit_code": 0|1|2,
     "error": null | "...", "generated_at": ISO 8601, "window": "...", "report": HTML path | null,
     "thresholds": {...}, "alerts": [{"version", "subject", "message"}],
     "versions": [{"version", "predictions", "first_predicted_at", "last_predicted_at",
                   "drifting_features": [...], "drift": [{"feature", "psi", "ks_pvalue", ...}],
                   "quality": {...} | null, "coverage": {...} | null, "alerts": [...],
                   "notes": [...]}],
     "retrain": null | {"version", "promoted"} | {"error"}}

Figures that are not numbers (no ROC-AUC with one class) are null: JSON has no NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from studentperf.features import FEATURE_COLUMNS
from trainer.monitor.assess import Alert, MonitorReport, VersionReport, feature_alert

SCHEMA: Final = "studentperf.monitor/1"
STATUS: Final = {0: "ok", 1: "alert", 2: "error"}


@dataclass(frozen=True)
class Retrain:
    """What --retrain-on-alert did: the new version and whether it was promoted, or why not."""

    version: str | None = None
    promoted: bool = False
    error: str | None = None


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _alert(alert: Alert) -> dict[str, object]:
    return {"version": alert.version, "subject": alert.subject, "message": alert.message}


def _version(v: VersionReport, report: MonitorReport) -> dict[str, object]:
    thresholds = report.thresholds
    quality = None
    if v.quality is not None:
        q = v.quality
        quality = {
            "outcomes": q.rows,
            "score_rmse": _number(q.score_rmse),
            "pass_roc_auc": _number(q.pass_roc_auc),
            "pass_ece": _number(q.pass_ece),
            "rmse_ratio": _number(q.rmse_ratio),
            "auc_drop": _number(q.auc_drop),
            "held_out": dict(q.held_out) if q.held_out is not None else None,
        }
    coverage = None
    if v.coverage is not None:
        c = v.coverage
        coverage = {"outcomes": c.rows, "covered": c.covered, "stated": _number(c.stated)}
    return {
        "version": v.version,
        "predictions": v.predictions,
        "first_predicted_at": _time(v.first_predicted_at),
        "last_predicted_at": _time(v.last_predicted_at),
        "drifting_features": [a.subject for a in v.alerts if a.subject in FEATURE_COLUMNS],
        "drift": [
            {
                "feature": d.feature,
                "numeric": d.numeric,
                "psi": _number(d.psi),
                "ks_pvalue": _number(d.ks_pvalue),
                "reference_rows": d.reference_rows,
                "recent_rows": d.recent_rows,
                "crosses": feature_alert(d, thresholds),
            }
            for d in v.drift
        ],
        "quality": quality,
        "coverage": coverage,
        "alerts": [_alert(a) for a in v.alerts],
        "notes": list(v.notes),
    }


def as_dict(
    report: MonitorReport | None,
    exit_code: int,
    *,
    html: Path | None = None,
    error: str | None = None,
    retrain: Retrain | None = None,
) -> dict[str, object]:
    """The document; `report` is None when the run failed before assessing anything."""
    document: dict[str, object] = {
        "schema": SCHEMA,
        "status": STATUS[exit_code],
        "exit_code": exit_code,
        "error": error,
        "generated_at": None,
        "window": None,
        "report": str(html) if html is not None else None,
        "thresholds": None,
        "alerts": [],
        "versions": [],
        "retrain": None,
    }
    if report is not None:
        t = report.thresholds
        document |= {
            "generated_at": report.generated_at.isoformat(),
            "window": report.window,
            "thresholds": {
                "psi": t.psi,
                "ks_pvalue": t.ks_pvalue,
                "rmse_ratio": t.rmse_ratio,
                "auc_drop": t.auc_drop,
                "coverage_drop": t.coverage_drop,
                "coverage_pvalue": t.coverage_pvalue,
                "min_rows": t.min_rows,
                "min_outcomes": t.min_outcomes,
                "group_gaps": dict(t.group_gaps),
            },
            "alerts": [_alert(a) for a in report.alerts],
            "versions": [_version(v, report) for v in report.versions],
        }
    if retrain is not None:
        document["retrain"] = (
            {"error": retrain.error}
            if retrain.error is not None
            else {"version": retrain.version, "promoted": retrain.promoted}
        )
    return document


def as_json(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, allow_nan=False) + "\n"
