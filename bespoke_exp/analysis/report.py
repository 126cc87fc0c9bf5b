"""The sweep's report: recommendation, ranking, figures and comparison sheets, written next
to the sweep and logged to its parent run (what every multirun does at its end, and
`python -m bespoke_exp.rank --log`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.analysis import figures
from bespoke_exp.analysis.champion import register_champion
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.recommendation import Recommendation, recommend
from bespoke_exp.analysis.sheets import comparison_sheet, seed_sheet
from bespoke_exp.generate.image_store import image_file_name

REPORT_DIR = "report"  # in the sweep folder and in the parent run's artifacts


def write_report(sweep: Sweep, rec: Recommendation, out_dir: Path) -> list[Path]:
    """recommendation.{json,md}, ranking.csv, the score figures and the comparison sheets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    (out_dir / "recommendation.json").write_text(json.dumps(rec.to_dict(), indent=2))
    (out_dir / "recommendation.md").write_text(rec.to_markdown(top=len(rec.ranking)))
    ranking = pd.DataFrame(rec.ranking)
    # A failed job's combination stays in the pictures as a gap, a hatched square or a "missing" tile.
    swept = pd.MultiIndex.from_product([sweep.epochs, sweep.guidances], names=["epoch", "guidance"])
    plotted = (
        ranking.set_index(["epoch", "guidance"]).reindex(swept)[["mean", "ci_low", "ci_high"]].reset_index()
    )
    ranking.to_csv(out_dir / "ranking.csv", index=False)
    written += [out_dir / name for name in ("recommendation.json", "recommendation.md", "ranking.csv")]

    best = (int(rec.best["epoch"]), float(rec.best["guidance"]))
    title = f"sweep {sweep.sweep_id}: {rec.metric} by epoch ({rec.confidence:.0%} CI over prompts x seeds)"
    figure = figures.score_by_epoch_figure(
        plotted, best=best, title=title, metric_label=rec.metric, marginal=pd.DataFrame(rec.by_epoch)
    )
    written.append(figures.save_figure(figure, out_dir / "score_by_epoch.png"))
    heatmap = figures.score_heatmap_figure(
        plotted, best=best, title=f"sweep {sweep.sweep_id}: mean {rec.metric}"
    )
    written.append(figures.save_figure(heatmap, out_dir / "score_heatmap.png"))

    seeds = sorted(sweep.images["seed"].unique().tolist())
    prompt_ids = list(dict.fromkeys(sweep.images["prompt_id"]))
    table = sweep.images
    scores = {
        ((int(e), float(g)), p, int(s)): float(v)
        for e, g, p, s, v in zip(
            table["epoch"], table["guidance"], table["prompt_id"], table["seed"], table[rec.metric]
        )
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
        title=f"best combination: epoch {best[0]}, guidance {best[1]:g}, every prompt x seed",
    )
    written.append(_save(sheet, out_dir / "best_seeds.png"))
    return written


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def _download_images(sweep: Sweep, tmp: Path, seed: int, best: tuple[int, float]) -> dict:
    """(combination, prompt_id, seed) -> image: one seed for every combination, every seed for the best."""
    wanted = sweep.images[
        (sweep.images["seed"] == seed)
        | ((sweep.images["epoch"] == best[0]) & (sweep.images["guidance"] == best[1]))
    ]
    images = {}
    for row in wanted.itertuples():
        name = f"images/{image_file_name(row.prompt_id, row.seed)}"
        path = tracking.download_artifact(sweep.tracker, row.run_id, name, tmp / row.run_id)
        with Image.open(path) as image:
            images[((int(row.epoch), float(row.guidance)), row.prompt_id, int(row.seed))] = image.convert(
                "RGB"
            )
    return images


def report_sweep(
    sweep: Sweep,
    *,
    registered_model: str | None = None,
    out_dir: Path | None = None,
    **options,
) -> Recommendation:
    """Recommend, write the report (to `out_dir`, default `<sweep dir>/report`), log it to the
    parent run with the best combination as metrics and tags, and register the champion."""
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
        {
            "best/mean": best["mean"],
            "best/ci_low": best["ci_low"],
            "best/ci_high": best["ci_high"],
            "best/epoch": best["epoch"],
            "best/guidance": best["guidance"],
        },
    )
    tracking.set_tags(
        sweep.tracker,
        sweep.parent_run_id,
        {
            "ranked_metric": rec.metric,
            "best.epoch": best["epoch"],
            "best.guidance": f"{best['guidance']:g}",
            "best.run_id": best["run_id"],
            "diagnosis": rec.diagnosis.code,
            "retrain": rec.retrain.action if rec.retrain else "none",
        },
    )
    tracking.set_run_description(sweep.tracker, sweep.parent_run_id, rec.to_markdown())
    if registered_model:
        register_champion(sweep, rec, registered_model)
    return rec
