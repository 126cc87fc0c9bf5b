"""The sweep's dashboard in the MLflow UI, on its parent run (the run page's "Model metrics" tab):

- epoch curves: metric histories with step = epoch, in sections by the key's first segment:
  `epoch_<metric>/mean`, `/ci_low`, `/ci_high` (the ranked metric over guidance, with its interval)
  and `/g<guidance>` (one series per guidance); `epoch_adherence/pass_rate`, `epoch_grid/purity`,
  `epoch_grid/r2`, `epoch_palette/off_palette_rate` (component metrics, mean over guidance);
- an epoch slider per prompt and seed: step images keyed `<prompt>_seed<seed>_g<guidance>` at the
  best guidance, the picture with its recovered grid beside it;
- a sweep of further axes (lora_scale) shows the `/g<guidance>` curves and the sliders at the best
  combination's value of each (the card's name then ends in `_lora_scale<value>`); the
  `/mean` curves and the components average over them, as over guidance;
- what the LoRA buys, when the sweep measured it: `epoch_gain_over_base/<family>/gain` (and
  `/ci_low`, `/ci_high`) per metric family, `epoch_trigger/effect` (trigger on minus off), and
  `epoch_<metric>/in_set`, `/held_out`, `/gap` (training-caption prompts against the others);
- the training curve, when `checkpoint.train_logs` names the trainer's logs: `epoch_training/loss`
  (the trainer's loss per epoch) beside `epoch_training/held-out_<metric>` in one section;
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
from bespoke_exp.analysis import lora_value, training_curve
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.recommendation import Recommendation
from bespoke_exp.analysis.statistics import combination_of
from bespoke_exp.config import SWEEP_AXES
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
    for row in rec.at_best_extras(pd.DataFrame(rec.ranking)).to_dict("records"):
        add(series_key(rec.metric, guidance_label(row["guidance"])), row["epoch"], row["mean"])
    value = rec.lora_value
    for row in value.baseline if value else []:
        for stat in ("gain", "ci_low", "ci_high"):
            add(f"epoch_gain_over_base/{row['family']}/{stat}", row["epoch"], row[stat])
    for row in value.trigger if value else []:
        for stat in ("effect", "ci_low", "ci_high"):
            add(f"epoch_trigger/{stat}", row["epoch"], row[stat])
    for row in value.splits if value else []:
        for stat in ("in_set", "held_out", "gap", "gap_ci_low", "gap_ci_high"):
            add(f"epoch_{rec.metric}/{stat}", row["epoch"], row[stat])
    curve = rec.training_curve or {}
    for epoch, loss in (curve.get("loss") or {}).items():
        add(training_curve.LOSS_KEY, epoch, loss)
    for epoch, score in (curve.get("score") or {}).items():
        add(training_curve.score_key(curve["score_label"]), epoch, score)
    components = [m for m in COMPONENTS if m in sweep.runs.columns and m != rec.metric]
    for metric, by_epoch in sweep.runs.groupby("epoch")[components].mean().items():
        for epoch, value in by_epoch.items():
            add(series_key(metric), epoch, value)
    return curves


def image_key(prompt_id: str, seed: int, guidance: float, extra: dict[str, float] | None = None) -> str:
    """The image card's name; MLflow allows only [A-Za-z0-9_-./ ] in it. `extra`: further axes'
    values ({"lora_scale": 0.8}), so frames of another LoRA strength never share a card."""
    tail = "".join(f"_{axis}{value:g}" for axis, value in (extra or {}).items())
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", f"{prompt_id}_seed{seed}_{guidance_label(guidance)}{tail}")


def image_rows(sweep: Sweep, rec: Recommendation) -> pd.DataFrame:
    """The images the sliders show: every epoch, prompt and seed at the best guidance (and the
    best value of any further axis)."""
    images = rec.at_best_extras(lora_value.shown(sweep.images))
    return images[images["guidance"] == float(rec.best["guidance"])]


def _frame_key(row: dict, rec: Recommendation) -> str:
    extra = {axis: float(row[axis]) for axis in rec.extra_axes}
    return image_key(row["prompt_id"], int(row["seed"]), float(row["guidance"]), extra)


def pending_image_rows(sweep: Sweep, rec: Recommendation) -> pd.DataFrame:
    """`image_rows` less the frames the parent run already has (so a re-log downloads nothing)."""
    rows = image_rows(sweep, rec)
    logged = tracking.logged_image_steps(sweep.tracker, sweep.parent_run_id)
    keep = [(_frame_key(row, rec), int(row["epoch"])) not in logged for row in rows.to_dict("records")]
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
    axes = [a for a in SWEEP_AXES if a in table.columns]
    first = [*axes, "prompt_id", "seed", "split", "image", "run_id"]
    ordered = [c for c in first if c in table.columns] + [c for c in table.columns if c not in first]
    rows = table[ordered].sort_values([*axes, "prompt_id", "seed"]).to_dict("records")
    return [{k: (None if v != v else v) for k, v in row.items()} for row in rows]  # NaN -> null


def log_dashboard(sweep: Sweep, rec: Recommendation, images: dict) -> dict[str, int]:
    """Log curves, frames and table to the parent run. `images` maps (combination, prompt_id,
    seed) -> picture, the combination in `rec.axes` order ((epoch, guidance) for a 2-axis sweep),
    and holds at least `pending_image_rows`. Returns what was newly written."""
    tracker, run_id = sweep.tracker, sweep.parent_run_id
    points = tracking.log_new_metric_steps(tracker, run_id, epoch_curves(sweep, rec))
    frames = 0
    for row in pending_image_rows(sweep, rec).to_dict("records"):
        combo = combination_of(row, tuple(rec.axes))
        frame = with_grid(images[combo, row["prompt_id"], int(row["seed"])], sweep.cells)
        tracking.log_step_image(tracker, run_id, frame, _frame_key(row, rec), int(row["epoch"]))
        frames += 1
    rows = table_rows(sweep)
    tracking.replace_table(tracker, run_id, rows, TABLE_FILE)
    return {"points": points, "frames": frames, "rows": len(rows)}
