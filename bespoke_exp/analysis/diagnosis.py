"""Diagnosis: read the epoch trend and secondary signals, and say whether to retrain.

"A beats B" means the paired bootstrap CI of A-B excludes 0 in the good direction and the
difference is at least `Thresholds.min_effect`. Intervals resample as the data were drawn
(prompts, then seeds within prompts; see `statistics`); a comparison whose side was picked by
its mean (the peak epoch) uses an interval simultaneous over everything it was picked from.
Rules, on the epoch marginal (mean over guidance and every other swept axis) and the ranking
of the combinations (epoch, guidance and any other swept axis, e.g. lora_scale):
  poor_overall        best combination worse than `poor` -> retrain check_data (captions, resolution, LR)
  overfitting         peak epoch < last swept epoch and peak beats last (simultaneous over the
                      epochs the peak was picked from) -> retrain fewer_epochs=peak
  undertrained        last swept epoch is the peak and the trainer's final (or final unknown), and it
                      beats the epoch `lookback` earlier -> retrain more_epochs (or raise the LR)
  still_improving     as undertrained, but the trainer produced later epochs -> sweep them first
  sweet_spot          peak before the last epoch, decline within noise, every trainer epoch
                      swept (or final unknown) -> no retrain
  final_best          last epoch is the peak and the trainer's final (or final unknown) and has
                      plateaued -> no retrain
  partial_sweep       sweet_spot or final_best, but the trainer produced epochs the sweep left out:
                      the sweep cannot tell -> sweep them (no retrain claim). Also a secondary
                      finding whenever the trainer's later epochs were not swept.
  single_epoch        one epoch swept: no trend to read
  generalisation_gap  per-epoch mean(train) - mean(heldout) has LSQ slope > gap_slope and last gap > gap_late
  memorisation        near-copy rate > near_copy_rate at some epoch (named), slope reported
  guidance_sensitive  guidance-marginal spread > guidance_spread (best guidance named), else _insensitive
  <axis>_sensitive    the same for each further swept axis (lora_scale_sensitive ...), against
                      axis_spread; else <axis>_insensitive
Primary code: poor_overall, else the epoch-trend rule. Findings list every rule that fired,
primary first. Retrain comes from the primary finding, else the first finding that has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.analysis.resampling import Resampling, beats, contrast
from bespoke_exp.analysis.statistics import (
    NEAR_COPY,
    Table,
    describe,
    marginal_items,
    plain,
    prepare,
    rank_table,
    table_resampling,
)
from bespoke_exp.config.schema import AnalysisConfig, Thresholds


@dataclass
class RetrainSuggestion:
    action: str  # check_data | fewer_epochs | more_epochs | vary_captions | lower_learning_rate
    reason: str
    epochs: int | None = None


@dataclass
class Finding:
    code: str
    sentence: str
    evidence: dict[str, Any]
    retrain: RetrainSuggestion | None = None


@dataclass
class Diagnosis:
    code: str
    sentence: str
    findings: list[Finding]
    retrain: RetrainSuggestion | None
    intervals: dict[str, Any] | None = None  # how items were resampled, and its caveats


def _versus_last(em: pd.DataFrame, a: int, b: int, rs: Resampling) -> dict:
    """Epoch a - epoch b, simultaneous over every epoch-vs-last comparison. Which trend rule
    fires, and the peak it names, are picked from these comparisons by the data, so every
    trend claim holds over all of them at once: a flat sweep makes a false claim in at most
    1 - confidence of sweeps, whichever rule it would have fired."""
    x, cols = em.to_numpy(float), list(em.columns)
    last = len(cols) - 1
    return contrast(
        x, cols.index(a), cols.index(b), "epochs", rs, (last, np.arange(last)) if last > 1 else None
    )


def _overfit(
    t: Table, em: pd.DataFrame, peak: int, final_epoch: int | None, th: Thresholds, rs: Resampling
) -> Finding:
    """Peak (picked as the highest epoch mean) against the last epoch."""
    m, means, epochs = t.metric, em.mean(), [int(e) for e in em.columns]
    last = epochs[-1]
    c = _versus_last(em, peak, last, rs)
    d, lo, hi = c["diff"], c["ci_low"], c["ci_high"]
    ev = {
        "metric": m,
        "peak_epoch": peak,
        "peak_score": means[peak],
        "last_epoch": last,
        "last_score": means[last],
        "drop": d,
        "ci_low": lo,
        "ci_high": hi,
        "n_items": c["n"],
        "simultaneous_over": len(epochs) - 1,
    }
    picked = (
        f", simultaneous over the {len(epochs) - 1} epochs the peak was picked from"
        if len(epochs) > 2
        else ""
    )
    where = (
        f"Mean {m} peaks at epoch {peak} ({means[peak]:.2f}) and epoch {last} scores "
        f"{means[last]:.2f} (drop {abs(d):.3f}, {rs.confidence:.0%} CI {lo:.3f} to {hi:.3f}{picked})"
    )
    if beats(t.sign, d, lo, hi, th.min_effect):
        reason = f"epochs after {peak} lose {abs(d):.2f} {m} ({means[last]:.2f} at epoch {last})"
        return Finding(
            "overfitting",
            f"{where}: later epochs overfit.",
            ev,
            RetrainSuggestion("fewer_epochs", reason, peak),
        )
    if final_epoch is not None and last < final_epoch:  # flat so far says nothing about later epochs
        return Finding(
            "partial_sweep",
            f"{where}, a decline within noise, but epochs {last + 1}-{final_epoch} of the training run "
            f"were not swept, so this sweep cannot tell whether they do better: sweep epochs "
            f"{last + 1}-{final_epoch} before deciding on a retrain.",
            ev,
        )
    return Finding("sweet_spot", f"{where}, a decline within noise: no retrain needed.", ev)


def _rising(t: Table, em: pd.DataFrame, final_epoch: int | None, th: Thresholds, rs: Resampling) -> Finding:
    """The last epoch scores best: is it still rising over the epoch `lookback` earlier?"""
    m, means, epochs = t.metric, em.mean(), [int(e) for e in em.columns]
    last = epochs[-1]
    ref = max((e for e in epochs if e <= last - th.lookback), default=epochs[0])
    c = _versus_last(em, last, ref, rs)
    d, lo, hi, n = c["diff"], c["ci_low"], c["ci_high"], c["n"]
    ev = {
        "metric": m,
        "last_epoch": last,
        "last_score": means[last],
        "ref_epoch": ref,
        "ref_score": means[ref],
        "gain": d,
        "ci_low": lo,
        "ci_high": hi,
        "n_items": n,
        "final_epoch": final_epoch,
        "simultaneous_over": len(epochs) - 1,
    }
    gain = (
        f"{means[last]:.2f} vs {means[ref]:.2f} at epoch {ref}, gain {d:+.3f}, "
        f"{rs.confidence:.0%} CI {lo:.3f} to {hi:.3f}"
    )
    partial = final_epoch is not None and last < final_epoch
    if not beats(t.sign, d, lo, hi, th.min_effect):
        if partial:  # no gain among the swept epochs says nothing about the unswept ones
            return Finding(
                "partial_sweep",
                f"Epoch {last} scores best with no clear gain ({gain}), but epochs {last + 1}-{final_epoch} "
                "of the training run were not swept, so this sweep cannot tell whether training longer "
                f"helps or hurts: sweep epochs {last + 1}-{final_epoch} before deciding on a retrain.",
                ev,
            )
        return Finding(
            "final_best",
            f"The last epoch {last} scores best and has plateaued ({gain}): no retrain needed.",
            ev,
        )
    if not partial:
        more = last + max(th.lookback, last // 2)  # a starting point: half as many epochs again
        reason = f"{m} still rising at epoch {last} (+{abs(d):.2f} over epoch {ref}); train longer / raise LR"
        return Finding(
            "undertrained",
            f"Mean {m} is still rising at the final epoch {last} ({gain}): the LoRA is undertrained.",
            ev,
            RetrainSuggestion("more_epochs", reason, more),
        )
    return Finding(
        "still_improving",
        f"Mean {m} is still rising at epoch {last} ({gain}) but the trainer "
        f"produced epochs up to {final_epoch}: sweep epochs {last + 1}-{final_epoch} before "
        "retraining.",
        ev,
    )


def _trend(t: Table, em: pd.DataFrame, final_epoch: int | None, th: Thresholds, rs: Resampling) -> Finding:
    means, epochs = em.mean(), [int(e) for e in em.columns]
    last, peak = epochs[-1], int((t.sign * means).idxmax())  # idxmax: earliest epoch on ties
    if len(epochs) == 1:
        return Finding(
            "single_epoch",
            f"Only epoch {last} was swept, so there is no epoch trend to read.",
            {"metric": t.metric, "epochs": epochs},
        )
    return _overfit(t, em, peak, final_epoch, th, rs) if peak < last else _rising(t, em, final_epoch, th, rs)


def _unswept(epochs: list[int], final_epoch: int | None, primary: str) -> Finding | None:
    """A secondary finding naming the trainer's epochs the sweep left out (the primary already
    says so when it is partial_sweep or still_improving)."""
    last = epochs[-1]
    if final_epoch is None or last >= final_epoch or primary in ("partial_sweep", "still_improving"):
        return None
    return Finding(
        "partial_sweep",
        f"Epochs {last + 1}-{final_epoch} of the training run were not swept: what they score, and "
        "whether the trend above continues, is unknown.",
        {"swept_epochs": epochs, "final_epoch": final_epoch, "unswept": [last + 1, final_epoch]},
    )


def _gap(t: Table, em: pd.DataFrame, th: Thresholds) -> Finding | None:
    if t.split.empty:
        return None
    split = em.index.get_level_values("prompt_id").map(t.split)
    gaps = (t.sign * (em[split == "train"].mean() - em[split == "heldout"].mean())).dropna()
    if len(gaps) < 2:  # needs both splits at two or more epochs
        return None
    epochs = [int(e) for e in gaps.index]
    slope, late = float(np.polyfit(epochs, gaps.to_numpy(), 1)[0]), float(gaps.iloc[-1])
    if not (slope > th.gap_slope and late > th.gap_late):
        return None
    ev = {
        "metric": t.metric,
        "epochs": epochs,
        "gap": list(gaps),
        "slope": slope,
        "late_gap": late,
        "n_train_prompts": int((t.split == "train").sum()),
        "n_heldout_prompts": int((t.split == "heldout").sum()),
    }
    onset = next(e for e, g in zip(epochs, gaps) if g > th.gap_late)
    before = [e for e in epochs if e < onset]
    reason = f"held-out prompts trail training prompts by more than {th.gap_late:.2f} from epoch {onset}"
    retrain = (
        RetrainSuggestion("fewer_epochs", reason, before[-1])
        if before
        else RetrainSuggestion("vary_captions", reason + "; vary the training captions' phrasing")
    )
    sentence = (
        f"Held-out prompts fall behind training prompts as training goes on: the gap grows "
        f"{slope:+.3f} per epoch to {late:.2f} at epoch {epochs[-1]}."
    )
    return Finding("generalisation_gap", sentence, ev, retrain)


def _memorisation(t: Table, th: Thresholds, best_epoch: int) -> Finding | None:
    rate = t.near_copy
    flagged = [int(e) for e, r in rate.items() if r > th.near_copy_rate]
    if not flagged:
        return None
    epochs = [int(e) for e in rate.index]
    slope = float(np.polyfit(epochs, rate.to_numpy(), 1)[0]) if len(epochs) > 1 else 0.0
    ev = {
        "key": NEAR_COPY,
        "epochs": epochs,
        "rate": list(rate),
        "flagged_epochs": flagged,
        "slope": slope,
        "best_epoch_flagged": best_epoch in flagged,
    }
    worst = int(rate.idxmax())
    sentence = (
        f"Near-copies of training images exceed {th.near_copy_rate:.0%} at epoch(s) "
        f"{', '.join(map(str, flagged))} (up to {rate[worst]:.0%} at epoch {worst})"
        + (", rising with epoch." if slope > 0 else ".")
    )
    before = [e for e in epochs if e < flagged[0]]
    reason = f"{NEAR_COPY} above {th.near_copy_rate:.0%} from epoch {flagged[0]}"
    retrain = (
        RetrainSuggestion("fewer_epochs", reason, before[-1])
        if before
        else RetrainSuggestion("lower_learning_rate", reason + ", the first swept epoch")
    )
    return Finding("memorisation", sentence, ev, retrain)


# How a sensitivity finding names an axis; others go by their own name.
AXIS_WORDS = {"guidance": "Guidance", "lora_scale": "LoRA strength (lora_scale)"}


def _sensitivity(t: Table, axis: str, spread_threshold: float) -> Finding | None:
    """Does `axis` matter: the spread of its marginal means (over every other axis), best named.
    Codes `<axis>_sensitive` / `<axis>_insensitive`; evidence `<axis>`, score, spread, best_<axis>."""
    means = marginal_items(t, axis).mean()
    if len(means) < 2:
        return None
    best, spread = float((t.sign * means).idxmax()), float(means.max() - means.min())
    ev = {
        "metric": t.metric,
        axis: [float(g) for g in means.index],
        "score": list(means),
        "spread": spread,
        f"best_{axis}": best,
    }
    word = AXIS_WORDS.get(axis, axis)
    if spread > spread_threshold:
        return Finding(
            f"{axis}_sensitive",
            f"{word} matters: {best:g} scores best ({means[best]:.2f}) "
            f"and the {axis} means span {spread:.2f} (> {spread_threshold:.2f}).",
            ev,
        )
    return Finding(
        f"{axis}_insensitive",
        f"{word} barely matters: the {axis} means span {spread:.2f} "
        f"(<= {spread_threshold:.2f}); {best:g} is marginally best.",
        ev,
    )


def _sensitivities(t: Table, th: Thresholds) -> list[Finding | None]:
    """One "does it matter" finding per axis but epoch (whose trend has rules of its own)."""
    spread = {"guidance": th.guidance_spread}
    return [_sensitivity(t, a, spread.get(a, th.axis_spread)) for a in t.axes if a != "epoch"]


def diagnose_table(
    t: Table,
    ranking: pd.DataFrame,
    final_epoch: int | None,
    both_splits: Table | None = None,
    more: list[Finding] | None = None,
) -> Diagnosis:
    """`both_splits`: the same combinations over in-set and held-out prompts, when `t` ranks the
    held-out ones only (the generalisation gap is read from it); `more`: findings measured
    elsewhere (what the LoRA buys), listed after the trend's."""
    last = int(t.wide.columns.get_level_values("epoch").max())
    if final_epoch is not None and final_epoch < last:
        raise ValueError(f"final_epoch={final_epoch} but the sweep includes epoch {last}")
    th = t.settings.thresholds
    em = marginal_items(t, "epoch")
    best = ranking.iloc[0]
    findings: list[Finding | None] = []
    if t.sign * best["mean"] < t.sign * th.poor:
        ev = {
            "metric": t.metric,
            "best_score": best["mean"],
            "ci_low": best["ci_low"],
            "ci_high": best["ci_high"],
            "threshold": th.poor,
        }
        sentence = (
            f"Even the best combination ({describe(best, t.axes)}) scores only "
            f"{best['mean']:.2f} ({t.settings.confidence:.0%} CI {best['ci_low']:.2f} to "
            f"{best['ci_high']:.2f}), worse than {th.poor:.2f}."
        )
        reason = (
            f"no combination reaches {t.metric} {th.poor:.2f}; check the training captions, training "
            "resolution and learning rate"
        )
        findings.append(Finding("poor_overall", sentence, ev, RetrainSuggestion("check_data", reason)))
    rs = table_resampling(t)
    trend = _trend(t, em, final_epoch, th, rs)
    findings += [
        trend,
        _unswept([int(e) for e in em.columns], final_epoch, trend.code),
        _gap(both_splits, marginal_items(both_splits, "epoch"), th) if both_splits else _gap(t, em, th),
        _memorisation(t, th, int(best["epoch"])),
        *_sensitivities(t, th),
        *(more or []),
    ]
    found = [f for f in findings if f is not None]
    for f in found:
        f.evidence = plain(f.evidence)  # plain numbers, NaN -> None, for JSON and for readers
    retrain = next((f.retrain for f in found if f.retrain is not None), None)
    return Diagnosis(found[0].code, found[0].sentence, found, retrain, plain(rs.summary()))


def diagnose(
    images: pd.DataFrame,
    *,
    final_epoch: int | None = None,
    settings: AnalysisConfig | None = None,
    higher_is_better: bool | None = None,
) -> Diagnosis:
    """Read the epoch trend and secondary signals (rules in the module docstring), with
    `settings` (default `AnalysisConfig()`: its metric, thresholds and bootstrap).

    `final_epoch` is the last epoch the trainer produced; the sweep need not include it.
    """
    t = prepare(images, settings or AnalysisConfig(), higher_is_better)
    return diagnose_table(t, rank_table(t), final_epoch)
