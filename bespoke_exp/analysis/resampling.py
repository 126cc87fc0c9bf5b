"""How a sweep's items are resampled, and the intervals that follow: replicate weights for a
two-level bootstrap (prompts, then their seeds) or, with few prompts, seeds within fixed
prompts; a small-sample Student-t correction; max-t critical values for claims about
something picked by the data; sample-size planning. Pure numpy (and scipy's t quantiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist  # stdlib (absolute import), not this package's module
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from bespoke_exp.config.schema import AnalysisConfig


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
        return self.inflate * float(student_t.ppf(p, self.df))

    def summary(self) -> dict[str, Any]:
        return {
            "resampling": self.scheme,
            "prompt_level": self.two_level,
            "n_prompts": self.n_prompts,
            "n_items": self.n_items,
            "df": self.df,
            "caveats": list(self.caveats),
        }


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


def resampling(prompts: np.ndarray, settings: AnalysisConfig) -> Resampling:
    """Replicate weights over items labelled by prompt.

    Two-level: prompts are drawn with replacement and each drawn prompt brings all its seeds
    (the second stage without replacement: drawing seeds again would count seed noise twice,
    since it is already in the spread of prompt means; Davison & Hinkley 1997, sec. 3.8). With
    fewer than `min_prompts` prompts every prompt is kept once and its seeds are drawn with
    replacement: the prompts are then fixed, not sampled. `settings`: n_boot, confidence, seed
    and min_prompts."""
    n_boot, confidence, min_prompts = settings.n_boot, settings.confidence, settings.min_prompts
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    codes, names = pd.factorize(np.asarray(prompts))
    n_prompts, sizes = len(names), np.bincount(codes)
    # One seed per prompt leaves nothing to draw within a prompt: then prompts must be the unit.
    two_level = n_prompts >= min_prompts or (sizes.max() < 2 and n_prompts > 1)
    units, groups = (n_prompts, 1) if two_level else (len(codes), n_prompts)
    rng = np.random.default_rng(settings.seed)
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


def _boot_means(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_boot, k) replicate means of each column of x (items x k, NaN = missing item)."""
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(present, x, 0.0)) / (weights @ present)


def normal_critical(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def summarise(x: np.ndarray, rs: Resampling) -> tuple[np.ndarray, ...]:
    """Per column: mean, t-corrected percentile interval, items present."""
    boot = _boot_means(x, rs.weights)
    tail = (1.0 - rs.confidence) / 2.0
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(boot, [tail, 1.0 - tail], axis=0)
    est = np.nanmean(x, axis=0)
    z = normal_critical(rs.confidence)
    k = rs.critical(z) / z  # stretch the percentile interval about the estimate
    return est, est - k * (est - lo), est + k * (hi - est), (~np.isnan(x)).sum(axis=0)


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
        crit = float(student_t.ppf(NormalDist().cdf(c["z"]), df))
        return (crit + z_power) * se_now * math.sqrt(seeds / n)

    if margin(most) >= target:
        return None
    lo, hi = seeds, most  # the margin falls as n grows (smaller SE, more degrees of freedom)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if margin(mid) < target else (mid + 1, hi)
    return lo
