"""The sweep's report: recommendation, ranking, figures and comparison sheets, written next
to the sweep and logged to its parent run (what every multirun does at its end, and
`python -m bespoke_exp.rank --log`).

The ranking covers every swept axis; the figures and comparison sheets are epoch x guidance, so
a sweep of further axes (lora_scale) draws them at the best combination's value of each, and
their titles say so."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.analysis import dashboard, figures, lora_value, retrain
from bespoke_exp.analysis.champion import register_champion
from bespoke_exp.analysis.load import Sweep, load_sweep
from bespoke_exp.analysis.lora_figure import lora_value_figure
from bespoke_exp.analysis.recommendation import Recommendation, recommend
from bespoke_exp.analysis.statistics import combination_of, describe
from bespoke_exp.analysis.training_curve import training_curve_figure
from bespoke_exp.config.schema import AnalysisConfig
from bespoke_exp.generate.image_store import image_file_name
from bespoke_exp.pixelart.sheets import comparison_sheet, seed_sheet

REPORT_DIR = "report"  # in the sweep folder and in the parent run's artifacts


def write_report(sweep: Sweep, rec: Recommendation, out_dir: Path, images: dict | None = None) -> list[Path]:
    """recommendation.{json,md}, ranking.csv, the score figures and the comparison sheets.
    `images`: (combination, prompt_id, seed) -> picture holding at least `report_rows`, the
    combination a tuple in `rec.axes` order ((epoch, guidance) for a 2-axis sweep); downloaded
    here when None."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recommendation.json").write_text(json.dumps(rec.to_dict(), indent=2))
    (out_dir / "recommendation.md").write_text(rec.to_markdown(top=len(rec.ranking)))
    pd.DataFrame(rec.ranking).to_csv(out_dir / "ranking.csv", index=False)
    written = [out_dir / name for name in ("recommendation.json", "recommendation.md", "ranking.csv")]
    written += _write_figures(sweep, rec, out_dir)
    if images is None:
        images = _download_images(sweep, report_rows(sweep, rec), rec.axes)
    images = {key: images[key] for key in _keys(report_rows(sweep, rec), rec.axes)}  # what the sheets show
    return written + _write_sheets(sweep, rec, out_dir, images)


def _write_figures(sweep: Sweep, rec: Recommendation, out_dir: Path) -> list[Path]:
    """Score by epoch and the epoch x guidance heatmap (at the best value of any further axis)."""
    # A failed job's combination stays in the pictures as a gap, a hatched square or a "missing" tile.
    lora_epochs = [e for e in sweep.epochs if e != lora_value.BASE_EPOCH]  # the base is not ranked
    swept = pd.MultiIndex.from_product([lora_epochs, sweep.guidances], names=["epoch", "guidance"])
    plane = rec.at_best_extras(pd.DataFrame(rec.ranking))
    plotted = plane.set_index(["epoch", "guidance"]).reindex(swept)[["mean", "ci_low", "ci_high"]]
    plotted = plotted.reset_index()
    best, note = (int(rec.best["epoch"]), float(rec.best["guidance"])), rec.plane_note()
    over = " and ".join(a for a in rec.axes if a != "epoch")
    title = (
        f"sweep {sweep.sweep_id}: {rec.metric} by epoch{note} ({rec.confidence:.0%} CI over prompts x seeds)"
    )
    figure = figures.score_by_epoch_figure(
        plotted,
        best=best,
        title=title,
        metric_label=rec.metric,
        marginal=pd.DataFrame(rec.by_epoch),
        marginal_label=f"mean over {over}",
    )
    heatmap = figures.score_heatmap_figure(
        plotted, best=best, title=f"sweep {sweep.sweep_id}: mean {rec.metric}{note}"
    )
    written = [
        figures.save_figure(figure, out_dir / "score_by_epoch.png"),
        figures.save_figure(heatmap, out_dir / "score_heatmap.png"),
    ]
    if rec.lora_value is not None:
        value = lora_value_figure(rec.lora_value, rec.metric, f"sweep {sweep.sweep_id}: what the LoRA buys")
        written.append(figures.save_figure(value, out_dir / "lora_value.png"))
    if rec.training_curve and rec.training_curve.get("loss"):
        title = f"sweep {sweep.sweep_id}: training loss and {rec.training_curve['score_label']} by epoch"
        curve = training_curve_figure(rec.training_curve, title)
        written.append(figures.save_figure(curve, out_dir / "training_curve.png"))
    return written


