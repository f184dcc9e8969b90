"""`python -m trainer.monitor` (`make monitor`): runs the assessment the command line asks for
(trainer.monitor.cli: the options, the exit statuses) and tells its verdict: the summary, the
HTML report, and on request the JSON (trainer.monitor.report_json) and the Prometheus text file
(trainer.monitor.report_textfile); retrains on an alert when asked.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pandas as pd

from studentperf.group_quality_record import GroupQuality
from studentperf.model_artifact import METADATA_FILE, ModelArtifactError, read_metadata
from trainer import reference
from trainer.data import TrainingDataError
from trainer.db_source import DatabaseUnavailable
from trainer.evaluate import CalibrationBin
from trainer.monitor import groups
from trainer.monitor.assess import MonitorReport, assess_version, summary
from trainer.monitor.cli import MonitorConfig, parse_args
from trainer.monitor.data import read_group_quality, read_held_out, read_recent
from trainer.monitor.report_html import render
from trainer.monitor.report_json import Retrain, as_dict, as_json
from trainer.monitor.report_textfile import as_prometheus_text, write_atomically
from trainer.publish import fetch_versions
from trainer.train import TrainingConfig
from trainer.train import run as train

EXIT_OK: Final = 0
EXIT_ALERT: Final = 1
EXIT_ERROR: Final = 2


@dataclass(frozen=True)
class VersionFiles:
    """What a version's folder tells the monitor, and what it lacked."""

    reference: pd.DataFrame | None = None
    held_out: dict[str, float] | None = None
    calibration: tuple[CalibrationBin, ...] = ()
    groups: GroupQuality | None = None
    notes: tuple[str, ...] = ()


def _version_files(models_dir: Path, version: str, refused: str | None = None) -> VersionFiles:
    """The version's reference inputs, held-out metrics, calibration and per-group figures
    from disk; `refused`: why the database did not hand the version over."""
    directory = models_dir / version
    if not directory.is_dir():
        missing = f"version {version} is not in {models_dir}"
        return VersionFiles(notes=(f"{missing}: {refused}" if refused else missing,))
    notes: list[str] = []
    try:
        inputs = reference.read(directory)
    except reference.ReferenceError as err:
        inputs = None
        notes.append(str(err))
    held_out = None
    calibration: tuple[CalibrationBin, ...] = ()
    found_groups = None
    try:
        metadata = read_metadata(directory)
        held_out = {k: float(v) for k, v in metadata["metrics"].items()}
        calibration = tuple(CalibrationBin(**b) for b in metadata.get("calibration", []))
        found_groups = groups.recorded_groups(metadata.get("group_quality"))
    except (ModelArtifactError, ValueError, KeyError, TypeError, AttributeError) as err:
        notes.append(f"no held-out metrics in {directory / METADATA_FILE} ({err!r})")
    return VersionFiles(inputs, held_out, calibration, found_groups, tuple(notes))


@dataclass(frozen=True)
class Stored:
    """What model_versions holds for the versions in the window."""

    metrics: dict[str, dict[str, float]]
    groups: dict[str, object]
    # Versions the database could not hand over (STUDENTPERF_MODEL_SOURCE=database), and why.
    refused: dict[str, str] = field(default_factory=dict)


async def _read(config: MonitorConfig) -> tuple[pd.DataFrame, Stored]:
    limit = config.last if config.last is not None else config.max_rows
    recent = await read_recent(config.database_url, since=config.since, last=limit)
    versions = sorted(set(recent["model_version"]))
    if not versions:
        return recent, Stored({}, {})
    refused = {}
    if config.publish:
        refused = await fetch_versions(config.database_url, versions, config.models_dir)
    metrics = await read_held_out(config.database_url, versions)
    groups_found = await read_group_quality(config.database_url, versions)
    return recent, Stored(metrics, groups_found, refused)


