"""Sweep figures (analysis/figures.py), drawn for real: the score heatmap and the score-by-epoch
lines, with the best cell marked and failed cells shown as gaps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle
from PIL import Image

from bespoke_exp.analysis.figures import save_figure, score_by_epoch_figure, score_heatmap_figure

EPOCHS, GUIDANCES = [2, 4, 6], [3.0, 7.5, 10.0]


@pytest.fixture()
def cells() -> pd.DataFrame:
    """3 epochs x 3 guidances; (4, 10) failed with a NaN row, (6, 3) has no row at all."""
    rows = []
    for e in EPOCHS:
        for g in GUIDANCES:
            score = 0.4 + 0.05 * e - 0.01 * g
            rows.append(dict(epoch=e, guidance=g, mean=score, ci_low=score - 0.02, ci_high=score + 0.02))
    df = pd.DataFrame(rows)
    df.loc[(df.epoch == 4) & (df.guidance == 10.0), ["mean", "ci_low", "ci_high"]] = np.nan
    return df[~((df.epoch == 6) & (df.guidance == 3.0))].reset_index(drop=True)


BEST = (6, 7.5)  # highest score in `cells`: 0.4 + 0.30 - 0.075


# --- heatmap -----------------------------------------------------------------------------


def test_heatmap_labels_every_score_and_dashes_missing_cells(cells):
    fig = score_heatmap_figure(cells, best=BEST, metric_label="grid/purity")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    for score in cells["mean"].dropna():
        assert f"{score:.3f}" in texts
    assert texts.count("\u2014") == 2  # the NaN row and the absent row
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4", "6"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "7.5", "10"]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "grid/purity"  # the colorbar
    assert "epoch 6, guidance 7.5" in ax.get_title(loc="left")


def test_heatmap_text_contrasts_with_cell_colour(cells):
    ax = score_heatmap_figure(cells).axes[0]
    by_text = {t.get_text(): t for t in ax.texts}
    low, high = cells["mean"].min(), cells["mean"].max()
    # viridis runs from dark purple (low) to yellow (high)
    assert by_text[f"{low:.3f}"].get_color() == "white"
    assert by_text[f"{high:.3f}"].get_color() == "black"


def test_heatmap_outlines_the_best_cell(cells):
    ax = score_heatmap_figure(cells, best=(2, 10.0)).axes[0]
    outlines = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert outlines, "no outline drawn"
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    for p in outlines:
        x, y = p.get_x() + 0.5, p.get_y() + 0.5
        assert (rows[round(y)], cols[round(x)]) == ("2", "10")
    assert any(to_hex(p.get_edgecolor()) == "#d55e00" for p in outlines)


# --- score by epoch ----------------------------------------------------------------------


def test_line_figure_has_one_line_per_guidance_and_marks_best(cells):
    marginal = cells.groupby("epoch", as_index=False)[["mean", "ci_low", "ci_high"]].mean()
    fig = score_by_epoch_figure(cells, metric_label="grid/purity", best=BEST, marginal=marginal)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    guidance_lines = [lab for lab in labels if lab.startswith("guidance")]
    assert guidance_lines == ["guidance 3", "guidance 7.5", "guidance 10"]
    assert "mean over guidance" in labels
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"guidance 3", "guidance 7.5", "guidance 10", "mean over guidance"} <= set(legend)
    assert list(ax.get_xticks()) == EPOCHS
    assert len(ax.collections) == 4  # a confidence band per guidance + one for the mean
    (star,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert star.get_xdata()[0] == 6 and star.get_ydata()[0] == pytest.approx(0.4 + 0.30 - 0.075)
    assert star.get_label().startswith("best: epoch 6, guidance 7.5")
    assert ax.get_ylabel() == "grid/purity" and "grid/purity" in ax.get_title(loc="left")


def test_line_figure_leaves_gaps_for_failed_jobs(cells):
    ax = score_by_epoch_figure(cells).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    g3 = lines["guidance 3"]
    assert list(g3.get_xdata()) == EPOCHS  # the absent (6, 3) row is a gap, not a shorter line
    assert np.isnan(g3.get_ydata()[2])
    assert np.isnan(lines["guidance 10"].get_ydata()[1])


def test_save_figure_writes_a_readable_png(cells, tmp_path):
    fig = score_by_epoch_figure(cells, best=BEST)
    path = save_figure(fig, tmp_path / "sub" / "line.png")
    with Image.open(path) as png:
        assert png.format == "PNG"
        w, h = png.size
    assert 800 < w < 2000 and 400 < h < 1200  # ~8 x 4.8 in at 150 dpi, trimmed or grown by the legend
    assert path.stat().st_size > 20_000
    assert fig.axes  # the figure is still usable after saving
    with pytest.raises(ValueError, match="line.svg"):
        save_figure(fig, tmp_path / "line.svg")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda df: df.drop(columns="guidance"), r"lacks column\(s\) \['guidance'\]"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), r"more than one row per .*\[2(\.0)?, 3\.0\]"),
        (lambda df: df.assign(epoch=df["epoch"].astype(str)), r"\['epoch'\] must be numeric"),
    ],
)
def test_bad_cells_name_the_problem(cells, change, match):
    for draw in (score_by_epoch_figure, score_heatmap_figure):
        with pytest.raises(ValueError, match=match):
            draw(change(cells))


def test_best_must_be_a_scored_cell(cells):
    for draw in (score_by_epoch_figure, score_heatmap_figure):
        with pytest.raises(ValueError, match=r"best=\(4, 10.0\)"):  # the NaN cell
            draw(cells, best=(4, 10.0))


def test_plots_never_import_pyplot():
    code = "import sys, bespoke_exp.analysis.figures; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- comparison and seed sheets ----------------------------------------------------------
