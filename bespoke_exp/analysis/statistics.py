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

How the inference matches how the data were drawn (quotable):
Intervals come from a two-level bootstrap that resamples prompts and then seeds within each
drawn prompt, widened by a small-sample t correction with (prompts - 1) degrees of freedom;
with fewer than `min_prompts` prompts a prompt-level resample is degenerate, so we resample
seeds within each fixed prompt instead and the intervals then speak only for the prompts
swept. Every claim about a combination picked by its own observed mean (the best against the
runner-up, the peak epoch against the last) uses max-t intervals simultaneous over all the
comparisons it could have been picked from (the best against every other combination; every
epoch against the last), so a null sweep yields a false "beats" or a false overfitting or
undertrained call in at most 1 - confidence of sweeps (measured: scripts/calibrate_decisions.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist  # stdlib (absolute import), not this module
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.config import SWEEP_AXES
from bespoke_exp.scoring.registry import metric_spec

REQUIRED = ("run_id", "epoch", "guidance", "prompt_id", "seed")
NEAR_COPY = "memorisation/near_copy"
MIN_PROMPTS = 5  # fewer prompts than this: a prompt-level bootstrap has too few distinct resamples
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

    `family` > 1 when a or b was picked by the data: the interval is then simultaneous over
    that many comparisons (max-t), so it already pays for the selection."""

    a: tuple
    b: tuple
    diff: float
    ci_low: float
    ci_high: float
    n_items: int
    significant: bool
    family: int = 1
    se: float | None = None  # bootstrap SE of diff (for sample-size planning)
    z: float | None = None  # raw critical value (normal scale) before the small-sample correction


@dataclass
class Table:
    wide: pd.DataFrame  # index (prompt_id, seed), columns `axes`: item mean of the metric
    cells: pd.DataFrame  # index `axes`: run_id [, checkpoint]
    split: pd.Series  # prompt_id -> "train" | "heldout" | ""
    near_copy: pd.Series  # epoch -> near-copy rate (empty when not measured)
    metric: str
    sign: float  # +1 when higher is better, so sign * value is always "goodness"
    min_prompts: int = MIN_PROMPTS
    axes: tuple[str, ...] = BASE_AXES  # the levels of `wide`'s columns, epoch first

    @property
    def extra_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.axes if a not in BASE_AXES)


@dataclass(frozen=True)
class Resampling:
    """How the items are resampled, and the small-sample correction that goes with it.

    weights[b, i] is how often item i is drawn in replicate b (same draws for every column,
    so columns stay paired). Bootstrap variances are biased low by (units - groups) / units,
    and few units make normal quantiles too narrow: `inflate` and Student-t quantiles with
    `df` degrees of freedom undo both."""

    weights: np.ndarray
    two_level: bool
    n_prompts: int
    n_items: int
    df: int
    confidence: float
    inflate: float = 1.0
    caveats: tuple[str, ...] = field(default=())

    @property
    def scheme(self) -> str:
        if self.two_level:
            return "prompts (each drawn prompt with all its seeds)"
        return "seeds within each prompt (prompts fixed)"

    def critical(self, z: float) -> float:
        """A normal critical value carried over to this design's t distribution, inflated."""
        if self.df < 1:
            return z  # nothing replicated: no correction is possible (said in the caveats)
        p = NormalDist().cdf(z)
        return self.inflate * t_quantile(p, self.df)

    def summary(self) -> dict[str, Any]:
        return {
            "resampling": self.scheme,
            "prompt_level": self.two_level,
            "n_prompts": self.n_prompts,
            "n_items": self.n_items,
            "df": self.df,
            "caveats": list(self.caveats),
        }


@lru_cache(maxsize=256)
def _t_table(df: float) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative, theta) for the Student-t CDF on t = sqrt(df) tan(theta): there the density
    is proportional to cos(theta) ** (df - 1), smooth enough for a trapezoid rule."""
    theta = np.linspace(0.0, np.pi / 2, 50_001)
    dens = np.cos(theta) ** (df - 1) if df != 1 else np.ones_like(theta)
    cum = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2)])
    return cum / cum[-1], theta


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile, numerically (pure numpy; normal beyond 400 degrees of freedom)."""
    if df >= 400:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    cum, theta = _t_table(float(df))
    u = min(2.0 * p - 1.0, 1.0 - 1e-12)
    return float(math.sqrt(df) * math.tan(float(np.interp(u, cum, theta))))


