"""What the LoRA buys: every epoch against the base model (epoch 0, no LoRA) at the same prompts
and seeds, its trigger words on against off (both on held-out prompts when the sweep has
in-set ones too, as the ranking), and prompts its captions hold (in-set, split "train")
against prompts they don't (held-out).

The images table is the sweep's (`statistics` module docstring), with epoch 0 rows for the
baseline, a `trigger` column (1 on, 0 off) when the sweep varied it, and `split`. Gains and
trigger effects are paired over (prompt, seed) items and averaged over the other axes
(guidance, ...), with intervals from `resampling.contrast`; a claim picked from several epochs
("some epoch beats the base", "the trigger matters at some epoch") holds over all of them at
once. In-set and held-out prompts are different prompts, so their gap is not paired: its
interval comes from the seed noise within each prompt, and speaks for these prompts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from bespoke_exp.analysis.diagnosis import Finding
from bespoke_exp.analysis.resampling import beats, contrast, resampling, summarise
from bespoke_exp.analysis.statistics import plain, prepare, sweep_axes
from bespoke_exp.config.params import BASE_EPOCH  # re-exported: the analysis says "the base" once
from bespoke_exp.config.schema import AnalysisConfig
from bespoke_exp.scoring.registry import FAMILY_SCORES

TRIGGER = "trigger"
IN_SET, HELD_OUT = "train", "heldout"


@dataclass
class LoraValue:
    """Per epoch: the gain over the base per metric family, the trigger effect, in-set and
    held-out scores and their gap; and what they add up to."""

    baseline: list[dict[str, Any]]  # epoch, family, gain, ci_low, ci_high, significant
    trigger: list[dict[str, Any]]  # epoch, effect (on - off), ci_low, ci_high, significant
    splits: list[dict[str, Any]]  # epoch, in_set, in_set_ci_*, held_out, held_out_ci_*, gap, gap_ci_*
    findings: list[Finding]  # no_gain_over_base / gain_over_base, trigger_ignored / trigger_matters

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))

    def to_markdown(self) -> list[str]:
        lines = ["", "## What the LoRA buys", ""]
        lines += [f"- **{f.code}**: {f.sentence}" for f in self.findings]
        if self.baseline:
            families = list(dict.fromkeys(r["family"] for r in self.baseline))
            lines += ["", "Gain over the base model (epoch 0), per epoch:", ""]
            lines += ["| epoch |" + "".join(f" {f} |" for f in families), "|---:|" + "---:|" * len(families)]
            for epoch in sorted({r["epoch"] for r in self.baseline}):
                row = {r["family"]: r for r in self.baseline if r["epoch"] == epoch}
                lines.append(f"| {epoch} |" + "".join(f" {_interval(row[f], 'gain')} |" for f in families))
        if self.trigger:
            lines += ["", "Trigger words on minus off, per epoch:", "", "| epoch | effect |", "|---:|---:|"]
            lines += [f"| {r['epoch']} | {_interval(r, 'effect')} |" for r in self.trigger]
        if self.splits:
            lines += [
                "",
                "In-set (training captions) and held-out prompts, per epoch:",
                "",
                "| epoch | in-set | held-out | gap |",
                "|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {r['epoch']} | {r['in_set']:.3f} | {r['held_out']:.3f} | {_interval(r, 'gap')} |"
                for r in self.splits
            ]
        return lines


def _interval(row: dict[str, Any], key: str) -> str:
    star = "*" if row.get("significant") else ""
    lo, hi = row.get(f"{key}_ci_low", row.get("ci_low")), row.get(f"{key}_ci_high", row.get("ci_high"))
    bounds = f" ({lo:+.3f} to {hi:+.3f})" if lo is not None and hi is not None else " (no interval)"
    return f"{row[key]:+.3f}{bounds}{star}"


# --------------------------------------------------------------------------- which rows are ranked
def shown(images: pd.DataFrame) -> pd.DataFrame:
    """The images the sheets and sliders show: trigger on, every epoch (the base's too, as the
    row to compare against); trigger-off twins would share their pictures' places."""
    return images[images[TRIGGER].astype(float) == 1.0] if TRIGGER in images.columns else images


def candidates(images: pd.DataFrame) -> pd.DataFrame:
    """The images of what could go to production: the LoRA's epochs (not the base) with the
    trigger on."""
    keep = images["epoch"].astype(int) != BASE_EPOCH
    if TRIGGER in images.columns:
        keep &= images[TRIGGER].astype(float) == 1.0
    if not keep.any():
        raise ValueError("the sweep has no LoRA epoch with its trigger on to rank: sweep epoch=1,2,...")
    return images[keep]


