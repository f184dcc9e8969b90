"""`python -m trainer.monitor` (`make monitor`): drift and live quality of the served versions.

Reads the predictions of a window (--since, default 7d, or --last N) from PostgreSQL, groups them
by the model version that served them, and compares each group's inputs with that version's
training inputs (models/<version>/reference_inputs.csv; with STUDENTPERF_MODEL_SOURCE=database
each version is first brought from the database into --models-dir, hashes checked, as a replica
does) and its recorded outcomes with its held-out metrics, overall and per group of students
(gender, lunch program, parental education: the gaps between groups against the version's gaps
at training). Prints a short summary, writes a self-contained HTML report (--report, default
.local/reports/monitor-<UTC time>.html) and says where.

Exit status: 0 no threshold crossed (or nothing to judge), 1 a threshold crossed, 2 a usage
error or a failure (database unreachable, report not writable, a retrain that failed).
For a scheduler: --json prints the verdict as JSON on stdout (the summary then goes to stderr)
or writes it to a file (trainer.monitor.report_json), with the same exit status and, for a
failure after the arguments were read, "status": "error"; --prometheus-textfile writes it as
gauges for a node_exporter textfile collector (trainer.monitor.report_textfile).
With --retrain-on-alert a crossed threshold also runs `make retrain` (python -m trainer
--database-only): train on the recorded outcomes, gate, promote; the exit status stays 1.
Threshold defaults come from STUDENTPERF_MONITOR_* variables (see --help); the thresholds of
the gaps between groups of students are the promotion gate's (STUDENTPERF_GROUP_GAP_THRESHOLDS).

Why this module is about 300 lines: it is the command's whole contract (arguments, run, exit
status), read in one place.
"""

# This module reads the command line into a MonitorConfig (its docstring is --help's text);
# trainer.monitor.__main__ runs it.
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from studentperf.config import (
    ConfigError,
    DatabaseRole,
    SharedSettings,
    env_float,
    env_int,
    env_str,
)
from studentperf.features import DEFAULT_PASS_MARK
from studentperf.model_store import read_model_source
from trainer.fit import MIN_ROWS
from trainer.monitor import groups
from trainer.monitor.assess import Thresholds
from trainer.promote import GAP_THRESHOLDS_VARIABLE, parse_gap_thresholds

MAX_ROWS: Final = 100_000
_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class MonitorConfig:
    database_url: str
    models_dir: Path
    since: datetime | None  # None with `last`
    last: int | None
    # With --since: read at most this many (the newest), so a busy week cannot exhaust memory.
    max_rows: int
    # Outcomes per version the per-group figures use at most (a seeded sample above that).
    max_group_rows: int
    window: str  # how the window was asked for, for the report
    thresholds: Thresholds
    report: Path | None  # None: the default path under .local/reports
    retrain_on_alert: bool = False
    json: str | None = None  # "-": stdout; else a file path
    textfile: Path | None = None
    pass_mark: float = DEFAULT_PASS_MARK
    min_training_rows: int = 200
    # Versions travel through the database (STUDENTPERF_MODEL_SOURCE=database): the versions
    # judged are fetched from it, and a retrain publishes its version there.
    publish: bool = False