# --------------------------------------------------------------------------- preparation
def prepare(
    images: pd.DataFrame,
    metric: str,
    higher_is_better: bool | None,
    min_prompts: int = MIN_PROMPTS,
    axes: tuple[str, ...] | None = None,
) -> Table:
    """The images as items x combinations; `axes` default to `sweep_axes(images)`."""
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
    cells = rows.groupby(list(axes))[["run_id", *extra]].first()
    split = (
        rows.groupby("prompt_id")["split"].first().fillna("").astype(str).str.strip().str.lower()
        if "split" in rows.columns
        else pd.Series(dtype=str)
    )
    near = df.groupby("epoch")[NEAR_COPY].mean().dropna() if NEAR_COPY in df else pd.Series(dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    return Table(wide, cells, split, near, metric, sign, min_prompts, axes)


def _caveats(n_prompts: int, seeds: int, n_items: int, df: int, two_level: bool, min_prompts: int) -> list:
    out = []
    if not two_level:
        out.append(
            f"only {n_prompts} prompt(s) (fewer than {min_prompts}): a prompt-level bootstrap would have "
            "too few distinct resamples, so seeds are resampled within each prompt and every interval "
            "speaks for these prompts only, not for prompts outside the set"
        )
    elif n_prompts < min_prompts:
        out.append(
            f"one seed per prompt: only the {n_prompts} prompts replicate, so intervals are approximate"
        )
    if df < 1:
        out.append("nothing is replicated: the intervals have no width to trust")
    elif df < 10:
        out.append(
            f"{n_items} items per combination ({n_prompts} prompts x {seeds} seeds) leave {df} degrees of "
            "freedom: intervals are widened with Student-t quantiles, which is only as good as the "
            "items are typical"
        )
    return out


def resampling(
    prompts: np.ndarray, n_boot: int, confidence: float, seed: int, min_prompts: int = MIN_PROMPTS
) -> Resampling:
    """Replicate weights over items labelled by prompt.

    Two-level: prompts are drawn with replacement and each drawn prompt brings all its seeds
    (the second stage without replacement: drawing seeds again would count seed noise twice,
    since it is already in the spread of prompt means; Davison & Hinkley 1997, sec. 3.8). With
    fewer than `min_prompts` prompts every prompt is kept once and its seeds are drawn with
    replacement: the prompts are then fixed, not sampled."""
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    codes, names = pd.factorize(np.asarray(prompts))
    n_prompts, sizes = len(names), np.bincount(codes)
    # One seed per prompt leaves nothing to draw within a prompt: then prompts must be the unit.
    two_level = n_prompts >= min_prompts or (sizes.max() < 2 and n_prompts > 1)
    units, groups = (n_prompts, 1) if two_level else (len(codes), n_prompts)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(codes)))
    if two_level:
        drawn = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot)
        weights[:] = drawn[:, codes]
    else:
        for p, size in enumerate(sizes):
            weights[:, codes == p] = rng.multinomial(size, np.full(size, 1.0 / size), size=n_boot)
    df = units - groups
    caveats = _caveats(n_prompts, int(sizes.min()), len(codes), df, two_level, min_prompts)
    inflate = math.sqrt(units / df) if df >= 1 else 1.0
    return Resampling(weights, two_level, n_prompts, len(codes), df, confidence, inflate, tuple(caveats))


def table_resampling(t: Table, n_boot: int, confidence: float, seed: int) -> Resampling:
    prompts = t.wide.index.get_level_values("prompt_id").to_numpy()
    return resampling(prompts, n_boot, confidence, seed, t.min_prompts)


def seeds_per_prompt(t: Table) -> int:
    return int(t.wide.index.get_level_values("prompt_id").value_counts().min())