def ranked_rows(images: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The candidates' images the production pick is ranked on, and a note saying what was left
    out: held-out prompts only when the sweep has both kinds (a training caption rewards
    memorising it, which is not what a new prompt needs)."""
    rows, notes = candidates(images), []
    if (images["epoch"].astype(int) == BASE_EPOCH).any():
        notes.append("the base model (epoch 0) is the baseline, not a candidate")
    if len(rows) < len(images) and TRIGGER in images.columns and images[TRIGGER].nunique() > 1:
        notes.append("trigger-off images measure the trigger and are not ranked")
    split = _splits(rows)
    if {IN_SET, HELD_OUT} <= set(split.unique()):
        rows = rows[split == HELD_OUT]
        notes.append(
            f"ranked on the {rows['prompt_id'].nunique()} held-out prompts; in-set ones are reported beside"
        )
    return rows, "; ".join(notes)


def _splits(images: pd.DataFrame) -> pd.Series:
    if "split" not in images.columns:
        return pd.Series("", index=images.index)
    return images["split"].fillna("").astype(str).str.strip().str.lower()


# --------------------------------------------------------------------------- the measures
def measure(
    images: pd.DataFrame, settings: AnalysisConfig, higher_is_better: bool = True
) -> LoraValue | None:
    """What the LoRA buys, from a sweep's images table (None when the sweep measured none of it:
    no epoch 0, no trigger axis, no in-set and held-out prompts)."""
    has_base = (images["epoch"].astype(int) == BASE_EPOCH).any() and images["epoch"].nunique() > 1
    has_trigger = TRIGGER in images.columns and images[TRIGGER].nunique() > 1
    has_splits = {IN_SET, HELD_OUT} <= set(_splits(images).unique())
    if not (has_base or has_trigger or has_splits):
        return None
    # Against the base and for the trigger, the prompts the ranking uses: new prompts are what
    # production draws, and a training caption favours any epoch that memorised it.
    new = images[_splits(images) == HELD_OUT] if has_splits else images
    baseline = _baseline_gains(shown(new), settings) if has_base else []
    trigger = _trigger_effects(new, settings) if has_trigger else []
    drawn = shown(images)
    lora = drawn[drawn["epoch"].astype(int) != BASE_EPOCH]
    splits = _split_scores(lora, settings, higher_is_better) if has_splits else []
    findings = [*_baseline_findings(baseline, settings), *_trigger_findings(trigger, settings)]
    return LoraValue(baseline, trigger, splits, findings)


def _epoch_items(images: pd.DataFrame, metric: str, settings: AnalysisConfig) -> pd.DataFrame:
    """Items x epochs of `metric`, each item's mean over the other axes (guidance, ...)."""
    axes = tuple(a for a in sweep_axes(images) if a != TRIGGER)
    t = prepare(images, replace(settings, metric=metric), axes=axes)
    return t.wide.T.groupby(level="epoch").mean().T


def _baseline_gains(images: pd.DataFrame, settings: AnalysisConfig) -> list[dict[str, Any]]:
    """Each epoch minus the base, per metric family, simultaneous over the epochs (the best one
    is what a reader will look at)."""
    rows = []
    for family in [f for f in FAMILY_SCORES if f in images.columns and images[f].notna().any()]:
        em = _epoch_items(images, family, settings)
        epochs = [int(e) for e in em.columns]
        if BASE_EPOCH not in epochs:
            continue
        x, base = em.to_numpy(float), epochs.index(BASE_EPOCH)
        others = np.array([i for i in range(len(epochs)) if i != base])
        rs = resampling(em.index.get_level_values("prompt_id").to_numpy(), settings)
        for i in others:
            c = contrast(x, base, int(i), "the base and an epoch", rs, (base, others))
            gain, lo, hi = -c["diff"], -c["ci_high"], -c["ci_low"]
            rows.append(
                {
                    "epoch": epochs[i],
                    "family": FAMILY_SCORES[family],
                    "metric": family,
                    "gain": gain,
                    "ci_low": lo,
                    "ci_high": hi,
                    "significant": beats(1.0, gain, lo, hi, settings.thresholds.min_effect),
                    "simultaneous_over": len(others),
                }
            )
    return rows


def _trigger_effects(images: pd.DataFrame, settings: AnalysisConfig) -> list[dict[str, Any]]:
    """Per epoch (the base included): trigger on minus off on the ranked metric, paired over
    items, simultaneous over the epochs."""
    metric, epochs = settings.metric, sorted(int(e) for e in images["epoch"].unique())
    on = _epoch_items(images[images[TRIGGER].astype(float) == 1.0], metric, settings)
    off = _epoch_items(images[images[TRIGGER].astype(float) == 0.0], metric, settings)
    on, off = on.align(off, join="inner", axis=0)
    x = np.column_stack([np.column_stack([on[e], off[e]]) for e in epochs if e in on and e in off])
    family = replace(settings, confidence=1.0 - (1.0 - settings.confidence) / max(len(epochs), 1))
    rs = resampling(on.index.get_level_values("prompt_id").to_numpy(), family)
    rows = []
    for k, epoch in enumerate(e for e in epochs if e in on and e in off):
        c = contrast(x, 2 * k, 2 * k + 1, "trigger on and off", rs)
        rows.append(
            {
                "epoch": epoch,
                "effect": c["diff"],
                "ci_low": c["ci_low"],
                "ci_high": c["ci_high"],
                "significant": not (c["ci_low"] <= 0.0 <= c["ci_high"])
                and abs(c["diff"]) >= settings.thresholds.min_effect,
                "simultaneous_over": len(epochs),
            }
        )
    return rows


