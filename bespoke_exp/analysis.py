"""A finished sweep as tables, a recommendation and the pictures that back it.

In a notebook:

    from bespoke_exp import analysis
    sweep = analysis.load_sweep()                 # latest sweep in ./mlruns (or sweep="<id>")
    sweep.runs[["epoch", "guidance", "score", "adherence/pass_rate"]]
    rec = analysis.recommend(sweep)
    print(rec.to_markdown())

`report_sweep` is what runs at the end of every multirun and behind
`python -m bespoke_exp.rank --log`: it writes the report next to the sweep, logs it to the
parent run and registers the recommended LoRA file as the champion.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp import ranking, tracking
from bespoke_exp.checkpoint import file_sha256
from bespoke_exp.image_store import image_file_name
from bespoke_exp.config import CONF_DIR, PROJECT_ROOT

REPORT_DIR = "report"  # in the sweep folder and in the parent run's artifacts
CHAMPION_DIR = "champion"  # the parent run's copy of the recommended LoRA file


class AnalysisError(RuntimeError):
    """The sweep can't be analysed (no finished job); the message says why."""


@dataclass(frozen=True)
class Sweep:
    """One sweep's finished jobs: `runs` has a row per job, `images` a row per image."""

    tracker: tracking.Tracker
    parent_run_id: str
    sweep_id: str
    runs: pd.DataFrame  # run_id, run_name, epoch, guidance, checkpoint, checkpoint_sha256, reused, metrics...
    images: pd.DataFrame  # run_id, epoch, guidance, checkpoint, prompt_id, split, seed, metrics...
    final_epoch: int | None  # the trainer's last epoch (checkpoint.epochs)
    epochs: list[int]  # every epoch the sweep asked for, including failed jobs'
    guidances: list[float]
    cells: int
    sweep_dir: Path | None  # the Hydra sweep folder, when it is on this machine


def default_tracking() -> tuple[str, str]:
    """The tracking URI and experiment a plain `python -m bespoke_exp` uses (same env precedence)."""
    conf = OmegaConf.create(
        {"paths": {"root": str(PROJECT_ROOT)}, "tracking": OmegaConf.load(CONF_DIR / "tracking" / "local.yaml")}
    )
    return str(conf.tracking.uri), str(conf.tracking.experiment)


def load_sweep(sweep: str | None = None, *, tracking_uri: str | None = None, experiment: str | None = None) -> Sweep:
    """Load a sweep's FINISHED job runs (its own and those it reused from earlier sweeps).

    Args:
        sweep: sweep id or parent run id; None for the latest sweep in the experiment.
        tracking_uri, experiment: default to what the sweep command uses.
    """
    default_uri, default_experiment = default_tracking()
    tracker = tracking.connect(tracking_uri or default_uri, experiment or default_experiment)
    parent = tracking.find_sweep(tracker, sweep)
    children, reused = tracking.sweep_runs(tracker, parent.info.run_id)
    finished = [r for r in children if r.info.status == "FINISHED"] + reused
    sweep_id = parent.data.tags.get(tracking.TAG_SWEEP_ID, parent.info.run_id)
    if not finished:
        raise AnalysisError(
            f"sweep {sweep_id} (parent run {parent.info.run_id}) has no FINISHED job runs "
            f"({len(children)} runs, none finished): nothing to rank"
        )
    reused_ids = {r.info.run_id for r in reused}
    rows, image_rows = [], []
    for run in finished:
        params, tags = run.data.params, run.data.tags
        cell = {
            "run_id": run.info.run_id,
            "epoch": int(tags["epoch"]),
            "guidance": float(tags["guidance"]),
            "checkpoint": params.get("checkpoint.path"),
        }
        rows.append(
            {
                **cell,
                "run_name": run.info.run_name,
                "checkpoint_sha256": tags.get("checkpoint_sha256"),
                "reused": run.info.run_id in reused_ids,
                **run.data.metrics,
            }
        )
        image_rows += [{**cell, **row} for row in tracking.load_table(tracker, run.info.run_id, "metrics/per_image.json")]
    runs = pd.DataFrame(rows).sort_values(["epoch", "guidance"], ignore_index=True)
    first = finished[0].data.params
    sweep_dir = Path(parent.data.tags["sweep_dir"]) if "sweep_dir" in parent.data.tags else None
    return Sweep(
        tracker=tracker,
        parent_run_id=parent.info.run_id,
        sweep_id=sweep_id,
        runs=runs,
        images=pd.DataFrame(image_rows),
        final_epoch=int(first["checkpoint.epochs"]) if "checkpoint.epochs" in first else None,
        epochs=sorted({int(r.data.tags["epoch"]) for r in children + reused if "epoch" in r.data.tags}),
        guidances=sorted({float(r.data.tags["guidance"]) for r in children + reused if "guidance" in r.data.tags}),
        cells=int(first.get("metrics.cells", 24)),
        sweep_dir=sweep_dir if sweep_dir and sweep_dir.is_dir() else None,
    )