def parse_since(text: str, now: datetime) -> datetime:
    """'7d', '12h', '30m', '90s', '2w' back from `now`, or an ISO 8601 time (naive: UTC)."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (e.g. 7d, 12h, 30m) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_args(
    argv: Sequence[str] | None, environ: Mapping[str, str], now: datetime
) -> MonitorConfig:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        shared = SharedSettings.from_env(environ, DatabaseRole.TRAINER)
        default_since = env_str(environ, "MONITOR_SINCE", "7d")
        defaults = Thresholds(
            psi=env_float(environ, "MONITOR_PSI", Thresholds.psi, minimum=0, maximum=100),
            ks_pvalue=env_float(
                environ, "MONITOR_KS_PVALUE", Thresholds.ks_pvalue, minimum=0, maximum=1
            ),
            rmse_ratio=env_float(
                environ, "MONITOR_RMSE_RATIO", Thresholds.rmse_ratio, minimum=1, maximum=100
            ),
            auc_drop=env_float(
                environ, "MONITOR_AUC_DROP", Thresholds.auc_drop, minimum=0, maximum=1
            ),
            min_rows=env_int(environ, "MONITOR_MIN_ROWS", Thresholds.min_rows, minimum=1),
            min_outcomes=env_int(
                environ, "MONITOR_MIN_OUTCOMES", Thresholds.min_outcomes, minimum=1
            ),
            coverage_drop=env_float(
                environ, "MONITOR_COVERAGE_DROP", Thresholds.coverage_drop, minimum=0, maximum=1
            ),
        )
        pass_mark = env_float(
            environ, "PASS_MARK", DEFAULT_PASS_MARK, minimum=sys.float_info.min, maximum=100
        )
        min_training_rows = env_int(environ, "MIN_TRAINING_ROWS", 200, minimum=MIN_ROWS)
        publish = read_model_source(environ) == "database"
        max_rows = env_int(environ, "MONITOR_MAX_ROWS", MAX_ROWS, minimum=1)
        max_group_rows = env_int(
            environ, "MONITOR_MAX_GROUP_ROWS", groups.MAX_ROWS, minimum=groups.MIN_SAMPLE
        )
    except ConfigError as err:
        parser.error(str(err))
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--since",
        default=default_since,
        help="predictions made since: a duration back from now (7d, 12h, 30m) or an ISO 8601 "
        "time (env STUDENTPERF_MONITOR_SINCE, default 7d)",
    )
    window.add_argument("--last", type=int, help="the last N predictions instead of --since")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=max_rows,
        help="with --since, read at most the newest N predictions "
        f"(env STUDENTPERF_MONITOR_MAX_ROWS, default {MAX_ROWS:,})",
    )
    parser.add_argument(
        "--max-group-rows",
        type=int,
        default=max_group_rows,
        help="per-group quality from at most N outcomes per version, a seeded sample above that "
        f"(env STUDENTPERF_MONITOR_MAX_GROUP_ROWS, default {groups.MAX_ROWS:,})",
    )
    parser.add_argument(
        "--database-url", default=shared.database_url, help="env STUDENTPERF_DATABASE_URL"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(environ.get("STUDENTPERF_MODELS_DIR", "models")),
        help="where the versions' reference inputs and metrics are (env STUDENTPERF_MODELS_DIR)",
    )
    parser.add_argument(
        "--report", type=Path, help="HTML report path (default .local/reports/monitor-<time>.html)"
    )
    limits = parser.add_argument_group("thresholds (each also from an env variable)")
    limits.add_argument(
        "--psi",
        type=float,
        default=defaults.psi,
        help=f"alert at this PSI or more (STUDENTPERF_MONITOR_PSI, default {Thresholds.psi:g})",
    )
    limits.add_argument(
        "--ks-pvalue",
        type=float,
        default=defaults.ks_pvalue,
        help="alert below this KS p-value, numbers only; 0 turns the test's alerts off "
        f"(STUDENTPERF_MONITOR_KS_PVALUE, default {Thresholds.ks_pvalue:g})",
    )
    limits.add_argument(
        "--rmse-ratio",
        type=float,
        default=defaults.rmse_ratio,
        help="alert when live RMSE exceeds this multiple of the held-out RMSE "
        f"(STUDENTPERF_MONITOR_RMSE_RATIO, default {Thresholds.rmse_ratio:g})",
    )
    limits.add_argument(
        "--auc-drop",
        type=float,
        default=defaults.auc_drop,
        help="alert when live ROC-AUC is more than this below the held-out "
        f"(STUDENTPERF_MONITOR_AUC_DROP, default {Thresholds.auc_drop:g})",
    )
    limits.add_argument(
        "--coverage-drop",
        type=float,
        default=defaults.coverage_drop,
        help="alert when live interval coverage is more than this below the stated level "
        "(and a binomial test says it is no chance) "
        f"(STUDENTPERF_MONITOR_COVERAGE_DROP, default {Thresholds.coverage_drop:g})",
    )
    limits.add_argument(
        "--min-rows",
        type=int,
        default=defaults.min_rows,
        help="fewest recent inputs of a version to judge its drift "
        f"(STUDENTPERF_MONITOR_MIN_ROWS, default {Thresholds.min_rows})",
    )
    limits.add_argument(
        "--min-outcomes",
        type=int,
        default=defaults.min_outcomes,
        help="fewest outcomes of a version to judge its live quality "
        f"(STUDENTPERF_MONITOR_MIN_OUTCOMES, default {Thresholds.min_outcomes})",
    )
    limits.add_argument(
        "--gap-thresholds",
        default=environ.get(GAP_THRESHOLDS_VARIABLE, ""),
        metavar="FIGURE=VALUE,...",
        help="how much wider than at training a live gap between groups of students may get, "
        "per figure, over the promotion gate's defaults (the gate's own variable, "
        f"{GAP_THRESHOLDS_VARIABLE}, so both judge alike)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also give the verdict as JSON: on stdout (the summary then goes to stderr), or "
        "to PATH; same exit status",
    )
    parser.add_argument(
        "--prometheus-textfile",
        type=Path,
        metavar="PATH",
        help="also write the verdict as Prometheus gauges to PATH (node_exporter's textfile "
        "collector; written whole, by rename)",
    )
    parser.add_argument(
        "--retrain-on-alert",
        action="store_true",
        help="when a threshold is crossed, retrain on the database's recorded outcomes "
        "(as `make retrain`) and promote the new version if it passes the gate",
    )
    parser.add_argument(
        "--min-db-rows",
        type=int,
        default=min_training_rows,
        help="for the retrain: fewest labelled rows (env STUDENTPERF_MIN_TRAINING_ROWS, 200)",
    )
    args = parser.parse_args(argv)
    if args.last is not None and args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    if args.psi < 0 or not 0 <= args.ks_pvalue <= 1 or args.rmse_ratio < 1 or args.auc_drop < 0:
        parser.error(
            "thresholds: --psi >= 0, 0 <= --ks-pvalue <= 1, --rmse-ratio >= 1, --auc-drop >= 0"
        )
    if not 0 <= args.coverage_drop <= 1:
        parser.error(f"--coverage-drop must be in [0, 1], got {args.coverage_drop}")
    if args.min_rows < 1 or args.min_outcomes < 1 or args.max_rows < 1:
        parser.error("--min-rows, --min-outcomes and --max-rows must be at least 1")
    if args.max_group_rows < groups.MIN_SAMPLE:
        parser.error(f"--max-group-rows must be at least {groups.MIN_SAMPLE}")
    try:
        gap_thresholds = parse_gap_thresholds(args.gap_thresholds)
    except ValueError as err:
        parser.error(f"--gap-thresholds ({GAP_THRESHOLDS_VARIABLE}): {err}")
    if args.min_db_rows < MIN_ROWS:
        parser.error(f"--min-db-rows must be at least {MIN_ROWS}, got {args.min_db_rows}")
    since = None
    if args.last is None:
        try:
            since = parse_since(args.since, now)
        except ValueError as err:
            parser.error(f"--since: {err}")
        window_text = f"predictions since {since:%Y-%m-%d %H:%M:%S %Z} (--since {args.since})"
    else:
        window_text = f"the last {args.last} predictions"
    return MonitorConfig(
        database_url=args.database_url,
        models_dir=args.models_dir,
        since=since,
        last=args.last,
        max_rows=args.max_rows,
        max_group_rows=args.max_group_rows,
        window=window_text,
        thresholds=Thresholds(
            psi=args.psi,
            ks_pvalue=args.ks_pvalue,
            rmse_ratio=args.rmse_ratio,
            auc_drop=args.auc_drop,
            coverage_drop=args.coverage_drop,
            min_rows=args.min_rows,
            min_outcomes=args.min_outcomes,
            group_gaps=gap_thresholds,
        ),
        report=args.report,
        retrain_on_alert=args.retrain_on_alert,
        json=args.json,
        textfile=args.prometheus_textfile,
        pass_mark=pass_mark,
        min_training_rows=args.min_db_rows,
        publish=publish,
    )
