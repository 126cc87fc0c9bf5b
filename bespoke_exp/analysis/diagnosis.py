"""Diagnosis: read the epoch trend and secondary signals, and say whether to retrain.

"A beats B" means the paired bootstrap CI of A-B excludes 0 in the good direction and the
difference is at least `Thresholds.min_effect`. Rules, on the epoch marginal (mean over
guidance) and the ranking of (epoch, guidance) combinations:
  poor_overall        best combination worse than `poor` -> retrain check_data (captions, resolution, LR)
  overfitting         peak epoch < last swept epoch and peak beats last -> retrain fewer_epochs=peak
  undertrained        last swept epoch is the peak and the trainer's final (or final unknown), and it
                      beats the epoch `lookback` earlier -> retrain more_epochs (or raise the LR)
  still_improving     as undertrained, but the trainer produced later epochs -> sweep them first
  sweet_spot          peak before the last epoch, decline within noise -> no retrain
  final_best          last epoch is the peak and has plateaued -> no retrain
  single_epoch        one epoch swept: no trend to read
  generalisation_gap  per-epoch mean(train) - mean(heldout) has LSQ slope > gap_slope and last gap > gap_late
  memorisation        near-copy rate > near_copy_rate at some epoch (named), slope reported
  guidance_sensitive  guidance-marginal spread > guidance_spread (best guidance named), else _insensitive
Primary code: poor_overall, else the epoch-trend rule. Findings list every rule that fired,
primary first. Retrain comes from the primary finding, else the first finding that has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.analysis.statistics import (
    NEAR_COPY,
    Table,
    beats,
    marginal_items,
    paired,
    plain,
    prepare,
    rank_table,
)


@dataclass(frozen=True)
class Thresholds:
    """Every numeric cut-off the diagnosis uses, in units of the ranked metric (0..1 score)."""

    poor: float = 0.5  # best combination below this: the LoRA is not working at any epoch or guidance
    min_effect: float = 0.01  # smallest paired difference worth acting on, even when significant
    lookback: int = 2  # "still improving" compares the last epoch with the one this many earlier
    gap_slope: float = 0.005  # train-minus-heldout gap growing faster than this per epoch ...
    gap_late: float = 0.05  # ... and at least this large at the last epoch
    near_copy_rate: float = 0.2  # share of an epoch's images that near-copy a training image
    guidance_spread: float = 0.05  # best-minus-worst guidance marginal above this: guidance matters


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


def _trend(t: Table, em: pd.DataFrame, final_epoch: int | None, th: Thresholds, boot: tuple) -> Finding:
    m, means, epochs = t.metric, em.mean(), [int(e) for e in em.columns]
    last, peak = epochs[-1], int((t.sign * means).idxmax())  # idxmax: earliest epoch on ties
    if len(epochs) == 1:
        return Finding(
            "single_epoch",
            f"Only epoch {last} was swept, so there is no epoch trend to read.",
            {"metric": m, "epochs": epochs},
        )
    if peak < last:
        d, lo, hi, n = paired(em[peak].to_numpy(), em[last].to_numpy(), "epochs", *boot)
        ev = {
            "metric": m,
            "peak_epoch": peak,
            "peak_score": means[peak],
            "last_epoch": last,
            "last_score": means[last],
            "drop": d,
            "ci_low": lo,
            "ci_high": hi,
            "n_items": n,
        }
        where = (
            f"Mean {m} peaks at epoch {peak} ({means[peak]:.2f}) and epoch {last} scores "
            f"{means[last]:.2f} (drop {abs(d):.3f}, {boot[1]:.0%} CI {lo:.3f} to {hi:.3f})"
        )
        if beats(t.sign, d, lo, hi, th.min_effect):
            reason = f"epochs after {peak} lose {abs(d):.2f} {m} ({means[last]:.2f} at epoch {last})"
            return Finding(
                "overfitting",
                f"{where}: later epochs overfit.",
                ev,
                RetrainSuggestion("fewer_epochs", reason, peak),
            )
        return Finding("sweet_spot", f"{where}, a decline within noise: no retrain needed.", ev)
    ref = max((e for e in epochs if e <= last - th.lookback), default=epochs[0])
    d, lo, hi, n = paired(em[last].to_numpy(), em[ref].to_numpy(), "epochs", *boot)
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
    }
    gain = (
        f"{means[last]:.2f} vs {means[ref]:.2f} at epoch {ref}, gain {d:+.3f}, "
        f"{boot[1]:.0%} CI {lo:.3f} to {hi:.3f}"
    )
    if not beats(t.sign, d, lo, hi, th.min_effect):
        return Finding(
            "final_best",
            f"The last epoch {last} scores best and has plateaued ({gain}): no retrain needed.",
            ev,
        )
    if final_epoch is None or last == final_epoch:
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


def _guidance(t: Table, th: Thresholds) -> Finding | None:
    means = marginal_items(t, "guidance").mean()
    if len(means) < 2:
        return None
    best, spread = float((t.sign * means).idxmax()), float(means.max() - means.min())
    ev = {
        "metric": t.metric,
        "guidance": [float(g) for g in means.index],
        "score": list(means),
        "spread": spread,
        "best_guidance": best,
    }
    if spread > th.guidance_spread:
        return Finding(
            "guidance_sensitive",
            f"Guidance matters: {best:g} scores best ({means[best]:.2f}) "
            f"and the guidance means span {spread:.2f} (> {th.guidance_spread:.2f}).",
            ev,
        )
    return Finding(
        "guidance_insensitive",
        f"Guidance barely matters: the guidance means span {spread:.2f} "
        f"(<= {th.guidance_spread:.2f}); {best:g} is marginally best.",
        ev,
    )


def diagnose_table(
    t: Table, ranking: pd.DataFrame, final_epoch: int | None, th: Thresholds, boot: tuple
) -> Diagnosis:
    last = int(t.wide.columns.get_level_values("epoch").max())
    if final_epoch is not None and final_epoch < last:
        raise ValueError(f"final_epoch={final_epoch} but the sweep includes epoch {last}")
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
            f"Even the best combination (epoch {best['epoch']}, guidance {best['guidance']:g}) scores only "
            f"{best['mean']:.2f} ({boot[1]:.0%} CI {best['ci_low']:.2f} to {best['ci_high']:.2f}), "
            f"worse than {th.poor:.2f}."
        )
        reason = (
            f"no combination reaches {t.metric} {th.poor:.2f}; check the training captions, training "
            "resolution and learning rate"
        )
        findings.append(Finding("poor_overall", sentence, ev, RetrainSuggestion("check_data", reason)))
    findings += [
        _trend(t, em, final_epoch, th, boot),
        _gap(t, em, th),
        _memorisation(t, th, int(best["epoch"])),
        _guidance(t, th),
    ]
    found = [f for f in findings if f is not None]
    for f in found:
        f.evidence = plain(f.evidence)  # plain numbers, NaN -> None, for JSON and for readers
    retrain = next((f.retrain for f in found if f.retrain is not None), None)
    return Diagnosis(found[0].code, found[0].sentence, found, retrain)


def diagnose(
    images: pd.DataFrame,
    *,
    final_epoch: int | None = None,
    metric: str = "score",
    thresholds: Thresholds = Thresholds(),
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> Diagnosis:
    """Read the epoch trend and secondary signals (rules in the module docstring).

    `final_epoch` is the last epoch the trainer produced; the sweep need not include it.
    """
    t = prepare(images, metric, higher_is_better)
    boot = (n_boot, confidence, seed)
    return diagnose_table(t, rank_table(t, *boot), final_epoch, thresholds, boot)