def default_options() -> dict:
    """`ranking.recommend` options from conf/analysis/default.yaml (what a sweep uses)."""
    return options_from(OmegaConf.load(CONF_DIR / "analysis" / "default.yaml"))


def options_from(analysis_cfg) -> dict:
    data = OmegaConf.to_container(analysis_cfg, resolve=True)
    return {**data, "thresholds": ranking.Thresholds(**data.get("thresholds", {}))}


def recommend(sweep: Sweep, **options) -> ranking.Recommendation:
    """Rank (epoch, guidance) cells with bootstrap CIs and diagnose. Options go to
    `ranking.recommend`, over the defaults in conf/analysis/default.yaml."""
    return ranking.recommend(sweep.images, final_epoch=sweep.final_epoch, **{**default_options(), **options})


def write_report(sweep: Sweep, rec: ranking.Recommendation, out_dir: Path) -> list[Path]:
    """recommendation.{json,md}, ranking.csv, the score figures and the comparison sheets."""
    from bespoke_exp import plots
    from bespoke_exp.grids import comparison_sheet, seed_sheet

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    (out_dir / "recommendation.json").write_text(json.dumps(rec.to_dict(), indent=2))
    (out_dir / "recommendation.md").write_text(rec.to_markdown(top=len(rec.ranking)))
    cells = pd.DataFrame(rec.ranking)
    # A failed job's cell stays in the pictures as a gap, a hatched square or a "missing" tile.
    grid = pd.MultiIndex.from_product([sweep.epochs, sweep.guidances], names=["epoch", "guidance"])
    plotted = cells.set_index(["epoch", "guidance"]).reindex(grid)[["score", "ci_low", "ci_high"]].reset_index()
    cells.to_csv(out_dir / "ranking.csv", index=False)
    written += [out_dir / name for name in ("recommendation.json", "recommendation.md", "ranking.csv")]

    best = (int(rec.best["epoch"]), float(rec.best["guidance"]))
    title = f"sweep {sweep.sweep_id}: {rec.metric} by epoch ({rec.confidence:.0%} CI over prompts x seeds)"
    figure = plots.score_by_epoch_figure(
        plotted, best=best, title=title, metric_label=rec.metric, marginal=pd.DataFrame(rec.by_epoch)
    )
    written.append(plots.save_figure(figure, out_dir / "score_by_epoch.png"))
    heatmap = plots.score_heatmap_figure(plotted, best=best, title=f"sweep {sweep.sweep_id}: mean {rec.metric}")
    written.append(plots.save_figure(heatmap, out_dir / "score_heatmap.png"))

    seeds = sorted(sweep.images["seed"].unique().tolist())
    prompt_ids = list(dict.fromkeys(sweep.images["prompt_id"]))
    table = sweep.images
    scores = {
        ((int(e), float(g)), p, int(s)): float(v)
        for e, g, p, s, v in zip(table["epoch"], table["guidance"], table["prompt_id"], table["seed"], table[rec.metric])
    }
    with tempfile.TemporaryDirectory() as tmp:
        images = _download_images(sweep, Path(tmp), seeds[0], best)
    for prompt_id in prompt_ids:
        in_sheet = [key for key in images if key[1] == prompt_id and key[2] == seeds[0]]
        sheet = comparison_sheet(
            {cell: images[cell, p, s] for cell, p, s in in_sheet},
            sweep.epochs,
            sweep.guidances,
            cells=sweep.cells,
            scores={cell: scores[cell, p, s] for cell, p, s in in_sheet},
            best=best,
            metric_label=rec.metric,
            title=f"{prompt_id}, seed {seeds[0]}: epochs (rows) x guidance (columns)",
        )
        written.append(_save(sheet, out_dir / f"comparison_{prompt_id}.png"))
    in_best = [key for key in images if key[0] == best]
    sheet = seed_sheet(
        {(p, s): images[cell, p, s] for cell, p, s in in_best},
        prompt_ids,
        seeds,
        cells=sweep.cells,
        scores={(p, s): scores[cell, p, s] for cell, p, s in in_best},
        metric_label=rec.metric,
        title=f"best cell: epoch {best[0]}, guidance {best[1]:g}, every prompt x seed",
    )
    written.append(_save(sheet, out_dir / "best_seeds.png"))
    return written


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def _download_images(sweep: Sweep, tmp: Path, seed: int, best: tuple[int, float]) -> dict:
    """(cell, prompt_id, seed) -> image: one seed for every cell, every seed for the best cell."""
    wanted = sweep.images[(sweep.images["seed"] == seed) | (
        (sweep.images["epoch"] == best[0]) & (sweep.images["guidance"] == best[1]))]
    images = {}
    for row in wanted.itertuples():
        name = f"images/{image_file_name(row.prompt_id, row.seed)}"
        path = tracking.download_artifact(sweep.tracker, row.run_id, name, tmp / row.run_id)
        with Image.open(path) as image:
            images[((int(row.epoch), float(row.guidance)), row.prompt_id, int(row.seed))] = image.convert("RGB")
    return images


