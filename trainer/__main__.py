"""`python -m trainer`: train a model version, promote it if it is not worse than the current.

Data: the database's outcomes by default (STUDENTPERF_DATABASE_URL), falling back to synthetic
data, and saying so, when the database is unreachable or has fewer than --min-db-rows labelled
rows; --csv trains on a CSV (our columns, or the Kaggle exam format); --synthetic forces the
generator; --database-only (`make retrain`) trains on the database's rows or fails, never on
synthetic data; --first-only does nothing when a version is served already (a new
installation's first training, deploy/base/train.yaml). Defaults come from
STUDENTPERF_MODELS_DIR (models), STUDENTPERF_PASS_MARK (50), STUDENTPERF_MIN_TRAINING_ROWS (200)
and STUDENTPERF_GROUP_GAP_THRESHOLDS (how much a gap between groups of students may widen before
the gate refuses a version; trainer.promote).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from studentperf.config import ConfigError, DatabaseRole, SharedSettings, env_int
from studentperf.features import DEFAULT_PASS_MARK, SCORE_RANGE
from studentperf.model_artifact import CURRENT, ModelArtifactError
from studentperf.model_store import read_model_source
from trainer.conformal import COVERAGE_VARIABLE, DEFAULT_COVERAGE
from trainer.data import SYNTHETIC_ROWS, TrainingDataError
from trainer.fit import MIN_ROWS
from trainer.promote import GAP_THRESHOLDS_VARIABLE, parse_gap_thresholds
from trainer.publish import database_current
from trainer.train import TrainingConfig, run


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> TrainingConfig:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--csv", type=Path, help="train on this CSV instead of the database")
    source.add_argument(
        "--synthetic", action="store_true", help="train on synthetic data, whatever the database"
    )
    source.add_argument(
        "--database-only",
        action="store_true",
        help="retrain on the database's recorded rows; fail rather than fall back to synthetic",
    )
    parser.add_argument(
        "--rows",
        type=int,
        help=f"synthetic rows (default {SYNTHETIC_ROWS}); said to be unused when the rows come "
        "from the database or a CSV",
    )
    parser.add_argument("--seed", type=int, default=42, help="data and split seed (default 42)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(environ.get("STUDENTPERF_MODELS_DIR", "models")),
        help="where versions and the `current` link live (env STUDENTPERF_MODELS_DIR)",
    )
    parser.add_argument(
        "--pass-mark",
        type=float,
        default=environ.get("STUDENTPERF_PASS_MARK", str(DEFAULT_PASS_MARK)),
        help="final score that counts as a pass (env STUDENTPERF_PASS_MARK, default 50)",
    )
    try:
        shared = SharedSettings.from_env(environ, DatabaseRole.TRAINER)
        min_rows = env_int(environ, "MIN_TRAINING_ROWS", 200, minimum=MIN_ROWS)
        publish = read_model_source(environ) == "database"
    except ConfigError as err:
        parser.error(str(err))
    parser.add_argument(
        "--database-url",
        default=shared.database_url,
        help="read outcomes from and record the version in this database "
        "(env STUDENTPERF_DATABASE_URL)",
    )
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=publish,
        help="store each version in the database and move its `current` on promotion, for "
        "replicas on other machines (default: on when STUDENTPERF_MODEL_SOURCE=database)",
    )
    parser.add_argument(
        "--no-database",
        action="store_true",
        help="neither read from nor write to a database (tests, offline use)",
    )
    parser.add_argument(
        "--min-db-rows",
        type=int,
        default=min_rows,
        help="fewest labelled rows the database must have to be used "
        "(env STUDENTPERF_MIN_TRAINING_ROWS, default 200)",
    )
    parser.add_argument(
        "--force", action="store_true", help="promote even if worse than the current version"
    )
    parser.add_argument(
        "--first-only",
        action="store_true",
        help="do nothing when a version is served already (the database's `current` with "
        "--publish, else the models folder's): a new installation's first training",
    )
    parser.add_argument(
        "--gap-thresholds",
        default=environ.get(GAP_THRESHOLDS_VARIABLE, ""),
        metavar="FIGURE=VALUE,...",
        help="how much wider than the current version's a gap between groups of students may "
        "get, per figure, e.g. score_rmse=1.5,false_negative_rate=0.08; figures not named keep "
        f"their defaults (env {GAP_THRESHOLDS_VARIABLE}; see the README)",
    )
    parser.add_argument(
        "--interval-coverage",
        type=float,
        default=environ.get(COVERAGE_VARIABLE, str(DEFAULT_COVERAGE)),
        help="share of final scores the interval around each predicted score should hold "
        f"(env {COVERAGE_VARIABLE}, default {DEFAULT_COVERAGE:g})",
    )
    parser.add_argument(
        "--plant-unfairness",
        metavar="ATTRIBUTE=LEVEL",
        help="with --synthetic: give this group's scores extra noise no input explains, e.g. "
        "lunch_program=free_or_reduced (to see the per-group figures and the gate react)",
    )
    args = parser.parse_args(argv)
    try:
        gap_thresholds = parse_gap_thresholds(args.gap_thresholds)
    except ValueError as err:
        parser.error(f"--gap-thresholds ({GAP_THRESHOLDS_VARIABLE}): {err}")
    if args.plant_unfairness is not None and not args.synthetic:
        parser.error("--plant-unfairness needs --synthetic")
    low, high = SCORE_RANGE
    if not low < args.pass_mark <= high:
        parser.error(f"the pass mark must be in ({low:g}, {high:g}], got {args.pass_mark}")
    if not 0.5 <= args.interval_coverage < 1:
        parser.error(
            f"--interval-coverage ({COVERAGE_VARIABLE}) must be in [0.5, 1), "
            f"got {args.interval_coverage}"
        )
    if args.rows is not None and args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS}, got {args.rows}")
    if args.publish and args.no_database:
        parser.error("--publish needs a database; it contradicts --no-database")
    if args.database_only and args.no_database:
        parser.error("--database-only and --no-database contradict each other")
    if args.min_db_rows < MIN_ROWS:
        parser.error(f"--min-db-rows must be at least {MIN_ROWS}, got {args.min_db_rows}")
    return TrainingConfig(
        rows=args.rows,
        seed=args.seed,
        csv=args.csv,
        models_dir=args.models_dir,
        pass_mark=args.pass_mark,
        database_url=None if args.no_database else args.database_url,
        min_database_rows=args.min_db_rows,
        synthetic=args.synthetic,
        database_only=args.database_only,
        publish=args.publish,
        first_only=args.first_only,
        force=args.force,
        gap_thresholds=gap_thresholds,
        unfair_group=args.plant_unfairness,
        interval_coverage=args.interval_coverage,
    )


def served_version(config: TrainingConfig) -> str | None:
    """The version served now: the database's `current` when publishing, else the folder's."""
    if config.publish and config.database_url is not None:
        return database_current(config.database_url)
    link = config.models_dir / CURRENT
    return link.readlink().name if link.is_symlink() else None


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv, os.environ)
    try:
        if config.first_only and (served := served_version(config)) is not None:
            print(f"a model is served already ({served}): not training (--first-only)")
            return 0
        run(config)
    except (TrainingDataError, ModelArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