def _boot_means(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_boot, k) replicate means of each column of x (items x k, NaN = missing item)."""
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(present, x, 0.0)) / (weights @ present)


def normal_critical(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _summarise(x: np.ndarray, rs: Resampling) -> tuple[np.ndarray, ...]:
    """Per column: mean, t-corrected percentile interval, items present."""
    boot = _boot_means(x, rs.weights)
    tail = (1.0 - rs.confidence) / 2.0
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(boot, [tail, 1.0 - tail], axis=0)
    est = np.nanmean(x, axis=0)
    z = normal_critical(rs.confidence)
    k = rs.critical(z) / z  # stretch the percentile interval about the estimate
    return est, est - k * (est - lo), est + k * (hi - est), (~np.isnan(x)).sum(axis=0)


def paired(
    xa: np.ndarray,
    xb: np.ndarray,
    what: str,
    n_boot: int,
    confidence: float,
    seed: int,
    rs: Resampling | None = None,
) -> tuple:
    """(mean, ci_low, ci_high, n_items) of xa - xb over shared items. `rs` says how items are
    resampled (from `table_resampling`); without it every item counts as its own prompt."""
    shared = ~np.isnan(xa) & ~np.isnan(xb)
    if not shared.any():
        raise ValueError(f"{what} share no (prompt_id, seed) items to compare")
    rs = rs or resampling(np.arange(len(xa)), n_boot, confidence, seed)
    d = np.where(shared, xa - xb, np.nan)
    mean, lo, hi, n = _summarise(d[:, None], rs)
    return float(mean[0]), float(lo[0]), float(hi[0]), int(n[0])


def max_t(x: np.ndarray, pairs: list[tuple[int, np.ndarray]], rs: Resampling) -> float:
    """Raw simultaneous critical value: the `confidence` quantile over replicates of the largest
    |replicate - observed| / SE among the (i, j) column differences in `pairs` (i with each of js).

    A claim about a difference picked by the data is covered when every difference it could have
    been picked from is covered at once; this is that bound (convert it with `rs.critical`)."""
    boot, est = _boot_means(x, rs.weights), np.nanmean(x, axis=0)
    stat = np.zeros(len(boot))
    for i, js in pairs:  # one row of pairs at a time: memory stays n_boot x k
        d = boot[:, [i]] - boot[:, js]
        with np.errstate(invalid="ignore"):
            se = np.nanstd(d, axis=0)
        keep = se > 0  # identical columns cannot be told apart and cannot be falsely separated
        if keep.any():
            dev = np.abs(d[:, keep] - (est[i] - est[js][keep])) / se[keep]
            stat = np.fmax(stat, np.nanmax(np.nan_to_num(dev, nan=0.0), axis=1))
    return float(np.quantile(stat, rs.confidence))


def all_pairs(k: int) -> list[tuple[int, np.ndarray]]:
    return [(i, np.arange(i + 1, k)) for i in range(k - 1)]


def contrast(xa: np.ndarray, xb: np.ndarray, what: str, rs: Resampling, z: float) -> dict[str, Any]:
    """xa - xb over shared items with interval diff +- critical(z) * SE (z raw, e.g. from `max_t`)."""
    shared = ~np.isnan(xa) & ~np.isnan(xb)
    if not shared.any():
        raise ValueError(f"{what} share no (prompt_id, seed) items to compare")
    d = np.where(shared, xa - xb, np.nan)
    boot = _boot_means(d[:, None], rs.weights)[:, 0]
    diff, se, half = float(np.nanmean(d)), float(np.nanstd(boot)), rs.critical(z)
    return {
        "diff": diff,
        "ci_low": diff - half * se,
        "ci_high": diff + half * se,
        "n": int(shared.sum()),
        "se": se,
        "z": z,
    }


def beats(sign: float, diff: float, lo: float, hi: float, min_effect: float = 0.0) -> bool:
    return bool((lo > 0 if sign > 0 else hi < 0) and sign * diff >= min_effect)


def marginal_items(t: Table, by: str) -> pd.DataFrame:
    """Items x levels of `by`: each item's mean over the other axes (paired across levels)."""
    if by not in t.axes:
        raise ValueError(f"marginal: by must be one of the sweep's axes {list(t.axes)}, got {by!r}")
    return t.wide.T.groupby(level=by).mean().T


def seeds_needed(
    c: dict[str, Any], rs: Resampling, seeds: int, target: float, power: float = 0.8, most: int = 256
) -> int | None:
    """Seeds per prompt at which a true difference of `target` would be declared (interval clear
    of 0) with probability `power`, if seed noise is what limits contrast `c` (SE ~ 1 / sqrt(seeds));
    None if more than `most` would be needed.

    With prompts resampled, prompt-to-prompt variation does not shrink with seeds, so this is a
    lower bound: more prompts may be what is needed."""
    if not (c["se"] > 0 and target > 0) or rs.df < 1:
        return None
    z_power = NormalDist().inv_cdf(power)
    se_now = c["se"] * rs.inflate  # the bootstrap SE is biased low by (units - groups) / units

    def margin(n: int) -> float:  # (critical value + power quantile) x SE at n seeds per prompt
        df = rs.n_prompts - 1 if rs.two_level else rs.n_prompts * (n - 1)
        if df < 1:
            return math.inf
        crit = t_quantile(NormalDist().cdf(c["z"]), df)
        return (crit + z_power) * se_now * math.sqrt(seeds / n)

    if margin(most) >= target:
        return None
    lo, hi = seeds, most  # the margin falls as n grows (smaller SE, more degrees of freedom)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if margin(mid) < target else (mid + 1, hi)
    return lo