def _split_scores(
    images: pd.DataFrame, settings: AnalysisConfig, higher_is_better: bool
) -> list[dict[str, Any]]:
    """Per epoch: in-set and held-out means (pointwise intervals) and the gap in-set - held-out."""
    em = _epoch_items(images, settings.metric, settings)
    split = _splits(images).groupby(images["prompt_id"]).first()
    kind = em.index.get_level_values("prompt_id").map(split).to_numpy()
    rows = []
    for epoch in em.columns:
        row: dict[str, Any] = {"epoch": int(epoch)}
        parts = {}
        for key, which in (("in_set", IN_SET), ("held_out", HELD_OUT)):
            values = em.loc[kind == which, epoch]
            prompts = values.index.get_level_values("prompt_id").to_numpy()
            mean, lo, hi, _ = summarise(values.to_numpy(float)[:, None], resampling(prompts, settings))
            row.update({key: mean[0], f"{key}_ci_low": lo[0], f"{key}_ci_high": hi[0]})
            parts[key] = (values.to_numpy(float), prompts)
        gap, se, df = _unpaired_gap(parts["in_set"], parts["held_out"])
        half = float(student_t.ppf(0.5 + settings.confidence / 2.0, df)) * se if df else math.inf
        sign = 1.0 if higher_is_better else -1.0
        row.update({"gap": gap, "gap_ci_low": gap - half, "gap_ci_high": gap + half})
        row["significant"] = beats(sign, gap, gap - half, gap + half, settings.thresholds.min_effect)
        rows.append(row)
    return rows


def _unpaired_gap(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, int]:
    """mean(a) - mean(b) over two sets of prompts, its SE from each prompt's seed variance (the
    prompts are what they are: the interval speaks for them), and its degrees of freedom."""
    variance, df = 0.0, 0
    for values, prompts in (a, b):
        n = len(values)
        for p in np.unique(prompts):
            own = values[prompts == p]
            if len(own) >= 2:
                variance += len(own) * float(np.var(own, ddof=1)) / n**2
                df += len(own) - 1
    return float(np.mean(a[0]) - np.mean(b[0])), math.sqrt(variance), df


# --------------------------------------------------------------------------- what they add up to
def _stated(row: dict[str, Any], key: str, settings: AnalysisConfig) -> tuple[str, dict[str, Any]]:
    """The row's interval in words, and its epoch, value and interval as a finding's evidence."""
    ci = f"{settings.confidence:.0%} CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}"
    return ci, {"epoch": row["epoch"], key: row[key], "ci_low": row["ci_low"], "ci_high": row["ci_high"]}


def _baseline_findings(rows: list[dict[str, Any]], settings: AnalysisConfig) -> list[Finding]:
    if not rows:
        return []
    composite = [r for r in rows if r["metric"] == "score"] or rows
    best = max(composite, key=lambda r: r["gain"])
    parts = [r for r in rows if r["metric"] != "score"]
    better = sorted({r["family"] for r in parts if r["significant"] and r["gain"] > 0})
    worse = sorted({r["family"] for r in parts if r["family"] not in better})
    ci, evidence = _stated(best, "gain", settings)
    evidence |= {"improves": better, "does_not_improve": worse}
    buys = f"; it improves {', '.join(better)}" if better else ""
    not_buys = f"; not {', '.join(worse)}" if worse and better else ""
    if any(r["significant"] for r in composite):
        return [
            Finding(
                "gain_over_base",
                f"Epoch {best['epoch']} beats the base model by {best['gain']:+.3f} {best['metric']} ({ci}, "
                f"simultaneous over {best['simultaneous_over']} epochs){buys}{not_buys}.",
                evidence,
            )
        ]
    return [
        Finding(
            "no_gain_over_base",
            f"No epoch beats the base model beyond noise on {best['metric']}: the best, "
            f"epoch {best['epoch']}, gains {best['gain']:+.3f} ({ci})"
            f"{buys or '; no metric family improves'}{not_buys}.",
            evidence,
        )
    ]


def _trigger_findings(rows: list[dict[str, Any]], settings: AnalysisConfig) -> list[Finding]:
    lora = [r for r in rows if r["epoch"] != BASE_EPOCH]
    if not lora:
        return []
    strongest = max([r for r in lora if r["significant"]] or lora, key=lambda r: abs(r["effect"]))
    ci, evidence = _stated(strongest, "effect", settings)
    evidence["epochs_that_respond"] = [r["epoch"] for r in lora if r["significant"]]
    if not any(r["significant"] for r in lora):
        return [
            Finding(
                "trigger_ignored",
                "The trigger words change nothing beyond noise at any epoch (largest effect "
                f"{strongest['effect']:+.3f} at epoch {strongest['epoch']}, {ci}): the LoRA acts "
                "without them, or not at all.",
                evidence,
            )
        ]
    return [
        Finding(
            "trigger_matters",
            f"The trigger words move {settings.metric} by up to {strongest['effect']:+.3f} (epoch "
            f"{strongest['epoch']}, {ci}); they respond at epochs {evidence['epochs_that_respond']}.",
            evidence,
        )
    ]
