"""Score a finished sweep again from its stored images, with the current scoring code and any
metric settings changed on the command line: no pipeline, no generation.

    python -m bespoke_exp.rescore                                   # the newest sweep
    python -m bespoke_exp.rescore --sweep ID 'metrics.weights={grid/r2:0.3}'

Overrides use the sweep's own syntax and apply on top of the overrides the sweep ran with, in
the config folders it was composed from (`--config-dir`, `hydra.searchpath`). The new scores go
to a new parent run (tagged `rescored_from`) with new child runs (one per job, tagged
`images_from` the run whose images they score), so the MLflow UI never shows old and new scores
as one series; then the new sweep is ranked and reported like any other. The champion moves only
between comparable versions, and only when every job of the sweep finished.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from bespoke_exp import analysis, tracking
from bespoke_exp.config import SWEEP_AXES, ConfigError, compose_config, flatten, register_resolvers
from bespoke_exp.config.overrides import single_value_overrides
from bespoke_exp.generate.image_store import image_file_name
from bespoke_exp.job.identity import TAG_GENERATION, TAG_SCORING
from bespoke_exp.job.prompt_sets import expand_prompt_set
from bespoke_exp.job.resume import finished_images
from bespoke_exp.job.scores import Scorer, make_scorer, score_images
from bespoke_exp.job.validate import SCORING_CHECKS, config_problems, raise_problems
from bespoke_exp.sweep.callback import start_parent
from bespoke_exp.sweep.context import new_sweep_id


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
        tracking.SweepNotFound,
        tracking.TrackingError,
        analysis.AnalysisError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"rescored as sweep {new.sweep_id} (parent run {new.parent_run_id}, {len(new.runs)} jobs)\n")
    print(rec.to_markdown(top=10))
    return 0


def rescore(
    sweep: str | None = None,
    overrides: list[str] = (),
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    register: bool = True,
    out_dir: Path | None = None,
) -> tuple[analysis.Sweep, analysis.recommendation.Recommendation]:
    """Rescore `sweep` (default: the newest with a finished job); returns the new sweep and
    its recommendation."""
    old = analysis.load_sweep(sweep, tracking_uri=tracking_uri, experiment=experiment)
    settings = tracking.load_dict(old.tracker, old.parent_run_id, tracking.SWEEP_SETTINGS) or {}
    recorded = settings.get("overrides")
    if recorded is None:  # a sweep from before settings.json: its params are all there is
        recorded = (
            tracking.get_run(old.tracker, old.parent_run_id).data.params.get("sweep.overrides", "").split()
        )
    search_path = settings.get("search_path", [])
    try:
        cfg = compose_config([*single_value_overrides(recorded), *overrides], search_path)
    except ConfigError as error:
        where = f" (config folders beside conf/: {', '.join(search_path)})" if search_path else ""
        raise ConfigError(f"{error}{where}") from None
    raise_problems(config_problems(cfg, SCORING_CHECKS))
    cfg = expand_prompt_set(cfg)  # as each job did: templates into items, splits from the captions
    _check_images_stored(old)
    incomplete = old.incomplete()
    if register and incomplete:
        print(f"[bespoke_exp] not registering a champion: sweep {old.sweep_id} is incomplete ({incomplete})")
    scorer = make_scorer(cfg)
    sweep_id = new_sweep_id()
    new_parent = start_parent(
        old.tracker,
        cfg,
        f"rescore {sweep_id} of sweep {old.sweep_id}",
        [*recorded, *overrides],
        max(old.jobs_expected or 0, len(old.runs)),  # an incomplete sweep's rescore is incomplete too
        tags={tracking.TAG_SWEEP_ID: sweep_id, tracking.TAG_ROLE: "sweep", "rescored_from": old.sweep_id},
        search_path=search_path,
    )
    try:
        for run_id in old.runs["run_id"]:
            _rescore_job(
                old.tracker, tracking.get_run(old.tracker, run_id), new_parent, sweep_id, cfg, scorer
            )
        new = analysis.load_sweep(
            new_parent, tracking_uri=old.tracker.uri, experiment=old.tracker.experiment_name
        )
        model = cfg.tracking.registered_model if register and not incomplete else None
        settings = OmegaConf.to_object(cfg.analysis)
        rec = analysis.report_sweep(new, settings, registered_model=model, out_dir=out_dir)
    except BaseException as error:
        tracking.fail_run(old.tracker, new_parent, error)
        raise
    tracking.finish_run(old.tracker, new_parent)
    return new, rec


def _check_images_stored(old: analysis.Sweep) -> None:
    """Every image the sweep scored is still in the store, checked before anything is written."""
    for row in old.runs.itertuples():
        scored = old.images.loc[old.images["run_id"] == row.run_id]
        wanted = {
            f"images/{image_file_name(str(p), int(s))}" for p, s in zip(scored["prompt_id"], scored["seed"])
        }
        missing = sorted(wanted - set(tracking.list_artifacts(old.tracker, row.run_id, "images")))
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise analysis.AnalysisError(
                f"run {row.run_id} ({row.run_name}) of sweep {old.sweep_id} no longer has {len(missing)} "
                f"of its images in the store ({shown}); nothing was rescored: run the sweep again with "
                "force=true to regenerate them"
            )


def _rescore_job(
    tracker: tracking.Tracker, run, parent_run_id: str, sweep_id: str, cfg, scorer: Scorer
) -> str:
    rows = tracking.load_table(tracker, run.info.run_id, "metrics/per_image.json")
    keys = [(str(row["prompt_id"]), int(row["seed"])) for row in rows]
    names = {key: image_file_name(*key) for key in keys}
    loaded = finished_images(tracker, run.info.run_id, list(names.values()))
    images = {key: loaded[name] for key, name in names.items()}
    scores = score_images(cfg, images, scorer)
    kept = {k: v for k, v in run.data.params.items() if not k.startswith("metrics.")}
    tags = {
        k: run.data.tags[k] for k in (*SWEEP_AXES, "checkpoint_sha256", TAG_GENERATION) if k in run.data.tags
    }
    child = tracking.start_run(
        tracker,
        run.info.run_name,
        parent_run_id=parent_run_id,
        params={**kept, **flatten(OmegaConf.to_container(cfg.metrics, resolve=True), "metrics.")},
        tags={
            **tags,
            tracking.TAG_ROLE: "job",
            tracking.TAG_SWEEP_ID: sweep_id,
            TAG_SCORING: scorer.identity,
            "images_from": run.data.tags.get("images_from", run.info.run_id),
        },
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for key, image in images.items():
                image.save(Path(tmp) / names[key])
            tracking.log_artifacts(tracker, child, Path(tmp), "images")
        tracking.log_table(tracker, child, scores.rows, "metrics/per_image.json")
        tracking.log_table(tracker, child, scores.checks, "metrics/checks.json")
        tracking.log_metrics(tracker, child, scores.aggregates)
    except BaseException as error:
        tracking.fail_run(tracker, child, error)
        raise
    tracking.finish_run(tracker, child)
    return child


if __name__ == "__main__":
    raise SystemExit(main())
