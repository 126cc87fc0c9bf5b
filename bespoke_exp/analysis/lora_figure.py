"""One figure for what the LoRA buys: the gain over the base model by epoch, a line per metric
family, and in-set against held-out prompts by epoch (and the trigger effect when swept), each
with its interval as a band. Built on `matplotlib.figure.Figure`, never pyplot (as `figures`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bespoke_exp.analysis.figures import LINE_COLOURS, MARKERS
from bespoke_exp.analysis.lora_value import LoraValue


def lora_value_figure(value: LoraValue, metric: str, title: str = "") -> Figure:
    """Left: gain over the base per family (0 = the base); middle, when the trigger was swept:
    trigger on minus off; right, when the prompts have both kinds: in-set and held-out."""
    panels = [p for p in ("baseline", "trigger", "splits") if getattr(value, p)]
    if not panels:
        raise ValueError("nothing to draw: the sweep has no epoch 0, no trigger axis and no in-set prompts")
    fig = Figure(figsize=(5.2 * len(panels) + 1.0, 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        rows = pd.DataFrame(getattr(value, panel))
        if panel == "baseline":
            for k, (family, part) in enumerate(rows.groupby("family", sort=False)):
                _band_line(ax, part, "gain", "ci_low", "ci_high", k, f"{family}")
            _finish(ax, rows["epoch"], "gain over the base model", "Gain over the base (epoch 0)", zero=True)
        elif panel == "trigger":
            _band_line(ax, rows, "effect", "ci_low", "ci_high", 0, "trigger on - off")
            _finish(ax, rows["epoch"], f"{metric}: on - off", "Trigger words: on minus off", zero=True)
        else:
            _band_line(ax, rows, "in_set", "in_set_ci_low", "in_set_ci_high", 0, "in-set (training captions)")
            _band_line(ax, rows, "held_out", "held_out_ci_low", "held_out_ci_high", 1, "held-out prompts")
            _finish(ax, rows["epoch"], metric, "In-set vs held-out prompts")
    if title:
        fig.suptitle(title, fontsize=12, x=0.0, ha="left")
    return fig


def _band_line(ax, rows: pd.DataFrame, y: str, lo: str, hi: str, k: int, label: str) -> None:
    colour = LINE_COLOURS[k % len(LINE_COLOURS)]
    rows = rows.sort_values("epoch")
    ax.plot(rows["epoch"], rows[y], color=colour, marker=MARKERS[k % len(MARKERS)], label=label, zorder=3)
    finite = rows[[lo, hi]].notna().all(axis=1)
    ax.fill_between(
        rows["epoch"][finite], rows[lo][finite], rows[hi][finite], color=colour, alpha=0.15, linewidth=0
    )


def _finish(ax, epochs: Sequence[int], ylabel: str, title: str, zero: bool = False) -> None:
    if zero:
        ax.axhline(0.0, color="#666666", linewidth=1.0, linestyle="--", zorder=2)
    ax.set_xticks(sorted(set(int(e) for e in epochs)))
    ax.set_xlabel("LoRA epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="#999999", alpha=0.3, linewidth=0))
    labels.append("shaded: confidence interval")
    ax.legend(handles, labels, fontsize=8, frameon=False, loc="best")
    ax.set_title(title, fontsize=11, loc="left")
