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
    epoch = _epoch_standing(t, margin)
    if not (epoch.settled or epoch.equivalent):
        return epoch
    chosen = int(epoch.best["epoch"])
    at_epoch = [c for c in t.wide.columns if c[0] == chosen]
    others = tuple(a for a in t.axes if a != "epoch")
    means, lows, highs = _versus_best(t, t.wide[at_epoch])
    best = at_epoch[int(np.argmax(means))]
    named = lambda c: dict(zip(t.axes, c))  # noqa: E731
    contenders = [
        {**named(c), "diff": d, "ci_low": lo, "ci_high": hi, "equivalent": -margin < lo and hi < margin}
        for c, d, lo, hi in zip(at_epoch, *_diffs(means, lows, highs, at_epoch.index(best)))
        if c != best and not beats(1.0, d, lo, hi)
    ]
    note = epoch.sentence()
    return Standing(
        "combination",
        others,
        {**named(best), "mean": float(t.sign * means[at_epoch.index(best)])},
        contenders,
        margin,
        [named(best), *({a: c[a] for a in t.axes} for c in contenders)],
        note,
        not epoch.settled,
    )


def _epoch_standing(t: Table, margin: float) -> Standing:
    em = marginal_items(t, "epoch")
    epochs = [int(e) for e in em.columns]
    means, lows, highs = _versus_best(t, em)
    i = int(np.argmax(means))
    contenders = [
        {"epoch": e, "diff": d, "ci_low": lo, "ci_high": hi, "equivalent": -margin < lo and hi < margin}
        for e, d, lo, hi in zip(epochs, *_diffs(means, lows, highs, i))
        if e != epochs[i] and not beats(1.0, d, lo, hi)
    ]
    kept = {epochs[i], *(c["epoch"] for c in contenders)}
    rerun = [dict(zip(t.axes, c)) for c in t.wide.columns if c[0] in kept]
    best = {"epoch": epochs[i], "mean": float(t.sign * means[i])}
    return Standing("epoch", ("epoch",), best, contenders, margin, rerun)


def _versus_best(t: Table, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means ("goodness": sign * value, so higher is better) of `items`' columns, and the
    interval of best - each, simultaneous over the best against every other column."""
    x = t.sign * items.to_numpy(float)
    means = np.nanmean(x, axis=0)
    i = int(np.argmax(means))  # ties: the first column, the earlier epoch or lower guidance
    family = (i, np.delete(np.arange(x.shape[1]), i))
    lows, highs = np.zeros(len(means)), np.zeros(len(means))
    rs = table_resampling(t)
    for j in family[1]:
        c = contrast(x, i, int(j), f"columns {items.columns[i]} and {items.columns[j]}", rs, family)
        lows[j], highs[j] = c["ci_low"], c["ci_high"]
    return means, lows, highs


def _diffs(means: np.ndarray, lows: np.ndarray, highs: np.ndarray, best: int):
    """Per column: best - column (goodness), and its interval."""
    return [float(means[best] - m) for m in means], lows.tolist(), highs.tolist()