def write_trainer_config(sweep: Sweep, rec: Recommendation, out_dir: Path) -> list[Path]:
    """`retrain/sd_scripts.toml` (the next run for kohya's sd-scripts) and `retrain/changes.md`
    (what it changes, in words); nothing when no swept checkpoint recorded its training."""
    training, prompts = sweep.training_record
    if training is None:
        return []
    trainer = retrain.sd_scripts_config(training, rec.retrain, prompts, rec.waits_on)
    folder = out_dir / retrain.ARTIFACT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / retrain.TOML_FILE).write_text(trainer.to_toml())
    (folder / retrain.CHANGES_FILE).write_text(trainer.changes_markdown())
    return [folder / retrain.TOML_FILE, folder / retrain.CHANGES_FILE]


def _write_sheets(sweep: Sweep, rec: Recommendation, out_dir: Path, images: dict) -> list[Path]:
    """A comparison sheet per prompt (epochs x guidance, first seed, at the best value of any
    further axis) and every prompt x seed of the best combination."""
    axes, table = tuple(rec.axes), lora_value.shown(sweep.images)
    seeds = sorted(table["seed"].unique().tolist())
    prompt_ids = list(dict.fromkeys(table["prompt_id"]))
    scores = {key: float(v) for key, v in zip(_keys(table, rec.axes), table[rec.metric])}
    best = combination_of(rec.best, axes)
    plane = [key for key in images if key[0][2:] == best[2:]]  # the best's further-axis values
    written = []
    for prompt_id in prompt_ids:
        in_sheet = [key for key in plane if key[1] == prompt_id and key[2] == seeds[0]]
        sheet = comparison_sheet(
            {combo[:2]: images[combo, p, s] for combo, p, s in in_sheet},
            sweep.epochs,
            sweep.guidances,
            cells=sweep.cells,
            scores={combo[:2]: scores[combo, p, s] for combo, p, s in in_sheet},
            best=best[:2],
            metric_label=rec.metric,
            title=f"{prompt_id}, seed {seeds[0]}: epochs (rows) x guidance (columns){rec.plane_note()}",
        )
        written.append(_save(sheet, out_dir / f"comparison_{prompt_id}.png"))
    in_best = [key for key in images if key[0] == best]
    sheet = seed_sheet(
        {(p, s): images[combo, p, s] for combo, p, s in in_best},
        prompt_ids,
        seeds,
        cells=sweep.cells,
        scores={(p, s): scores[combo, p, s] for combo, p, s in in_best},
        metric_label=rec.metric,
        title=f"best combination: {describe(rec.best, axes)}, every prompt x seed",
    )
    written.append(_save(sheet, out_dir / "best_seeds.png"))
    return written


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def report_rows(sweep: Sweep, rec: Recommendation) -> pd.DataFrame:
    """The images the sheets show: the first seed for every combination of the epoch x guidance
    plane (at the best value of any further axis), every seed for the best."""
    images = lora_value.shown(sweep.images)
    at_best = pd.Series(True, index=images.index)
    for axis in rec.axes:
        at_best &= images[axis].astype(float) == float(rec.best[axis])
    in_plane = images.index.isin(rec.at_best_extras(images).index)
    return images[((images["seed"] == images["seed"].min()) & in_plane) | at_best]


