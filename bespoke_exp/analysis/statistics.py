"""Statistics over the per-image table: bootstrap means and intervals per combination of the
sweep's axes (epoch, guidance and any other axis the sweep varied, e.g. lora_scale), paired
comparisons, and marginals by any axis.

`images` has one row per generated image: run_id, epoch, guidance, prompt_id, seed and the
ranked metric (default `score`); optionally split ("train"/"heldout"), checkpoint and a column
per further axis (config.SWEEP_AXES: an axis counts when it takes more than one value). An
item is a (prompt_id, seed) pair; every combination renders the same items, so comparisons
weight the same items on both sides (paired), which cancels per-prompt and per-seed
difficulty. A combination missing items is compared on the items both sides share. Metric
direction comes from the metric registry (or `higher_is_better=`). Pure pandas/numpy.

How the intervals match how the data were drawn (quotable; the machinery is in `resampling`):
Intervals come from a two-level bootstrap that resamples prompts and then seeds within each
drawn prompt, widened by a small-sample t correction with (prompts - 1) degrees of freedom;
with fewer than `min_prompts` prompts a prompt-level resample is degenerate, so we resample
seeds within each fixed prompt instead and the intervals then speak only for the prompts
swept. A paired difference between two combinations then gets its SE from the seed noise
within each prompt, pooled over the comparisons of its family (resampling.contrast), not from
a bootstrap of 2 values per prompt. Every claim about a combination picked by its own observed
mean (the best against the runner-up, the peak epoch against the last) holds simultaneously over
all the comparisons it could have been picked from (the best against every other combination;
every epoch against the last: max-t over prompt resamples, Bonferroni-t with prompts fixed), so
a null sweep yields a false "beats" or a false overfitting or undertrained call in at most
1 - confidence of sweeps, down to 3 prompts x 2 seeds (measured: scripts/calibrate_decisions.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.analysis.resampling import (
    Resampling,
    beats,
    contrast,
    resampling,
    summarise,
)
from bespoke_exp.config import SWEEP_AXES
from bespoke_exp.config.schema import AnalysisConfig
from bespoke_exp.scoring.registry import metric_spec

REQUIRED = ("run_id", "epoch", "guidance", "prompt_id", "seed")
NEAR_COPY = "memorisation/near_copy"
BASE_AXES = ("epoch", "guidance")  # always axes: the epoch trend and the 2-D figures are read over them
EXTRA_AXES = tuple(a for a in SWEEP_AXES if a not in BASE_AXES)  # axes when a sweep varies them
Combination = tuple  # (epoch, guidance, *extra axes): one sweep combination, in `Table.axes` order


def sweep_axes(images: pd.DataFrame) -> tuple[str, ...]:
    """The axes a combination is made of: epoch, guidance and every further axis (SWEEP_AXES)
    with more than one value in `images`. A constant one is a setting, and leaving it out keeps
    a sweep that does not vary it exactly as it was."""
    varied = [a for a in EXTRA_AXES if a in images.columns and images[a].nunique(dropna=True) > 1]
    return (*BASE_AXES, *varied)


def combination_of(values: Any, axes: tuple[str, ...]) -> tuple:
    """A row's (or mapping's) combination key in `axes` order: epoch as int, other axes float."""
    return tuple(int(values[a]) if a == "epoch" else float(values[a]) for a in axes)


def describe(values: Any, axes: tuple[str, ...]) -> str:
    """'epoch 6, guidance 7.5[, lora_scale 0.8]': a combination in words."""
    return ", ".join(f"{a} {int(values[a])}" if a == "epoch" else f"{a} {float(values[a]):g}" for a in axes)


@dataclass
class Comparison:
    """Paired difference mean(a) - mean(b) over shared items; significant = a beats b beyond noise.

    `simultaneous_over` > 1 when a or b was picked by the data: the interval then holds for that
    many comparisons at once (max-t), so it already pays for the selection."""

    a: tuple
    b: tuple
    diff: float
    ci_low: float
    ci_high: float
    n_items: int
    significant: bool
    simultaneous_over: int = 1
    se: float | None = None  # bootstrap SE of diff (for sample-size planning)
    z: float | None = None  # raw critical value (normal scale) before the small-sample correction


@dataclass
class Table:
    """A sweep's items x combinations for one metric, and how they are to be resampled."""

    wide: pd.DataFrame  # index (prompt_id, seed), columns `axes`: item mean of the metric
    runs: pd.DataFrame  # index `axes`: each combination's run_id [, checkpoint]
    split: pd.Series  # prompt_id -> "train" | "heldout" | ""
    near_copy: pd.Series  # epoch -> near-copy rate (empty when not measured)
    sign: float  # +1 when higher is better, so sign * value is always "goodness"
    settings: AnalysisConfig  # the ranked metric, n_boot, confidence, seed, min_prompts, thresholds
    axes: tuple[str, ...] = BASE_AXES  # the levels of `wide`'s columns, epoch first

    @property
    def metric(self) -> str:
        return self.settings.metric

    @property
    def extra_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.axes if a not in BASE_AXES)


