"""The sweep's dashboard in the MLflow UI, on its parent run (the run page's "Model metrics" tab):

- epoch curves: metric histories with step = epoch, in sections by the key's first segment:
  `epoch_<metric>/mean`, `/ci_low`, `/ci_high` (the ranked metric over guidance, with its interval)
  and `/g<guidance>` (one series per guidance); `epoch_adherence/pass_rate`, `epoch_grid/purity`,
  `epoch_grid/r2`, `epoch_palette/off_palette_rate` (component metrics, mean over guidance);
- an epoch slider per prompt and seed: step images keyed `<prompt>_seed<seed>_g<guidance>` at the
  best guidance, the picture with its recovered grid beside it;
- `dashboard/images.json`: one row per generated image with every metric and where the image is.

Everything comes from what the report already has (the recommendation, the sweep's tables and
the downloaded images). Logging again (`python -m bespoke_exp.rank --log`) adds no duplicate
points or frames: MLflow can't delete them, so (key, epoch) pairs already there are skipped.
"""

from __future__ import annotations

import re

import pandas as pd
from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.recommendation import Recommendation
from bespoke_exp.generate.image_store import image_file_name
from bespoke_exp.pixelart.grid import recover_grid

# The components behind the score a reader looks at first: prompt adherence, grid fidelity, palette.
COMPONENTS = ("adherence/pass_rate", "grid/purity", "grid/r2", "palette/off_palette_rate")
TABLE_FILE = "dashboard/images.json"
_GAP_PX = 8  # white strip between the picture and its recovered grid


def series_key(metric: str, series: str | None = None) -> str:
    """`epoch_` + the metric's key (its first segment names the UI section), then the series."""
    return f"epoch_{metric}" + (f"/{series}" if series else "")


def guidance_label(guidance: float) -> str:
    return f"g{guidance:g}"


def epoch_curves(sweep: Sweep, rec: Recommendation) -> dict[str, dict[int, float]]:
    """key -> {epoch: value}: the ranked metric over guidance with its interval (`rec.by_epoch`),
    per guidance (`rec.ranking`), and the component metrics' job values averaged over guidance."""
    curves: dict[str, dict[int, float]] = {}

    def add(key: str, epoch, value) -> None:
        if value is not None and value == value:  # a combination without a value stays a gap
            curves.setdefault(key, {})[int(epoch)] = float(value)

    for row in rec.by_epoch:
        for stat in ("mean", "ci_low", "ci_high"):
            add(series_key(rec.metric, stat), row["epoch"], row[stat])
    for row in rec.ranking:
        add(series_key(rec.metric, guidance_label(row["guidance"])), row["epoch"], row["mean"])
    components = [m for m in COMPONENTS if m in sweep.runs.columns and m != rec.metric]
    for metric, by_epoch in sweep.runs.groupby("epoch")[components].mean().items():
        for epoch, value in by_epoch.items():
            add(series_key(metric), epoch, value)
    return curves


def image_key(prompt_id: str, seed: int, guidance: float) -> str:
    """The image card's name; MLflow allows only [A-Za-z0-9_-./ ] in it."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", f"{prompt_id}_seed{seed}_{guidance_label(guidance)}")


def image_rows(sweep: Sweep, rec: Recommendation) -> pd.DataFrame:
    """The images the sliders show: every epoch, prompt and seed at the best guidance."""
    images = sweep.images
    return images[images["guidance"] == float(rec.best["guidance"])]


def pending_image_rows(sweep: Sweep, rec: Recommendation) -> pd.DataFrame:
    """`image_rows` less the frames the parent run already has (so a re-log downloads nothing)."""
    rows = image_rows(sweep, rec)
    logged = tracking.logged_image_steps(sweep.tracker, sweep.parent_run_id)
    keep = [
        (image_key(p, int(s), float(g)), int(e)) not in logged
        for p, s, g, e in zip(rows["prompt_id"], rows["seed"], rows["guidance"], rows["epoch"])
    ]
    return rows[keep]


def with_grid(image: Image.Image, cells: int) -> Image.Image:
    """The picture and, to its right at the same size, the grid recovered from it (nearest-upscaled):
    one frame, so the slider moves both together."""
    width, height = image.size
    grid = recover_grid(image, cells).resize((width, height), Image.Resampling.NEAREST)
    frame = Image.new("RGB", (2 * width + _GAP_PX, height), "white")
    frame.paste(image.convert("RGB"), (0, 0))
    frame.paste(grid, (width + _GAP_PX, 0))
    return frame


def table_rows(sweep: Sweep) -> list[dict]:
    """`sweep.images` as the dashboard's table, each row naming its image as a `runs:/` URI."""
    table = sweep.images.copy()
    table["image"] = [
        f"runs:/{run_id}/images/{image_file_name(p, int(s))}"
        for run_id, p, s in zip(table["run_id"], table["prompt_id"], table["seed"])
    ]
    first = ["epoch", "guidance", "prompt_id", "seed", "split", "image", "run_id"]
    ordered = [c for c in first if c in table.columns] + [c for c in table.columns if c not in first]
    rows = table[ordered].sort_values(["epoch", "guidance", "prompt_id", "seed"]).to_dict("records")
    return [{k: (None if v != v else v) for k, v in row.items()} for row in rows]  # NaN -> null


def log_dashboard(sweep: Sweep, rec: Recommendation, images: dict) -> dict[str, int]:
    """Log curves, frames and table to the parent run. `images` maps ((epoch, guidance), prompt_id,
    seed) -> picture and holds at least `pending_image_rows`. Returns what was newly written."""
    tracker, run_id = sweep.tracker, sweep.parent_run_id
    points = tracking.log_new_metric_steps(tracker, run_id, epoch_curves(sweep, rec))
    frames = 0
    for row in pending_image_rows(sweep, rec).itertuples():
        cell, seed = (int(row.epoch), float(row.guidance)), int(row.seed)
        frame = with_grid(images[cell, row.prompt_id, seed], sweep.cells)
        tracking.log_step_image(tracker, run_id, frame, image_key(row.prompt_id, seed, cell[1]), cell[0])
        frames += 1
    rows = table_rows(sweep)
    tracking.replace_table(tracker, run_id, rows, TABLE_FILE)
    return {"points": points, "frames": frames, "rows": len(rows)}