def _keys(rows: pd.DataFrame, axes: list[str] | tuple[str, ...]) -> list[tuple]:
    """(combination, prompt_id, seed) of each row, the images dicts' key; the combination in
    `axes` order ((epoch, guidance) for a 2-axis sweep)."""
    return [
        (combination_of(row, tuple(axes)), row["prompt_id"], int(row["seed"]))
        for row in rows[[*axes, "prompt_id", "seed"]].to_dict("records")
    ]


def _download_images(sweep: Sweep, wanted: pd.DataFrame, axes: list[str]) -> dict:
    """(combination, prompt_id, seed) -> image, for each row of `wanted` (each file once)."""
    wanted = wanted.drop_duplicates(["run_id", "prompt_id", "seed"])
    images = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, row in zip(_keys(wanted, axes), wanted.itertuples()):
            name = f"images/{image_file_name(row.prompt_id, row.seed)}"
            path = tracking.download_artifact(sweep.tracker, row.run_id, name, Path(tmp) / row.run_id)
            with Image.open(path) as image:
                images[key] = image.convert("RGB")
    return images


def analyse_sweep(config: DictConfig, context, register: bool) -> str:
    """The end of every multirun (the sweep callback's `analyse`, named in conf/config.yaml):
    rank the finished jobs of the sweep `context` names, write and log the report, register the
    champion when `register`; returns what to print."""
    t = config.tracking
    sweep = load_sweep(context.parent_run_id, tracking_uri=t.uri, experiment=t.experiment)
    model = t.registered_model if register else None
    rec = report_sweep(sweep, OmegaConf.to_object(config.analysis), registered_model=model)
    where = f"\nreport: {sweep.sweep_dir / REPORT_DIR}" if sweep.sweep_dir else ""
    return rec.to_markdown(top=5) + where


def report_sweep(
    sweep: Sweep,
    settings: AnalysisConfig | None = None,
    *,
    registered_model: str | None = None,
    out_dir: Path | None = None,
) -> Recommendation:
    """Recommend (with `settings`, by default what the sweep ran with), write the report (to
    `out_dir`, default `<sweep dir>/report`), log it and the dashboard (analysis.dashboard) to
    the parent run with the best combination as metrics and tags, and register the champion."""
    rec = recommend(sweep, settings)
    out_dir = out_dir or (sweep.sweep_dir / REPORT_DIR if sweep.sweep_dir else None)
    # One download for both: the report's sheets and the dashboard frames not logged yet.
    wanted = pd.concat([report_rows(sweep, rec), dashboard.pending_image_rows(sweep, rec)])
    images = _download_images(sweep, wanted, rec.axes)
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = out_dir or Path(tmp)
        write_report(sweep, rec, report_dir, images)
        tracking.log_artifacts(sweep.tracker, sweep.parent_run_id, report_dir, REPORT_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        if write_trainer_config(sweep, rec, Path(tmp)):
            tracking.log_artifacts(
                sweep.tracker, sweep.parent_run_id, Path(tmp) / retrain.ARTIFACT_DIR, retrain.ARTIFACT_DIR
            )
    dashboard.log_dashboard(sweep, rec, images)
    best = rec.best
    tracking.log_metrics(
        sweep.tracker,
        sweep.parent_run_id,
        {
            "best/mean": best["mean"],
            "best/ci_low": best["ci_low"],
            "best/ci_high": best["ci_high"],
            **{f"best/{axis}": best[axis] for axis in rec.axes},
        },
    )
    tracking.set_tags(
        sweep.tracker,
        sweep.parent_run_id,
        {
            "ranked_metric": rec.metric,
            "best.epoch": best["epoch"],
            **{f"best.{axis}": f"{best[axis]:g}" for axis in rec.axes if axis != "epoch"},
            "best.run_id": best["run_id"],
            "diagnosis": rec.diagnosis.code,
            "retrain": rec.retrain.action if rec.retrain else "none",
        },
    )
    tracking.set_run_description(sweep.tracker, sweep.parent_run_id, rec.to_markdown())
    if registered_model:
        register_champion(sweep, rec, registered_model)
    return rec