# --------------------------------------------------------------------------- ranking
def rank_table(t: Table, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    """Pointwise intervals per combination: each is right for one combination named in
    advance; the best's is optimistic (it was picked for its high mean)."""
    mean, lo, hi, n = _summarise(t.wide.to_numpy(float), table_resampling(t, n_boot, confidence, seed))
    axes = list(t.axes)
    out = pd.DataFrame(list(t.wide.columns), columns=axes)
    out = out.join(t.cells, on=axes)
    out = out.assign(mean=mean, ci_low=lo, ci_high=hi, n_items=n, _key=t.sign * mean)
    # Ties go to the earlier epoch, then lower guidance (then a weaker LoRA): less training,
    # less overfitting risk.
    out = out.sort_values(["_key", *axes], ascending=[False, *[True] * len(axes)])
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
    min_prompts: int = MIN_PROMPTS,
) -> pd.DataFrame:
    """One row per combination, best first: epoch, guidance, [further axes], run_id, [checkpoint],
    mean (of `metric` over items), ci_low, ci_high (pointwise, bootstrap over items), n_items, rank."""
    t = prepare(images, metric, higher_is_better, min_prompts)
    return rank_table(t, n_boot, confidence, seed)


def compare_combinations(
    images: pd.DataFrame,
    a: Combination,
    b: Combination,
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
    min_prompts: int = MIN_PROMPTS,
) -> Comparison:
    """Paired bootstrap of mean(a) - mean(b) over the items both combinations ((epoch, guidance,
    *further axes), in `sweep_axes` order) share, for a pair named in advance (not picked by
    looking at the means)."""
    t = prepare(images, metric, higher_is_better, min_prompts)
    return compare_table(t, a, b, (n_boot, confidence, seed))


def _column(t: Table, combination: Combination) -> Combination:
    names = f"({', '.join(t.axes)})"
    if len(combination) != len(t.axes):
        raise ValueError(f"combination {tuple(combination)} must give {names}, one value per swept axis")
    c = combination_of(dict(zip(t.axes, combination)), t.axes)
    if c not in t.wide.columns:
        raise ValueError(f"combination {names} {c} not in the images table; it has {list(t.wide.columns)}")
    return c


def compare_table(
    t: Table, a: Combination, b: Combination, boot: tuple, selected: bool = False
) -> Comparison:
    """a - b, paired. `selected=True` when a is the best by observed mean (and b the runner-up):
    the interval is then simultaneous over a against every other combination (Hsu's multiple
    comparisons with the best, critical value by max-t), so "a beats b" also means "a is best"."""
    a, b = _column(t, a), _column(t, b)
    rs = table_resampling(t, *boot)
    k = t.wide.shape[1]
    family = k - 1 if selected else 1
    if selected and k > 2:
        i = t.wide.columns.get_loc(a)
        z = max_t(t.wide.to_numpy(float), [(i, np.delete(np.arange(k), i))], rs)
    else:
        z = normal_critical(rs.confidence)
    c = contrast(t.wide[a].to_numpy(float), t.wide[b].to_numpy(float), f"combinations {a} and {b}", rs, z)
    significant = beats(t.sign, c["diff"], c["ci_low"], c["ci_high"])
    return Comparison(a, b, c["diff"], c["ci_low"], c["ci_high"], c["n"], significant, family, c["se"], z)


def marginal_table(t: Table, by: str, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    m = marginal_items(t, by)
    mean, lo, hi, n = _summarise(m.to_numpy(float), table_resampling(t, n_boot, confidence, seed))
    return pd.DataFrame({by: list(m.columns), "mean": mean, "ci_low": lo, "ci_high": hi, "n_items": n})


def marginal(
    images: pd.DataFrame,
    by: str = "epoch",
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
    min_prompts: int = MIN_PROMPTS,
) -> pd.DataFrame:
    """Mean of `metric` per level of one axis (`by`: epoch, guidance, lora_scale...), averaged over
    the other axes, with a bootstrap CI over items. Columns [by, mean, ci_low, ci_high, n_items],
    sorted by `by`."""
    return marginal_table(
        prepare(images, metric, higher_is_better, min_prompts), by, n_boot, confidence, seed
    )


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