def report_sweep(
    sweep: Sweep,
    *,
    registered_model: str | None = None,
    out_dir: Path | None = None,
    **options,
) -> ranking.Recommendation:
    """Recommend, write the report (to `out_dir`, default `<sweep dir>/report`), log it to the
    parent run with the best cell as metrics and tags, and register the champion."""
    rec = recommend(sweep, **options)
    out_dir = out_dir or (sweep.sweep_dir / REPORT_DIR if sweep.sweep_dir else None)
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = out_dir or Path(tmp)
        write_report(sweep, rec, report_dir)
        tracking.log_artifacts(sweep.tracker, sweep.parent_run_id, report_dir, REPORT_DIR)
    best = rec.best
    tracking.log_metrics(
        sweep.tracker,
        sweep.parent_run_id,
        {"best/score": best["score"], "best/ci_low": best["ci_low"], "best/ci_high": best["ci_high"],
         "best/epoch": best["epoch"], "best/guidance": best["guidance"]},
    )
    tracking.set_tags(
        sweep.tracker,
        sweep.parent_run_id,
        {"best.epoch": best["epoch"], "best.guidance": f"{best['guidance']:g}", "best.run_id": best["run_id"],
         "diagnosis": rec.diagnosis.code, "retrain": rec.retrain.action if rec.retrain else "none"},
    )
    tracking.set_run_description(sweep.tracker, sweep.parent_run_id, rec.to_markdown())
    if registered_model:
        register_champion(sweep, rec, registered_model)
    return rec


def register_champion(sweep: Sweep, rec: ranking.Recommendation, name: str) -> str | None:
    """Log the recommended LoRA file to the parent run and register it as a version of `name`."""
    best = rec.best
    checkpoint = Path(str(best["checkpoint"]))
    if not checkpoint.is_file():
        print(f"[bespoke_exp] not registering a champion: {checkpoint} is not on this machine")
        return None
    row = sweep.runs.loc[sweep.runs["run_id"] == best["run_id"]].iloc[0]
    if file_sha256(checkpoint) != row["checkpoint_sha256"]:
        print(f"[bespoke_exp] not registering a champion: {checkpoint} changed since run {best['run_id']} "
              f"evaluated it (sha256 differs from its checkpoint_sha256 tag)")
        return None
    tracking.log_artifact(sweep.tracker, sweep.parent_run_id, checkpoint, CHAMPION_DIR)
    version, moved = tracking.register_champion(
        sweep.tracker,
        name,
        run_id=sweep.parent_run_id,
        artifact_path=CHAMPION_DIR,  # a folder: models:/ downloads list folders, not single files
        score=float(best["score"]),
        tags={
            "epoch": str(best["epoch"]),
            "guidance": f"{best['guidance']:g}",
            "job_run_id": str(best["run_id"]),
            "sweep_id": sweep.sweep_id,
            "checkpoint_sha256": str(row["checkpoint_sha256"]),
            "diagnosis": rec.diagnosis.code,
        },
    )
    where = "now holds" if moved else "stays with a higher-scoring version; registered without"
    print(f"[bespoke_exp] {name} version {version} ({checkpoint.name}) {where} alias @champion: models:/{name}@champion")
    return version
