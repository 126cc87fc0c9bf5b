"""Sweep figures: score by epoch (one line per guidance) and an epoch x guidance heatmap.
Both are 2-D: a sweep of further axes (lora_scale) passes the rows at one value of each
(the report picks the best's) and names it in the title.

    >>> fig = score_by_epoch_figure(combinations, metric_label="grid/purity", best=(6, 7.5))
    >>> save_figure(fig, "outputs/score_by_epoch.png")
    >>> save_figure(score_heatmap_figure(combinations, best=(6, 7.5)), "outputs/heatmap.png")

`combinations` is one row per (epoch, guidance) with columns epoch, guidance, mean (of the ranked metric) and,
optionally, ci_low / ci_high. Figures are built with `matplotlib.figure.Figure` directly,
never pyplot: no global figure registry, no backend switch, safe in worker processes
and threads. Which combination is best is the caller's call (the metric registry knows whether
higher is better); these functions only draw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator

from bespoke_exp.pixelart.sheets import BEST_RGB

# Okabe-Ito: distinguishable under the common colour-vision deficiencies. Vermillion is
# kept for "best", as in the contact sheets; yellow is too faint on white.
LINE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P")  # second cue besides colour, also survives greyscale print
_BEST_COLOUR = "#{:02X}{:02X}{:02X}".format(*BEST_RGB)
_MARGINAL_COLOUR = "#666666"
_HEATMAP_CMAP = "viridis"  # perceptually uniform, colour-blind safe, prints in greyscale
_MISSING_TEXT = "\u2014"  # em dash: DejaVu Sans (matplotlib's default font) has it
_DPI = 150
_REQUIRED = ("epoch", "guidance", "mean")


def _check_combinations(
    combinations: pd.DataFrame, required: Sequence[str] = _REQUIRED, name: str = "combinations"
) -> pd.DataFrame:
    """Validated copy sorted by epoch then guidance; errors name what is wrong."""
    missing = [c for c in required if c not in combinations.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(combinations.columns)}")
    not_numeric = [c for c in required if not pd.api.types.is_numeric_dtype(combinations[c])]
    if not_numeric:  # e.g. MLflow tags arrive as strings: convert them where they are read
        raise ValueError(f"{name} column(s) {not_numeric} must be numeric")
    keys = [c for c in ("epoch", "guidance") if c in required]
    dup = combinations[combinations.duplicated(keys, keep=False)]
    if len(dup):
        repeated = dup[keys].drop_duplicates().values.tolist()
        raise ValueError(f"{name} has more than one row per {tuple(keys)}: {repeated}")
    return combinations.sort_values(keys).reset_index(drop=True)


def _best_mean(combinations: pd.DataFrame, best: tuple[int, float]) -> float:
    row = combinations[
        (combinations["epoch"] == best[0])
        & np.isclose(combinations["guidance"].astype(float), float(best[1]))
    ]
    if row.empty or not np.isfinite(row["mean"].iloc[0]):
        raise ValueError(f"best={best} is not an (epoch, guidance) combination with a mean")
    return float(row["mean"].iloc[0])


def _combination_name(epoch: int, guidance: float) -> str:
    return f"epoch {int(epoch)}, guidance {float(guidance):g}"


def score_by_epoch_figure(
    combinations: pd.DataFrame,
    *,
    metric_label: str = "score",
    best: tuple[int, float] | None = None,
    title: str = "",
    marginal: pd.DataFrame | None = None,
    marginal_label: str = "mean over guidance",
) -> Figure:
    """Score against LoRA epoch, one line per guidance, with confidence bands.

    Args:
        combinations: epoch, guidance, mean[, ci_low, ci_high]; one row per combination. A NaN mean
            (failed job) leaves a gap in its line rather than a made-up point.
        metric_label: y-axis label, e.g. "grid/purity".
        best: (epoch, guidance) to mark with a star and a note.
        title: defaults to a sentence naming the metric.
        marginal: optional epoch, mean[, ci_low, ci_high] averaged over guidance, drawn
            as a thick grey "mean over guidance" line.
        marginal_label: that line's legend entry; a sweep of further axes (lora_scale) averages
            over them too and says so ("mean over guidance and lora_scale").
    """
    combinations = _check_combinations(combinations)
    has_ci = {"ci_low", "ci_high"} <= set(combinations.columns)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()

    all_epochs = np.sort(combinations["epoch"].unique())
    for i, (guidance, group) in enumerate(combinations.groupby("guidance", sort=True)):
        # An epoch with no row (failed job) becomes NaN, a gap, not a line drawn across it.
        group = group.set_index("epoch").reindex(all_epochs).rename_axis("epoch").reset_index()
        colour, marker = LINE_COLOURS[i % len(LINE_COLOURS)], MARKERS[i % len(MARKERS)]
        # Beyond six guidances colours repeat, so change the dash pattern as well.
        style = ("-", "--", ":")[(i // len(LINE_COLOURS)) % 3]
        _line_with_band(
            ax,
            group,
            has_ci,
            band_alpha=0.15,
            color=colour,
            marker=marker,
            linestyle=style,
            linewidth=1.8,
            markersize=6,
            label=f"guidance {float(guidance):g}",
            zorder=3,
        )

    if marginal is not None:
        m = _check_combinations(marginal, ("epoch", "mean"), name="marginal")
        _line_with_band(
            ax,
            m,
            {"ci_low", "ci_high"} <= set(m.columns),
            band_alpha=0.12,
            color=_MARGINAL_COLOUR,
            linewidth=4,
            alpha=0.8,
            label=marginal_label,
            zorder=2,
            solid_capstyle="round",
        )

    if best is not None:
        _mark_best_point(ax, best, _best_mean(combinations, best), metric_label)
    _finish_epoch_axes(ax, all_epochs, metric_label, has_ci, title)
    return fig


def _line_with_band(ax, rows: pd.DataFrame, with_band: bool, band_alpha: float, **line) -> None:
    """The mean by epoch as a line and, when asked, its confidence interval as a band below it."""
    ax.plot(rows["epoch"], rows["mean"], **line)
    if with_band:
        ax.fill_between(
            rows["epoch"],
            rows["ci_low"],
            rows["ci_high"],
            color=line["color"],
            alpha=band_alpha,
            linewidth=0,
            zorder=1,
        )


def _mark_best_point(ax, best: tuple[int, float], value: float, metric_label: str) -> None:
    # The full note goes in the legend, where it can never cover a line; the word
    # "best" beside the star ties the two together.
    ax.plot(
        [best[0]],
        [value],
        marker="*",
        markersize=20,
        color=_BEST_COLOUR,
        markeredgecolor="black",
        markeredgewidth=1.0,
        linestyle="none",
        zorder=5,
        label=f"best: {_combination_name(*best)}\n{metric_label} = {value:.3f}",
    )
    ax.annotate(
        "best",
        xy=(best[0], value),
        xytext=(0, 13),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=10,
        fontweight="bold",
        color=_BEST_COLOUR,
        zorder=6,
        path_effects=[withStroke(linewidth=3, foreground="white")],
    )


def _finish_epoch_axes(ax, all_epochs: np.ndarray, metric_label: str, has_ci: bool, title: str) -> None:
    if len(all_epochs) <= 20:
        ax.set_xticks(all_epochs)  # exactly the trained epochs: 2, 4, 6 reads better than 2, 3, 4, 5, 6
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("LoRA epoch", fontsize=11)
    ax.set_ylabel(metric_label, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(True, color="#e0e0e0", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    if has_ci:
        handles.append(Patch(facecolor="#999999", alpha=0.3, linewidth=0))
        labels.append("shaded: confidence interval")
    # Outside the axes so the legend never hides a line.
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    ax.set_title(title or f"{metric_label} by LoRA epoch, one line per guidance", fontsize=13, loc="left")


def _text_colour(rgba: Sequence[float]) -> str:
    """Black on light squares, white on dark ones (WCAG relative luminance)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if luminance > 0.179 else "white"  # 0.179: equal contrast against black and white


