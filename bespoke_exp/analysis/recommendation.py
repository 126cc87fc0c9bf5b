"""The recommendation: the production pick, how sure we are, and what to do about training.

>>> rec = recommend_from_images(images, final_epoch=10)    # or recommend(sweep)
>>> print(rec.to_markdown()); json.dumps(rec.to_dict())

"Beats the runner-up" is judged with an interval simultaneous over the best against every other
combination (the best was picked by its mean), so it also means "is the best"; when it fails,
`separation` says roughly how many seeds per prompt would tell the two apart. `intervals` says
how items were resampled and what the intervals cannot speak for (e.g. prompts outside a small
prompt set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.analysis import lora_value
from bespoke_exp.analysis.diagnosis import Diagnosis, RetrainSuggestion, diagnose_table
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.next_run import propose_sweeps
from bespoke_exp.analysis.resampling import Resampling, seeds_needed
from bespoke_exp.analysis.statistics import (
    BASE_AXES,
    Comparison,
    combination_of,
    compare_table,
    describe,
    marginal_table,
    plain,
    prepare,
    rank_table,
    seeds_per_prompt,
    table_resampling,
)
from bespoke_exp.analysis.training_curve import training_curve
from bespoke_exp.config.schema import AnalysisConfig

# Diagnoses that cannot say whether to retrain, and what would let them.
UNDECIDED = {
    "partial_sweep": "Not decided yet: sweep the trainer's remaining epochs first (see diagnosis).",
    "still_improving": "Not decided yet: sweep the trainer's remaining epochs first (see diagnosis).",
    "single_epoch": "Not decided: one epoch shows no trend; sweep several epochs to decide.",
}
_COMBINATION_KEYS = ("run_id", "mean", "ci_low", "ci_high", "checkpoint")  # after the axes


@dataclass
class Recommendation:
    """The production pick, how sure we are, and what to do about training."""

    metric: str
    confidence: float
    best: dict[str, Any]
    runner_up: dict[str, Any] | None
    beats_runner_up: Comparison | None
    ranking: list[dict[str, Any]]
    by_epoch: list[dict[str, Any]]
    by_guidance: list[dict[str, Any]]
    diagnosis: Diagnosis
    intervals: dict[str, Any] | None = None  # resampling scheme, degrees of freedom, caveats
    separation: dict[str, Any] | None = None  # can the sweep tell the top two apart; seeds needed
    axes: list[str] = field(default_factory=lambda: list(BASE_AXES))  # a combination's axes, epoch first
    by_axis: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # marginals of further axes
    lora_value: lora_value.LoraValue | None = None  # gain over the base, trigger effect, in-set vs held-out
    ranked_on: str = ""  # which images the ranking leaves out, and why
    ranked_prompts: str = "all"  # heldout: the sweep has in-set prompts too, and ranks the others
    # Sweeps that extend an axis whose best value sits at the edge of what was swept (next_run)
    next_sweeps: list[dict[str, Any]] = field(default_factory=list)
    # The trainer's loss per epoch beside the held-out score, or why it is not there (training_curve)
    training_curve: dict[str, Any] | None = None

    @property
    def extra_axes(self) -> list[str]:
        """The swept axes beyond epoch and guidance (lora_scale, ...), empty for a 2-axis sweep."""
        return [a for a in self.axes if a not in BASE_AXES]

    def at_best_extras(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of `frame` (a column per axis) at the best combination's value of every further
        axis: the epoch x guidance plane the 2-D figures, sheets and sliders show."""
        keep = np.ones(len(frame), dtype=bool)
        for axis in self.extra_axes:
            keep &= np.isclose(frame[axis].to_numpy(float), float(self.best[axis]))
        return frame[keep]

    def plane_note(self) -> str:
        """' at lora_scale 0.8 (the best)' when further axes are fixed for a 2-D view, else ''."""
        if not self.extra_axes:
            return ""
        return " at " + describe(self.best, tuple(self.extra_axes)) + " (the best)"

    @property
    def retrain(self) -> RetrainSuggestion | None:
        return self.diagnosis.retrain

    @property
    def waits_on(self) -> str | None:
        """Why the verdict is not to be acted on yet: a next sweep that has to come first."""
        first = [n["reason"] for n in self.next_sweeps if n.get("comes_first")]
        return first[0] if first else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diagnosis"] = {k: d["diagnosis"][k] for k in ("code", "sentence", "findings")}
        d["retrain"] = asdict(self.retrain) if self.retrain else None
        return plain(d)

    def to_markdown(self, top: int = 10) -> str:
        b, ci = self.best, f"{self.confidence:.0%} CI"
        extra = ", " + describe(b, tuple(self.extra_axes)) if self.extra_axes else ""
        pick = (
            f"epoch {b['epoch']} at guidance {b['guidance']:g}{extra} "
            f"({self.metric} {b['mean']:.2f}, {ci} {b['ci_low']:.2f}–{b['ci_high']:.2f})"
        )
        head = (
            f"Best combination is {pick}, but none is good enough (see diagnosis)."
            if self.diagnosis.code == "poor_overall"
            else f"Use {pick}."
        )
        c, r = self.beats_runner_up, self.runner_up
        if c is not None and r is not None:
            verdict = "beats" if c.significant else "does not beat"
            head += (
                f" It {verdict} the runner-up ({describe(r, tuple(self.axes))}) beyond "
                f"noise: difference {c.diff:+.3f}, {ci} {c.ci_low:.3f} to {c.ci_high:.3f} over "
                f"{c.n_items} paired items"
                + (
                    f", simultaneous over the best against each of the other {c.simultaneous_over}."
                    if c.simultaneous_over > 1
                    else "."
                )
            )
        lines = [f"# Checkpoint recommendation ({self.metric})", "", head]
        if self.ranked_on:
            lines.append(f"(Ranking: {self.ranked_on}.)")
        if self.separation and self.separation["sentence"]:
            lines.append(self.separation["sentence"])
        if b.get("checkpoint"):
            lines.append(f"Checkpoint: `{b['checkpoint']}` (run `{b['run_id']}`)")
        lines += ["", "## Ranking", "", *self._ranking_table(top)]
        if len(self.ranking) > top:
            lines.append(f"\n({len(self.ranking) - top} more combinations in `to_dict()['ranking']`.)")
        lines += self._how_sure()
        if self.lora_value is not None:
            lines += self.lora_value.to_markdown()
        lines += ["", f"## Diagnosis: {self.diagnosis.code}", "", self.diagnosis.sentence, ""]
        for f in self.diagnosis.findings:
            ev = ", ".join(f"{k}={_fmt(v)}" for k, v in f.evidence.items())
            lines += [f"- **{f.code}**: {f.sentence}", f"  - evidence: {ev}"]
        rt = self.retrain
        epochs = f" (epochs={rt.epochs})" if rt and rt.epochs is not None else ""
        if self.waits_on:
            verdict = f"Not decided yet: {self.waits_on} first (see Next sweep)."
        elif rt:
            verdict = f"{rt.action}{epochs}: {rt.reason}."
        elif self.diagnosis.code in UNDECIDED:  # the sweep left out epochs that could change the answer
            verdict = UNDECIDED[self.diagnosis.code]
        else:
            verdict = "No retrain needed."
        lines += ["", "## Retrain", "", verdict]
        if self.training_curve:
            lines += ["", self.training_curve["sentence"]]
        if not self.waits_on and (rt or self.diagnosis.code not in UNDECIDED):
            lines += ["", "The next run's sd-scripts config: `python -m bespoke_exp.retrain`."]
        if self.next_sweeps:
            lines += ["", "## Next sweep", ""]
            lines += [f"- {n['reason']}:\n\n      {n['command']}\n" for n in self.next_sweeps]
        return "\n".join(lines) + "\n"

    def _ranking_table(self, top: int) -> list[str]:
        """The ranking as a markdown table, a column per swept axis."""
        extra, ci = self.extra_axes, f"{self.confidence:.0%} CI"
        head = "".join(f" {a} |" for a in extra)
        lines = [
            f"| rank | epoch | guidance |{head} {self.metric} | {ci} | items | run |",
            "|---:|---:|---:|" + "---:|" * len(extra) + "---:|---|---:|---|",
        ]
        return lines + [
            f"| {x['rank']} | {x['epoch']} | {x['guidance']:g} |"
            + "".join(f" {x[a]:g} |" for a in extra)
            + f" {x['mean']:.3f} | {x['ci_low']:.3f}–{x['ci_high']:.3f} | {x['n_items']} | {x['run_id']} |"
            for x in self.ranking[:top]
        ]

    def _how_sure(self) -> list[str]:
        if not self.intervals:
            return []
        inf = self.intervals
        lines = [
            "",
            "## How sure",
            "",
            f"Intervals resample {inf['resampling']} ({inf['n_prompts']} prompts, {inf['n_items']} items, "
            f"{inf['df']} degrees of freedom, Student-t widened); the ranking's intervals are per "
            "combination, so the best's is optimistic.",
        ]
        return lines + [f"- Caveat: {c}." for c in inf["caveats"]]


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def separation(c: Comparison, rs: Resampling, seeds: int, min_effect: float) -> dict[str, Any]:
    """Can the sweep tell the best from the runner-up, and if not, about how many seeds per prompt
    would, with 80% power, if the observed difference is the true one (or, when it is below
    `min_effect`, to bound the difference below `min_effect`: they are interchangeable)."""
    if c.significant:
        return {"separated": True, "seeds_per_prompt": seeds, "seeds_needed": None, "sentence": ""}
    target = max(abs(c.diff), min_effect)
    # The max-t critical value grows as more seeds make replicates less lumpy; Bonferroni's over the
    # same comparisons bounds it at any size, so plan with that (measured: ~80% power as intended).
    bonferroni = NormalDist().inv_cdf(1.0 - (1.0 - rs.confidence) / (2.0 * c.simultaneous_over))
    need = seeds_needed({"se": c.se or 0.0, "z": max(c.z or 0.0, bonferroni)}, rs, seeds, target)
    goal = (
        f"tell apart a difference of {abs(c.diff):.3f}"
        if abs(c.diff) >= min_effect
        else f"show they differ by less than min_effect {min_effect:g}"
    )
    if need is None:
        how = f"more than 256 seeds per prompt would be needed to {goal}: add prompts, or treat them as tied"
    else:
        how = f"roughly {need} seeds per prompt (now {seeds}) would {goal}"
        if rs.two_level:  # prompt-to-prompt variation does not average out over seeds
            how += " if seed noise dominates; more prompts if prompts disagree"
    sentence = f"The sweep is too small to separate the top two combinations: {how}."
    return {
        "separated": False,
        "seeds_per_prompt": seeds,
        "seeds_needed": need,
        "target": target,
        "sentence": sentence,
    }


