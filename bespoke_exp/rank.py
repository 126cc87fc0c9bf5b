"""Rank a sweep's epochs and guidance values and recommend a checkpoint or a retrain.

    python -m bespoke_exp.rank                   # latest sweep: ranking table + recommendation
    python -m bespoke_exp.rank --json            # one JSON object: best, ranking, diagnosis, retrain
    python -m bespoke_exp.rank --sweep ID --log  # also (re)write the report to the parent run

The sweep command already does `--log` (and registers the champion) when a multirun ends.
Without `--log` the store is only read: nothing is created, and the one thing written is the
closing of runs this machine left RUNNING when their process died (as the next sweep would).
A sweep that is still running, or was killed, is ranked on its finished jobs and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from bespoke_exp import analysis, tracking
from bespoke_exp.config.schema import MIN_N_BOOT
from bespoke_exp.scoring.registry import metric_spec


def _n_boot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_N_BOOT:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= {MIN_N_BOOT}")
    return value


def _metric(name: str) -> str:
    try:
        metric_spec(name)
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a metric (score, or a key in bespoke_exp/scoring/registry.py)"
        ) from None
    return name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    uri, _ = analysis.default_tracking()
    parser = argparse.ArgumentParser(prog="python -m bespoke_exp.rank", description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default: {uri})")
    parser.add_argument(
        "--experiment",
        default=None,
        help="experiment name (default: the one holding the sweep, any experiment)",
    )
    parser.add_argument("--sweep", default=None, help="sweep id or parent run id (default: the latest sweep)")
    parser.add_argument(
        "--metric",
        type=_metric,
        default=None,
        help="metric to rank by (default: what the sweep ran with, else conf/analysis)",
    )
    parser.add_argument(
        "--n-boot", type=_n_boot, default=None, help="bootstrap resamples (default: what the sweep ran with)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument(
        "--log", action="store_true", help="log the report and pictures to the sweep's parent run"
    )
    parser.add_argument(
        "--register",
        metavar="NAME",
        default=None,
        help="with --log: register the recommended LoRA as NAME@champion",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="with --log: also write the report to this folder"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _close_orphans(args.tracking_uri)
        sweep = analysis.load_sweep(args.sweep, tracking_uri=args.tracking_uri, experiment=args.experiment)
        incomplete = sweep.incomplete()
        if args.register and incomplete:
            print(f"[bespoke_exp] not registering a champion: {incomplete}", file=sys.stderr)
        asked = {k: v for k, v in {"metric": args.metric, "n_boot": args.n_boot}.items() if v is not None}
        settings = replace(sweep.analysis_settings, **asked)  # what the sweep ran with, but what is asked
        if args.log:
            register = None if incomplete else args.register
            rec = analysis.report_sweep(sweep, settings, registered_model=register, out_dir=args.out)
        else:
            rec = analysis.recommend(sweep, settings)
    except (tracking.SweepNotFound, tracking.TrackingError, analysis.AnalysisError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        head = {"sweep_id": sweep.sweep_id, "parent_run_id": sweep.parent_run_id}
        status = {"complete": incomplete is None, "incomplete": incomplete}
        print(json.dumps({**head, **status, **rec.to_dict()}, indent=2))
    else:
        if incomplete:
            print(f"INCOMPLETE: {incomplete}; the ranking below covers the finished jobs only.\n")
        print(f"sweep {sweep.sweep_id} (parent run {sweep.parent_run_id}, {len(sweep.runs)} finished jobs)\n")
        print(rec.to_markdown(top=len(rec.ranking)))
    return 0


def _close_orphans(uri: str) -> None:
    """Runs this machine left RUNNING when their process died (SIGKILL, a full disk) are marked
    KILLED, as the next sweep would; a store this process can't write is left as it is."""
    closed = tracking.close_orphans(uri)
    if closed:
        print(
            f"[bespoke_exp] marked KILLED {len(closed)} runs whose process is gone: {', '.join(closed)}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