def score_heatmap_figure(
    combinations: pd.DataFrame,
    *,
    best: tuple[int, float] | None = None,
    title: str = "",
    metric_label: str = "score",
    fmt: str = ".3f",
) -> Figure:
    """Epochs (rows) x guidance (columns), square colour = mean, each square labelled.

    Args:
        combinations: epoch, guidance, mean; one row per combination. One with no row or a NaN
            mean (failed job) is drawn hatched grey with an em dash.
        best: (epoch, guidance) to outline in vermillion.
        metric_label: colorbar label.
        fmt: format of the in-square numbers.
    """
    combinations = _check_combinations(combinations)
    table = (
        combinations.pivot(index="epoch", columns="guidance", values="mean").sort_index().sort_index(axis=1)
    )
    values = table.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
    cmap = colormaps[_HEATMAP_CMAP].with_extremes(bad="#eeeeee")

    fig = Figure(figsize=(1.6 + 1.05 * n_cols + 1.0, 1.3 + 0.55 * n_rows), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    fontsize = 10 if n_cols <= 8 else 8
    labels = _label_squares(ax, values, cmap, norm, fontsize, fmt)

    if best is not None:
        _best_mean(combinations, best)  # raises unless best is a scored combination
        _outline_best_square(ax, table, best, labels)

    ax.set_xticks(range(n_cols), [f"{float(g):g}" for g in table.columns])
    ax.set_yticks(range(n_rows), [str(int(e)) for e in table.index])
    ax.set_xlabel("guidance", fontsize=11)
    ax.set_ylabel("LoRA epoch", fontsize=11)
    ax.tick_params(labelsize=10, length=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
    colorbar.set_label(metric_label, fontsize=11)
    colorbar.ax.tick_params(labelsize=9)
    default = f"{metric_label} per epoch x guidance"
    if best is not None:
        default += f" (outlined: best, {_combination_name(*best)})"
    ax.set_title(title or default, fontsize=12, loc="left")
    return fig


def _label_squares(ax, values: np.ndarray, cmap, norm, fontsize: int, fmt: str) -> dict:
    """Each square's number; a missing one (failed job) hatched grey with an em dash."""
    labels = {}
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            v = values[r, c]
            if np.isfinite(v):
                labels[r, c] = ax.text(
                    c,
                    r,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color=_text_colour(cmap(norm(v))),
                )
            else:
                ax.add_patch(
                    Rectangle(
                        (c - 0.5, r - 0.5),
                        1,
                        1,
                        facecolor="#eeeeee",
                        edgecolor="#aaaaaa",
                        hatch="///",
                        linewidth=0,
                    )
                )
                ax.text(c, r, _MISSING_TEXT, ha="center", va="center", fontsize=fontsize + 2, color="black")
    return labels


def _outline_best_square(ax, table: pd.DataFrame, best: tuple[int, float], labels: dict) -> None:
    r = list(table.index).index(best[0])
    c = int(np.argmin(np.abs(table.columns.to_numpy(dtype=float) - float(best[1]))))
    # Black under vermillion: the outline reads on viridis' dark blue and its yellow alike.
    for colour, width in (("black", 5.0), (_BEST_COLOUR, 3.0)):
        ax.add_patch(
            Rectangle(
                (c - 0.5, r - 0.5),
                1,
                1,
                fill=False,
                edgecolor=colour,
                linewidth=width,
                zorder=4,
                clip_on=False,
                label="best" if colour == _BEST_COLOUR else None,
            )
        )
    labels[r, c].set_fontweight("bold")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (150 dpi, tight bounding box); returns the path.

    The figure stays open and usable: there is no global figure state to clean up.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_figure writes PNG; {path} does not end in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    return path


__all__ = ["save_figure", "score_by_epoch_figure", "score_heatmap_figure"]
