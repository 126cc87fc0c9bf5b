"""How a sweep's items are resampled, and the intervals that follow: replicate weights for a
two-level bootstrap (prompts, then their seeds) or, with few prompts, seeds within fixed
prompts; a small-sample Student-t correction; max-t critical values for claims about
something picked by the data; sample-size planning. Pure numpy (and scipy's t quantiles).

Paired differences with prompts fixed (fewer than `min_prompts`) are not bootstrapped: with 2
seeds a prompt's two items give a resample only two distinct values, which sees half the seed
variance, and the family's bootstrap max-t inherits that (a null 4 prompts x 2 seeds sweep
called a trend in about 7% of sweeps). They take the seed noise within each prompt, pooled over
the comparisons the claim was picked from (`family_seed_variance`), with Student-t quantiles on
one comparison's degrees of freedom, Bonferroni-corrected over the family. (Each column's own
variance, Shukla-style, was tried: it holds the level as well but needs more seeds than a
first sweep has to find a real decline; the demo's overfitting is then lost in noise.)
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
    prompt_codes: np.ndarray | None = None  # item -> prompt index, for the pooled seed variance

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
            "differences": "bootstrap over prompts"
            if self.two_level
            else "seed noise within each prompt, pooled over the comparisons picked from",
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
        out.append(
            f"{n_items} item(s) per combination ({n_prompts} prompt(s) x {seeds} seed(s)) replicate nothing: "
            "the sweep is too small for any interval, so no difference is called; add seeds"
        )
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
    return Resampling(
        weights, two_level, n_prompts, len(codes), df, confidence, inflate, tuple(caveats), codes
    )


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


def pooled_seed_variance(x: np.ndarray, prompt_codes: np.ndarray) -> tuple[float, int]:
    """(variance, degrees of freedom) of one image's seed-by-column noise, pooled over prompts:
    within each prompt, what is left of its items x columns block once each seed's and each
    column's mean are taken out. A seed's shared luck and a prompt's own response to a column
    both cancel, as they do in a paired difference. Items missing a column are left out."""
    ss, df = 0.0, 0
    for p in np.unique(prompt_codes):
        block = x[prompt_codes == p]
        block = block[~np.isnan(block).any(axis=1)]
        rows, cols = block.shape
        if rows < 2 or cols < 2:
            continue
        resid = block - block.mean(axis=1, keepdims=True) - block.mean(axis=0) + block.mean()
        ss += float((resid**2).sum())
        df += (rows - 1) * (cols - 1)
    return (ss / df if df else math.nan), df


def family_seed_variance(
    x: np.ndarray, family: tuple[int, np.ndarray], prompt_codes: np.ndarray
) -> tuple[float, int]:
    """(variance, degrees of freedom) of one image's seed noise in the family's comparisons i - j,
    pooled over them. Column i is in every one, so a noisy i (a collapsing last epoch, an
    unstable best) counts in full, as it does in each difference, instead of being diluted among
    columns no comparison involves; and since its share is known no better than from one
    comparison's items, the degrees of freedom are one comparison's, not their sum."""
    i, js = family
    parts = [pooled_seed_variance(x[:, [i, j]], prompt_codes) for j in js if j != i]
    total = sum(d for _, d in parts)
    if not total:
        return math.nan, 0
    return sum(v * d for v, d in parts) / total, min(d for _, d in parts)


def contrast(
    x: np.ndarray, a: int, b: int, what: str, rs: Resampling, family: tuple[int, np.ndarray] | None = None
) -> dict[str, Any]:
    """Column a - column b of `x` (items x the comparison family's columns) over shared items,
    with interval diff +- critical * SE. `family` (i, js): when a claim about this pair was
    picked by the data, the comparisons i - j it was picked from (the best against every other
    column; every earlier epoch against the last); the interval then holds for all at once."""
    xa, xb = x[:, a], x[:, b]
    shared = ~np.isnan(xa) & ~np.isnan(xb)
    if not shared.any():
        raise ValueError(f"{what} share no (prompt_id, seed) items to compare")
    d = np.where(shared, xa - xb, np.nan)
    diff, n = float(np.nanmean(d)), int(shared.sum())
    over = len(family[1]) if family is not None and len(family[1]) > 1 else 1
    if rs.two_level or rs.prompt_codes is None:
        boot = _boot_means(d[:, None], rs.weights)[:, 0]
        se = float(np.nanstd(boot))
        z = max_t(x, [family], rs) if over > 1 else normal_critical(rs.confidence)
        half = rs.critical(z)
    else:
        variance, df = family_seed_variance(x, family or (a, np.array([b])), rs.prompt_codes)
        se = math.sqrt(2.0 * variance / n) if df else math.inf
        tail = (1.0 - rs.confidence) / (2.0 * over)  # Bonferroni over the comparisons picked from
        z = NormalDist().inv_cdf(1.0 - tail)
        half = float(student_t.ppf(1.0 - tail, df)) if df else math.inf
    return {
        "diff": diff,
        "ci_low": diff - half * se,
        "ci_high": diff + half * se,
        "n": n,
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
