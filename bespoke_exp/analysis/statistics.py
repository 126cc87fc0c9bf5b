"""Statistics over the per-image table: bootstrap means and intervals per (epoch, guidance)
combination, paired comparisons, and marginals by epoch or guidance.

`images` has one row per generated image: run_id, epoch, guidance, prompt_id, seed and the
ranked metric (default `score`); optionally split ("train"/"heldout") and checkpoint. An
item is a (prompt_id, seed) pair. Every combination renders the same items, so uncertainty
is a percentile bootstrap over items, and comparisons resample the same items on both
sides (paired), which cancels per-prompt difficulty. A combination missing items is
compared on the items both sides share. Metric direction comes from the metric registry
(or `higher_is_better=`). Pure pandas/numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.scoring.registry import metric_spec

REQUIRED = ("run_id", "epoch", "guidance", "prompt_id", "seed")
NEAR_COPY = "memorisation/near_copy"
Combination = tuple[int, float]  # (epoch, guidance): one sweep combination


@dataclass
class Comparison:
    """Paired difference mean(a) - mean(b) over shared items; significant = a beats b beyond noise."""

    a: tuple
    b: tuple
    diff: float
    ci_low: float
    ci_high: float
    n_items: int
    significant: bool


@dataclass
class Table:
    wide: pd.DataFrame  # index (prompt_id, seed), columns (epoch, guidance): item mean of the metric
    cells: pd.DataFrame  # index (epoch, guidance): run_id [, checkpoint]
    split: pd.Series  # prompt_id -> "train" | "heldout" | ""
    near_copy: pd.Series  # epoch -> near-copy rate (empty when not measured)
    metric: str
    sign: float  # +1 when higher is better, so sign * value is always "goodness"


# --------------------------------------------------------------------------- preparation
def prepare(images: pd.DataFrame, metric: str, higher_is_better: bool | None) -> Table:
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
    df = images.astype({"epoch": int, "guidance": float, metric: float})
    rows = df.dropna(subset=[metric])  # an image whose metric could not be computed carries no evidence
    if rows.empty:
        raise ValueError(f"metric column {metric!r} is NaN in every row")
    wide = rows.pivot_table(index=["prompt_id", "seed"], columns=["epoch", "guidance"], values=metric)
    extra = ["checkpoint"] if "checkpoint" in rows.columns else []
    cells = rows.groupby(["epoch", "guidance"])[["run_id", *extra]].first()
    split = (
        rows.groupby("prompt_id")["split"].first().fillna("").astype(str).str.strip().str.lower()
        if "split" in rows.columns
        else pd.Series(dtype=str)
    )
    near = df.groupby("epoch")[NEAR_COPY].mean().dropna() if NEAR_COPY in df else pd.Series(dtype=float)
    return Table(wide, cells, split, near, metric, 1.0 if higher_is_better else -1.0)


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) bootstrap means of each column of x (items x k, NaN = missing item).

    Items are resampled jointly for all columns (one count vector per replicate), so
    columns are paired; a missing item simply contributes nothing to its column.
    """
    n = x.shape[0]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, x, 0.0)) / (counts @ present)


def _summarise(x: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[np.ndarray, ...]:
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    boot = _boot_means(x, n_boot, seed)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.nanquantile(boot, [tail, 1.0 - tail], axis=0)
    return np.nanmean(x, axis=0), lo, hi, (~np.isnan(x)).sum(axis=0)


def paired(xa: np.ndarray, xb: np.ndarray, what: str, n_boot: int, confidence: float, seed: int) -> tuple:
    shared = ~np.isnan(xa) & ~np.isnan(xb)
    if not shared.any():
        raise ValueError(f"{what} share no (prompt_id, seed) items to compare")
    mean, lo, hi, n = _summarise((xa - xb)[shared][:, None], n_boot, confidence, seed)
    return float(mean[0]), float(lo[0]), float(hi[0]), int(n[0])


def beats(sign: float, diff: float, lo: float, hi: float, min_effect: float = 0.0) -> bool:
    return bool((lo > 0 if sign > 0 else hi < 0) and sign * diff >= min_effect)


def marginal_items(t: Table, by: str) -> pd.DataFrame:
    """Items x levels of `by`: each item's mean over the other factor (paired across levels)."""
    if by not in ("epoch", "guidance"):
        raise ValueError(f"marginal: by must be 'epoch' or 'guidance', got {by!r}")
    return t.wide.T.groupby(level=by).mean().T


# --------------------------------------------------------------------------- ranking
def rank_table(t: Table, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    mean, lo, hi, n = _summarise(t.wide.to_numpy(float), n_boot, confidence, seed)
    out = pd.DataFrame(list(t.wide.columns), columns=["epoch", "guidance"])
    out = out.join(t.cells, on=["epoch", "guidance"])
    out = out.assign(mean=mean, ci_low=lo, ci_high=hi, n_items=n, _key=t.sign * mean)
    # Ties go to the earlier epoch, then lower guidance: less training, less overfitting risk.
    out = out.sort_values(["_key", "epoch", "guidance"], ascending=[False, True, True])
    out = out.drop(columns="_key")
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def rank_combinations(
    images: pd.DataFrame,
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """One row per (epoch, guidance), best first: epoch, guidance, run_id, [checkpoint], mean
    (of `metric` over items), ci_low, ci_high (bootstrap over items), n_items, rank."""
    return rank_table(prepare(images, metric, higher_is_better), n_boot, confidence, seed)


def compare_combinations(
    images: pd.DataFrame,
    a: Combination,
    b: Combination,
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> Comparison:
    """Paired bootstrap of mean(a) - mean(b) over the items both (epoch, guidance) combinations share."""
    return compare_table(prepare(images, metric, higher_is_better), a, b, (n_boot, confidence, seed))


def compare_table(t: Table, a: Combination, b: Combination, boot: tuple) -> Comparison:
    a, b = (int(a[0]), float(a[1])), (int(b[0]), float(b[1]))
    for combination in (a, b):
        if combination not in t.wide.columns:
            have = list(t.wide.columns)
            raise ValueError(
                f"combination (epoch, guidance) {combination} not in the images table; it has {have}"
            )
    xa, xb = t.wide[a].to_numpy(float), t.wide[b].to_numpy(float)
    diff, lo, hi, n = paired(xa, xb, f"combinations {a} and {b}", *boot)
    return Comparison(a, b, diff, lo, hi, n, beats(t.sign, diff, lo, hi))


def marginal_table(t: Table, by: str, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    m = marginal_items(t, by)
    mean, lo, hi, n = _summarise(m.to_numpy(float), n_boot, confidence, seed)
    return pd.DataFrame({by: list(m.columns), "mean": mean, "ci_low": lo, "ci_high": hi, "n_items": n})


def marginal(
    images: pd.DataFrame,
    by: str = "epoch",
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Mean of `metric` per epoch (averaged over guidance) or per guidance (over epochs), with a
    bootstrap CI over items. Columns [by, mean, ci_low, ci_high, n_items], sorted by `by`."""
    return marginal_table(prepare(images, metric, higher_is_better), by, n_boot, confidence, seed)


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
