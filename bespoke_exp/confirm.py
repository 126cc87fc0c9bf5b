"""Settle the choice a sweep left open: run only the combinations still contending with the
best, with new seeds (the same ones for each, so they pair), add them to the sweep, and rank
again on every seed, round after round.

    python -m bespoke_exp.confirm                          # the newest sweep
    python -m bespoke_exp.confirm --sweep ID --margin 0.02 --max-images 400

The epoch is decided first (each epoch averaged over the other axes), then the guidance (and
any further axis) at that epoch (`analysis.confirmation`). It stops when both are settled (the
best beats every other beyond noise), when what is left is a practical tie (every contender
within +-margin of the best; default analysis.thresholds.min_effect), after --max-rounds, or
when the next round would pass --max-images (default: twice the sweep's images). The new job
runs are children of the sweep's parent run, like its own jobs; the report, dashboard and
`confirm/rounds.json` on the parent are rewritten with every seed (a dashboard curve keeps the
points it already had: MLflow can't change them). Exit code 2 for a sweep that can't be
confirmed, 130 when interrupted (the rounds that finished stay in the sweep).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis.confirmation import Standing, standing
from bespoke_exp.analysis.statistics import describe
from bespoke_exp.config import ConfigError, compose_config, register_resolvers
from bespoke_exp.config.overrides import override_key, single_value_overrides
from bespoke_exp.generate.checkpoints import CheckpointError
from bespoke_exp.generate.pipeline import LoraLoadError, ModelLoadError
from bespoke_exp.job.images import GenerationError
from bespoke_exp.job.run import SweepContext, run_job, this_process

ROUNDS_FILE = "confirm/rounds.json"
OUTCOMES = {
    "settled": "the epoch and then the combination at it are settled",
    "equivalent": "what is left is a practical tie (within --margin)",
    "max_images": "the next round would pass --max-images",
    "max_rounds": "--max-rounds reached",
}


@dataclass
class Confirmation:
    sweep_id: str
    outcome: str  # a key of OUTCOMES
    before: Standing
    after: Standing
    rounds: list[dict[str, Any]] = field(default_factory=list)  # round, combinations, seeds, images, seconds
    ranking_before: list[dict[str, Any]] = field(default_factory=list)
    ranking_after: list[dict[str, Any]] = field(default_factory=list)
    axes: tuple[str, ...] = ("epoch", "guidance")  # the ranking's

    def to_markdown(self, top: int = 5) -> str:
        lines = [f"# Confirmation of sweep {self.sweep_id}", "", f"Before: {self.before.sentence()}", ""]
        for r in self.rounds:
            lines.append(
                f"- round {r['round']}: {len(r['combinations'])} combinations x seeds "
                f"{r['seeds'][0]}-{r['seeds'][-1]} "
                f"= {r['images']} images in {r['seconds']:.0f} s; then: {r['standing']}"
            )
        if not self.rounds:
            lines.append("- no round run")
        lines += ["", f"Stopped: {OUTCOMES[self.outcome]}. {self.after.sentence()}", ""]
        for name, ranking in (("before", self.ranking_before), ("after", self.ranking_after)):
            lines.append(f"Top {top} {name}: " + "; ".join(_ranked(r, self.axes) for r in ranking[:top]))
        return "\n".join(lines) + "\n"


def confirm(
    sweep: str | None = None,
    *,
    margin: float | None = None,
    max_images: int | None = None,
    max_rounds: int = 4,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> Confirmation:
    old = analysis.load_sweep(sweep, tracking_uri=tracking_uri, experiment=experiment)
    incomplete = old.incomplete()
    if incomplete:
        raise analysis.AnalysisError(
            f"sweep {old.sweep_id} is incomplete ({incomplete}): rerun its command to finish it first"
        )
    settings = old.analysis_settings
    margin = settings.thresholds.min_effect if margin is None else margin
    budget = 2 * len(old.images) if max_images is None else max_images
    recorded = tracking.load_dict(old.tracker, old.parent_run_id, tracking.SWEEP_SETTINGS) or {}
    base, search_path = single_value_overrides(old.overrides), recorded.get("search_path", [])
    before = now = standing(old.images, settings, margin)
    opening = analysis.recommend(old, settings)
    current, rounds, added = old, [], 0
    while True:
        outcome = _stop(now, len(rounds), max_rounds)
        combinations = now.combinations()
        prompts = current.images["prompt_id"].nunique()
        # Each round at most doubles the contenders' seeds, and never passes the image bound.
        seeds_now = current.images["seed"].nunique()
        new_seeds = min(seeds_now, (budget - added) // (len(combinations) * prompts))
        outcome = outcome or ("max_images" if new_seeds < 1 else "")
        if outcome:
            break
        unused = int(current.images["seed"].max()) + 1
        seeds = list(range(unused, unused + new_seeds))
        started = time.perf_counter()
        for index, combination in enumerate(combinations):
            _run(current, base, search_path, combination, seeds, len(rounds) + 1, index, len(combinations))
        current = analysis.load_sweep(
            old.parent_run_id, tracking_uri=old.tracker.uri, experiment=old.tracker.experiment_name
        )
        now = standing(current.images, settings, margin)
        images = len(seeds) * prompts * len(combinations)
        added += images
        rounds.append(
            {
                "round": len(rounds) + 1,
                "combinations": combinations,
                "seeds": seeds,
                "images": images,
                "seconds": round(time.perf_counter() - started, 1),
                "standing": now.sentence(),
            }
        )
    last = analysis.report_sweep(current, settings) if rounds else opening
    result = Confirmation(
        old.sweep_id, outcome, before, now, rounds, opening.ranking, last.ranking, tuple(last.axes)
    )
    _log(current, result)
    return result


def _stop(now: Standing, rounds: int, max_rounds: int) -> str:
    if now.resolved:
        return "settled" if now.settled and not now.epoch_tied else "equivalent"
    return "max_rounds" if rounds >= max_rounds else ""


def _run(
    sweep: analysis.Sweep,
    base: list[str],
    search_path: list[str],
    combination: dict[str, Any],
    seeds: list[int],
    round_number: int,
    index: int,
    total: int,
) -> None:
    """One contending combination at the new seeds, as a job of the sweep."""
    values = {
        axis: f"{value:g}" if isinstance(value, float) else str(value) for axis, value in combination.items()
    }
    kept = [o for o in base if override_key(o) not in {*values, "sampler.seeds"}]
    overrides = [
        *kept,
        *(f"{a}={v}" for a, v in values.items()),
        f"sampler.seeds=[{','.join(map(str, seeds))}]",
    ]
    cfg = compose_config(overrides, search_path)
    folder = sweep.sweep_dir or Path(cfg.paths.root) / "outputs" / "confirm" / sweep.sweep_id
    context = SweepContext(sweep.sweep_id, sweep.parent_run_id, total, index, this_process())
    run_job(cfg, output_dir=folder / "confirm" / f"round{round_number}" / str(index), sweep=context)


def _log(sweep: analysis.Sweep, result: Confirmation) -> None:
    earlier = (tracking.load_dict(sweep.tracker, sweep.parent_run_id, ROUNDS_FILE) or {}).get("runs", [])
    entry = {
        "outcome": result.outcome,
        "margin": result.after.margin,
        "rounds": result.rounds,
        "before": result.before.sentence(),
        "after": result.after.sentence(),
    }
    tracking.log_dict(sweep.tracker, sweep.parent_run_id, {"runs": [*earlier, entry]}, ROUNDS_FILE)
    tracking.set_tags(sweep.tracker, sweep.parent_run_id, {"confirm.outcome": result.outcome})


def _ranked(row: dict[str, Any], axes: tuple[str, ...]) -> str:
    return f"{describe(row, axes)} {row['mean']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bespoke_exp.confirm", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default=None, help="sweep id or parent run id (default: the newest sweep)")
    parser.add_argument(
        "--margin", type=float, default=None, help="practical-equivalence margin on the score"
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="new images at most (default: twice the sweep's)"
    )
    parser.add_argument("--max-rounds", type=int, default=4, help="rounds at most (default: 4)")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: the sweep command's)"
    )
    parser.add_argument("--experiment", default=None, help="experiment (default: the one holding the sweep)")
    args = parser.parse_args(argv)
    if args.margin is not None and not args.margin >= 0:
        parser.error(f"--margin {args.margin} must be a number >= 0 (a difference in the ranked metric)")
    register_resolvers()
    try:
        result = confirm(
            args.sweep,
            margin=args.margin,
            max_images=args.max_images,
            max_rounds=args.max_rounds,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
        )
    except (ConfigError, tracking.SweepNotFound, tracking.TrackingError, analysis.AnalysisError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, ModelLoadError, LoraLoadError, GenerationError) as error:
        print(f"error: a confirmation job failed ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[bespoke_exp] confirm interrupted: the rounds that finished are in the sweep", file=sys.stderr)
        return 130
    print(result.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
