"""Is the choice settled? The user picks the epoch first and then the guidance (and any further
axis) at that epoch, so the choice is judged in that order.

The epoch: each epoch's score averaged over the other axes (paired over prompt x seed), the best
against every other epoch, the intervals simultaneous over those comparisons (the best was
picked by its mean). An epoch contends when the best does not beat it beyond noise. Then, at
the chosen epoch, the same for its combinations of the other axes. A decision is settled when
nothing contends, and a practical tie when every contender's interval for (best - contender)
lies within +-margin: more seeds could only show a difference smaller than what the user said
matters. `combinations()` is what a confirmation round reruns with new seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.analysis import lora_value
from bespoke_exp.analysis.resampling import beats, contrast
from bespoke_exp.analysis.statistics import (
    Table,
    describe,
    marginal_items,
    prepare,
    table_resampling,
)
from bespoke_exp.config.schema import AnalysisConfig


@dataclass
class Standing:
    decision: str  # "epoch", or "combination" (the other axes at the chosen epoch)
    axes: tuple[str, ...]  # what the best and the contenders are named by
    best: dict[str, Any]  # axis -> value, and its mean
    contenders: list[dict[str, Any]] = field(default_factory=list)  # axis values, diff, ci_low, ci_high
    margin: float = 0.0
    rerun: list[dict[str, Any]] = field(default_factory=list)  # every sweep axis -> value
    epoch_note: str = ""  # how the epoch was decided, once the decision is the combination
    epoch_tied: bool = False  # the epoch was chosen from a practical tie, not settled

    @property
    def settled(self) -> bool:
        return not self.contenders

    @property
    def equivalent(self) -> bool:
        """Every contender is within +-margin of the best (vacuously true when settled)."""
        return all(c["equivalent"] for c in self.contenders)

    @property
    def resolved(self) -> bool:
        return self.decision == "combination" and (self.settled or self.equivalent)

    def combinations(self) -> list[dict[str, Any]]:
        """The combinations (every sweep axis -> value) a confirmation round runs again."""
        return list(self.rerun)

    def sentence(self) -> str:
        what = "the epoch" if self.decision == "epoch" else "the combination at that epoch"
        best = describe(self.best, self.axes)
        if self.settled:
            text = f"{what.capitalize()} is settled: {best} beats every other beyond noise."
        else:
            named = "; ".join(
                f"{describe(c, self.axes)} ({c['diff']:+.3f}, CI {c['ci_low']:.3f} to {c['ci_high']:.3f})"
                for c in self.contenders[:4]
            ) + (f"; and {len(self.contenders) - 4} more" if len(self.contenders) > 4 else "")
            if self.equivalent:
                text = (
                    f"{what.capitalize()} is a practical tie: {best} and {named} differ by less than the "
                    f"margin {self.margin:g}; the earliest epoch trains least."
                )
            else:
                text = f"{what.capitalize()} is not settled: {best} does not beat {named}."
        return f"{self.epoch_note} {text}".strip()


def standing(images: pd.DataFrame, settings: AnalysisConfig, margin: float) -> Standing:
    """Where the choice stands on the sweep's ranked images (`lora_value.ranked_rows`): the epoch
    while it is open, else the combination at the chosen epoch."""
    ranked, _ = lora_value.ranked_rows(images)
    t = prepare(ranked, settings)
    em = marginal_items(t, "epoch")
    i, mean, contenders = _versus_best(t, em, [{"epoch": int(e)} for e in em.columns], margin)
    best_epoch = int(em.columns[i])
    kept = {best_epoch, *(c["epoch"] for c in contenders)}
    rerun = [dict(zip(t.axes, c)) for c in t.wide.columns if c[0] in kept]
    epoch = Standing("epoch", ("epoch",), {"epoch": best_epoch, "mean": mean}, contenders, margin, rerun)
    if not (epoch.settled or epoch.equivalent):
        return epoch
    at_epoch = [c for c in t.wide.columns if c[0] == best_epoch]
    named = [dict(zip(t.axes, c)) for c in at_epoch]
    i, mean, contenders = _versus_best(t, t.wide[at_epoch], named, margin)
    return Standing(
        "combination",
        tuple(a for a in t.axes if a != "epoch"),
        {**named[i], "mean": mean},
        contenders,
        margin,
        [named[i], *({a: c[a] for a in t.axes} for c in contenders)],
        epoch.sentence(),
        not epoch.settled,
    )


def _versus_best(
    t: Table, items: pd.DataFrame, names: list[dict[str, Any]], margin: float
) -> tuple[int, float, list[dict[str, Any]]]:
    """The best of `items`' columns (ties: the first, the earlier epoch or lower guidance), its
    mean in the metric's own direction, and every column it does not beat beyond noise, named by
    `names`, with best - column paired over their shared items and its interval, simultaneous
    over the best against every other column."""
    x = t.sign * items.to_numpy(float)  # "goodness": higher is better whatever the metric
    i = int(np.argmax(np.nanmean(x, axis=0)))
    family = (i, np.delete(np.arange(x.shape[1]), i))
    rs = table_resampling(t)
    contenders = []
    for j in family[1]:
        c = contrast(x, i, int(j), f"columns {items.columns[i]} and {items.columns[j]}", rs, family)
        if not beats(1.0, c["diff"], c["ci_low"], c["ci_high"]):
            within = -margin < c["ci_low"] and c["ci_high"] < margin
            contenders.append(
                {
                    **names[j],
                    "diff": c["diff"],
                    "ci_low": c["ci_low"],
                    "ci_high": c["ci_high"],
                    "equivalent": within,
                }
            )
    return i, float(t.sign * np.nanmean(x[:, i])), contenders
