"""Score a finished sweep again from its stored images: no pipeline, no generation.

    python -m bespoke_exp.rescore                                   # the newest sweep
    python -m bespoke_exp.rescore --sweep ID 'metrics.weights={grid/r2:0.3}'

Overrides use the sweep's own syntax and apply on top of the overrides the sweep ran with.
The new scores are logged as a new sweep (parent run tagged `rescored_from`), ranked and
reported; the champion moves only between comparable versions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra.errors import HydraException

from bespoke_exp import analysis, tracking
from bespoke_exp.config import ConfigError, register_resolvers
from bespoke_exp.sweep.rescore import rescore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bespoke_exp.rescore", description=__doc__.split("\n")[0])
    parser.add_argument(
        "overrides",
        nargs="*",
        help="config overrides, e.g. 'metrics.weights={grid/r2:0.3}' (merged into the weights)",
    )
    parser.add_argument("--sweep", default=None, help="sweep id or parent run id (default: the newest sweep)")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: the sweep command's)"
    )
    parser.add_argument("--experiment", default=None, help="experiment (default: the one holding the sweep)")
    parser.add_argument("--no-register", action="store_true", help="don't register the recommended LoRA")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    register_resolvers()
    try:
        new, rec = rescore(
            args.sweep,
            args.overrides,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            register=not args.no_register,
            out_dir=args.out,
        )
    except (
        ConfigError,
        HydraException,
        tracking.SweepNotFound,
        tracking.TrackingError,
        analysis.AnalysisError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"rescored as sweep {new.sweep_id} (parent run {new.parent_run_id}, {len(new.runs)} jobs)\n")
    print(rec.to_markdown(top=10))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