# --------------------------------------------------------------------------- preparation
def prepare(
    images: pd.DataFrame,
    settings: AnalysisConfig,
    higher_is_better: bool | None = None,
    axes: tuple[str, ...] | None = None,
) -> Table:
    """The images as items x combinations of `settings.metric`; `axes` default to
    `sweep_axes(images)`, the metric's direction to the metrics registry's."""
    metric = settings.metric
    if not isinstance(images, pd.DataFrame) or images.empty:
        raise ValueError("images table is empty: need one row per generated image")
    missing = [c for c in (*REQUIRED, metric) if c not in images.columns]
    if missing:
        raise ValueError(f"images table lacks required column(s) {missing}; has {list(images.columns)}")
    if higher_is_better is None:
        try:
            higher_is_better = metric_spec(metric).higher_is_better
        except KeyError as err:
            raise ValueError(f"metric {metric!r} not in the metrics registry; pass higher_is_better") from err
    axes = tuple(axes) if axes is not None else sweep_axes(images)
    if axes[: len(BASE_AXES)] != BASE_AXES or any(a not in images.columns for a in axes):
        raise ValueError(f"axes {axes} must start with {BASE_AXES} and be columns of the images table")
    df = images.astype({"epoch": int, **{a: float for a in axes[1:]}, metric: float})
    rows = df.dropna(subset=[metric])  # an image whose metric could not be computed carries no evidence
    if rows.empty:
        raise ValueError(f"metric column {metric!r} is NaN in every row")
    wide = rows.pivot_table(index=["prompt_id", "seed"], columns=list(axes), values=metric)
    extra = ["checkpoint"] if "checkpoint" in rows.columns else []
    runs = rows.groupby(list(axes))[["run_id", *extra]].first()
    split = (
        rows.groupby("prompt_id")["split"].first().fillna("").astype(str).str.strip().str.lower()
        if "split" in rows.columns
        else pd.Series(dtype=str)
    )
    near = df.groupby("epoch")[NEAR_COPY].mean().dropna() if NEAR_COPY in df else pd.Series(dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    return Table(wide, runs, split, near, sign, settings, axes)


def table_resampling(t: Table) -> Resampling:
    return resampling(t.wide.index.get_level_values("prompt_id").to_numpy(), t.settings)


def seeds_per_prompt(t: Table) -> int:
    return int(t.wide.index.get_level_values("prompt_id").value_counts().min())


def marginal_items(t: Table, by: str) -> pd.DataFrame:
    """Items x levels of `by`: each item's mean over the other axes (paired across levels)."""
    if by not in t.axes:
        raise ValueError(f"marginal: by must be one of the sweep's axes {list(t.axes)}, got {by!r}")
    return t.wide.T.groupby(level=by).mean().T


# --------------------------------------------------------------------------- ranking
def rank_table(t: Table) -> pd.DataFrame:
    """Pointwise intervals per combination: each is right for one combination named in
    advance; the best's is optimistic (it was picked for its high mean)."""
    mean, lo, hi, n = summarise(t.wide.to_numpy(float), table_resampling(t))
    axes = list(t.axes)
    out = pd.DataFrame(list(t.wide.columns), columns=axes)
    out = out.join(t.runs, on=axes)
    out = out.assign(mean=mean, ci_low=lo, ci_high=hi, n_items=n, _key=t.sign * mean)
    # Ties go to the earlier epoch, then lower guidance (then a weaker LoRA): less training,
    # less overfitting risk.
    out = out.sort_values(["_key", *axes], ascending=[False, *[True] * len(axes)])
    out = out.drop(columns="_key")
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def rank_combinations(
    images: pd.DataFrame, settings: AnalysisConfig | None = None, *, higher_is_better: bool | None = None
) -> pd.DataFrame:
    """One row per combination, best first: epoch, guidance, [further axes], run_id, [checkpoint],
    mean (of the ranked metric over items), ci_low, ci_high (pointwise, bootstrap over items),
    n_items, rank. `settings` default to `AnalysisConfig()`."""
    return rank_table(prepare(images, settings or AnalysisConfig(), higher_is_better))


def compare_combinations(
    images: pd.DataFrame,
    a: Combination,
    b: Combination,
    settings: AnalysisConfig | None = None,
    *,
    higher_is_better: bool | None = None,
) -> Comparison:
    """Paired bootstrap of mean(a) - mean(b) over the items both combinations ((epoch, guidance,
    *further axes), in `sweep_axes` order) share, for a pair named in advance (not picked by
    looking at the means)."""
    return compare_table(prepare(images, settings or AnalysisConfig(), higher_is_better), a, b)


def _column(t: Table, combination: Combination) -> Combination:
    names = f"({', '.join(t.axes)})"
    if len(combination) != len(t.axes):
        raise ValueError(f"combination {tuple(combination)} must give {names}, one value per swept axis")
    c = combination_of(dict(zip(t.axes, combination)), t.axes)
    if c not in t.wide.columns:
        raise ValueError(f"combination {names} {c} not in the images table; it has {list(t.wide.columns)}")
    return c


def compare_table(t: Table, a: Combination, b: Combination, selected: bool = False) -> Comparison:
    """a - b, paired. `selected=True` when a is the best by observed mean (and b the runner-up):
    the interval is then simultaneous over a against every other combination (Hsu's multiple
    comparisons with the best, critical value by max-t), so "a beats b" also means "a is best"."""
    a, b = _column(t, a), _column(t, b)
    k = t.wide.shape[1]
    i, j = t.wide.columns.get_loc(a), t.wide.columns.get_loc(b)
    others = (i, np.delete(np.arange(k), i)) if selected else None
    what = f"combinations {a} and {b}"
    c = contrast(t.wide.to_numpy(float), i, j, what, table_resampling(t), others)
    simultaneous_over = k - 1 if selected else 1
    significant = beats(t.sign, c["diff"], c["ci_low"], c["ci_high"])
    return Comparison(
        a, b, c["diff"], c["ci_low"], c["ci_high"], c["n"], significant, simultaneous_over, c["se"], c["z"]
    )


def marginal_table(t: Table, by: str) -> pd.DataFrame:
    m = marginal_items(t, by)
    mean, lo, hi, n = summarise(m.to_numpy(float), table_resampling(t))
    return pd.DataFrame({by: list(m.columns), "mean": mean, "ci_low": lo, "ci_high": hi, "n_items": n})


def marginal(
    images: pd.DataFrame,
    by: str = "epoch",
    settings: AnalysisConfig | None = None,
    *,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Mean of the ranked metric per level of one axis (`by`: epoch, guidance, lora_scale...),
    averaged over the other axes, with a bootstrap CI over items. Columns [by, mean, ci_low,
    ci_high, n_items], sorted by `by`."""
    return marginal_table(prepare(images, settings or AnalysisConfig(), higher_is_better), by)


def plain(x: Any) -> Any:
    """JSON-ready copy: numpy scalars -> Python, NaN/NA -> None, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if x is pd.NA or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x