def build_report(config: MonitorConfig, now: datetime) -> MonitorReport:
    """Reads the window and assesses every version in it (raises DatabaseUnavailable)."""
    recent, stored = asyncio.run(_read(config))
    window = config.window
    if config.last is None and len(recent) >= config.max_rows:
        window += f", capped at the newest {config.max_rows:,} (--max-rows)"
    versions = []
    for version, rows in recent.groupby("model_version", sort=True):
        name = str(version)
        found = _version_files(config.models_dir, name, stored.refused.get(name))
        versions.append(
            assess_version(
                name,
                rows.reset_index(drop=True),
                reference=found.reference,
                held_out=found.held_out or stored.metrics.get(name),
                thresholds=config.thresholds,
                notes=found.notes,
                held_out_calibration=found.calibration,
                held_out_groups=found.groups or groups.recorded_groups(stored.groups.get(name)),
                max_group_rows=config.max_group_rows,
            )
        )
    return MonitorReport(now, window, config.thresholds, tuple(versions))


def _retrain(config: MonitorConfig) -> Retrain:
    print("threshold crossed and --retrain-on-alert: retraining on the recorded outcomes")
    sys.stdout.flush()
    try:
        result = train(
            TrainingConfig(
                models_dir=config.models_dir,
                pass_mark=config.pass_mark,
                database_url=config.database_url,
                min_database_rows=config.min_training_rows,
                database_only=True,
                publish=config.publish,
            )
        )
    except (TrainingDataError, ModelArtifactError) as err:
        print(f"error: retraining failed: {err}", file=sys.stderr)
        return Retrain(error=f"retraining failed: {err}")
    outcome = "promoted" if result.decision.promoted else "not promoted"
    print(f"retrained: version {result.version} {outcome}")
    return Retrain(version=result.version, promoted=result.decision.promoted)


@dataclass(frozen=True)
class Verdict:
    """What one run found and did, whatever form it is told in."""

    exit_code: int
    report: MonitorReport | None = None
    html: Path | None = None
    error: str | None = None
    retrain: Retrain | None = None


def assess(config: MonitorConfig, now: datetime) -> Verdict:
    """Reads, assesses, writes the HTML report, retrains if asked; the human text on stdout."""
    try:
        report = build_report(config, now)
    except DatabaseUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return Verdict(EXIT_ERROR, error=str(err))
    text = summary(report)
    print(text)
    path = config.report or Path(".local/reports") / f"monitor-{now:%Y%m%dT%H%M%SZ}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(report, text), encoding="utf-8")
    except OSError as err:
        print(f"error: cannot write the report {path}: {err}", file=sys.stderr)
        return Verdict(EXIT_ERROR, report, error=f"cannot write the report {path}: {err}")
    print(f"report: {path}")
    if not report.alerts:
        return Verdict(EXIT_OK, report, path)
    if not config.retrain_on_alert:
        return Verdict(EXIT_ALERT, report, path)
    retrain = _retrain(config)
    code = EXIT_ERROR if retrain.error is not None else EXIT_ALERT
    return Verdict(code, report, path, retrain.error, retrain)


def _tell_machines(config: MonitorConfig, verdict: Verdict) -> int:
    """The JSON and the Prometheus text file, when asked; a file that cannot be written is an
    error (exit 2), said on stderr."""
    code, error = verdict.exit_code, verdict.error
    if config.textfile is not None:
        text = as_prometheus_text(verdict.report, code, time.time())
        try:
            write_atomically(config.textfile, text)
        except OSError as err:
            error = f"cannot write {config.textfile}: {err}"
            print(f"error: {error}", file=sys.stderr)
            code = EXIT_ERROR
    if config.json is None:
        return code
    document = as_json(
        as_dict(verdict.report, code, html=verdict.html, error=error, retrain=verdict.retrain)
    )
    if config.json == "-":
        sys.stdout.write(document)
        return code
    try:
        write_atomically(Path(config.json), document)
    except OSError as err:
        print(f"error: cannot write {config.json}: {err}", file=sys.stderr)
        return EXIT_ERROR
    return code


def main(argv: Sequence[str] | None = None) -> int:
    now = datetime.now(UTC)
    config = parse_args(argv, os.environ, now)
    # With the JSON on stdout, stdout carries the JSON alone: the summary goes to stderr.
    human: AbstractContextManager[object] = (
        redirect_stdout(sys.stderr) if config.json == "-" else nullcontext()
    )
    with human:
        verdict = assess(config, now)
    return _tell_machines(config, verdict)


if __name__ == "__main__":
    sys.exit(main())