def recommend_from_images(
    images: pd.DataFrame,
    *,
    final_epoch: int | None = None,
    settings: AnalysisConfig | None = None,
    higher_is_better: bool | None = None,
) -> Recommendation:
    """Rank every combination of the swept axes (epoch, guidance, and lora_scale or any further
    axis the images vary: `statistics.sweep_axes`), test the best against the runner-up (paying
    for having picked both), and diagnose the epoch trend over the other axes. `settings`
    default to `AnalysisConfig()`."""
    settings = settings or AnalysisConfig()
    ranked, ranked_on = lora_value.ranked_rows(images)
    t = prepare(ranked, settings, higher_is_better)
    value = lora_value.measure(images, settings, t.sign > 0)
    candidates = lora_value.candidates(images)
    both_splits = (  # the ranking kept the held-out prompts only: the gap is read over both
        prepare(candidates, settings, higher_is_better, axes=t.axes)
        if len(ranked) < len(candidates)
        else None
    )
    rs = table_resampling(t)
    ranking = rank_table(t)
    if "checkpoint" not in ranking.columns:
        ranking["checkpoint"] = None
    keys = [*t.axes, *_COMBINATION_KEYS]
    records = plain(ranking[[*keys, "n_items", "rank"]].to_dict("records"))
    best = {k: records[0][k] for k in keys}
    runner_up = beats = split = None
    if len(records) > 1:
        runner_up = {k: records[1][k] for k in keys}
        pair = combination_of(best, t.axes), combination_of(runner_up, t.axes)
        beats = compare_table(t, *pair, selected=True)
        split = plain(separation(beats, rs, seeds_per_prompt(t), settings.thresholds.min_effect))
    by_axis = {a: plain(marginal_table(t, a).to_dict("records")) for a in t.extra_axes}
    return Recommendation(
        settings.metric,
        settings.confidence,
        best,
        runner_up,
        beats,
        records,
        plain(marginal_table(t, "epoch").to_dict("records")),
        plain(marginal_table(t, "guidance").to_dict("records")),
        diagnose_table(t, ranking, final_epoch, both_splits, value.findings if value else None),
        plain(rs.summary()),
        split,
        list(t.axes),
        by_axis,
        value,
        ranked_on,
        "heldout" if both_splits is not None else "all",
    )


def recommend(sweep: Sweep, settings: AnalysisConfig | None = None) -> Recommendation:
    """Rank the sweep's combinations (every swept axis) with bootstrap CIs and diagnose, with
    `settings`, by default the ones the sweep ran with (`Sweep.analysis_settings`); propose the
    sweeps that extend an axis past its edge."""
    rec = recommend_from_images(
        sweep.images, final_epoch=sweep.final_epoch, settings=settings or sweep.analysis_settings
    )
    swept = {"epoch": sweep.epochs, "guidance": sweep.guidances, **sweep.levels}
    proposals = propose_sweeps(rec.best, swept, sweep.overrides, sweep.final_epoch, sweep.guidance_range)
    rec.next_sweeps = [asdict(p) for p in proposals]
    if sweep.train_logs:
        training, _ = sweep.training_record
        heldout = rec.ranked_prompts == "heldout" or set(sweep.images.get("split", [])) == {"heldout"}
        rec.training_curve = plain(
            training_curve(sweep.train_logs, rec.metric, rec.by_epoch, training, heldout)
        )
    return rec
