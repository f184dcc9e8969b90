"""`python -m trainer`: train on synthetic data (or a CSV) and publish a model version.

Defaults come from STUDENTPERF_MODELS_DIR (models) and STUDENTPERF_PASS_MARK (50).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from studentperf.features import DEFAULT_PASS_MARK, SCORE_RANGE
from studentperf.model_artifact import ModelArtifactError
from trainer.data import TrainingDataError
from trainer.train import TrainingConfig, run


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> TrainingConfig:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="synthetic rows (default 5000)")
    parser.add_argument("--seed", type=int, default=42, help="data and split seed (default 42)")
    parser.add_argument("--csv", type=Path, help="train on this CSV instead of synthetic data")
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
    args = parser.parse_args(argv)
    low, high = SCORE_RANGE
    if not low < args.pass_mark <= high:
        parser.error(f"the pass mark must be in ({low:g}, {high:g}], got {args.pass_mark}")
    if args.rows < 10:
        parser.error(f"--rows must be at least 10, got {args.rows}")
    return TrainingConfig(
        rows=args.rows,
        seed=args.seed,
        csv=args.csv,
        models_dir=args.models_dir,
        pass_mark=args.pass_mark,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv, os.environ)
    try:
        run(config)
    except (TrainingDataError, ModelArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
