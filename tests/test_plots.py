"""Sweep figures (plots.py) and generated|recovered sheets (grids.py), drawn for real."""

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
from bespoke_exp.analysis.sheets import BEST_RGB, comparison_sheet, seed_sheet
from bespoke_exp.demo.punks import render, sample_spec

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

CELL = 96  # 4 px per cell: small enough to be fast, large enough to sample cell centres


def _art(seed: int) -> np.ndarray:
    return render(sample_spec(np.random.default_rng(seed)))


def _generated(art: np.ndarray, seed: int) -> Image.Image:
    """24x24 art upscaled to 192 px with noise, so the generated half differs from the
    clean recovered grid and a swapped pair would be caught."""
    big = np.repeat(np.repeat(art.astype(float), 8, axis=0), 8, axis=1)
    noisy = big + np.random.default_rng(seed).normal(0, 12, big.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _cell_centres(sheet: Image.Image, box: tuple[int, int, int, int], cells: int = 24) -> np.ndarray:
    left, top, right, _ = box
    step = (right - left) / cells
    centres = left + (np.arange(cells) + 0.5) * step
    rows = top + (np.arange(cells) + 0.5) * step
    arr = np.asarray(sheet)
    return arr[rows.astype(int)[:, None], centres.astype(int)[None, :]]


@pytest.fixture(scope="module")
def arts() -> dict[tuple[int, float], np.ndarray]:
    return {(e, g): _art(i) for i, (e, g) in enumerate([(2, 3.0), (2, 7.5), (4, 3.0)])}


@pytest.fixture(scope="module")
def sheet(arts) -> Image.Image:
    images = {key: _generated(art, i) for i, (key, art) in enumerate(arts.items())}  # (4, 7.5) missing
    scores = {(2, 3.0): 0.5, (2, 7.5): 0.9, (4, 3.0): 0.7}
    return comparison_sheet(
        images, [2, 4], [3.0, 7.5], scores=scores, best=(2, 7.5), title="prompt p01, seed 0", cell_size=CELL
    )


def test_sheet_lays_out_epochs_as_rows_and_guidances_as_columns(sheet):
    tiles = sheet.info["tiles"]
    assert set(tiles) == {(2, 3.0), (2, 7.5), (4, 3.0), (4, 7.5)}
    for boxes in tiles.values():
        for half in ("generated", "recovered"):
            left, top, right, bottom = boxes[half]
            assert (right - left, bottom - top) == (CELL, CELL)
            assert 0 <= left and right <= sheet.width and 0 <= top and bottom <= sheet.height
        assert boxes["generated"][2] <= boxes["recovered"][0]  # generated left of recovered
    assert tiles[(2, 3.0)]["tile"][3] <= tiles[(4, 3.0)]["tile"][1]  # epoch 4 below epoch 2
    assert tiles[(2, 3.0)]["tile"][2] <= tiles[(2, 7.5)]["tile"][0]  # guidance 7.5 right of 3
    # Two columns of two halves and two rows; labels, captions and margins add little.
    assert 4 * CELL < sheet.width < 6 * CELL and 2 * CELL < sheet.height < 4 * CELL


def _assert_recovered(sheet: Image.Image, boxes: dict, art: np.ndarray) -> None:
    """The recovered half is the art, one flat square per cell; the generated half is the
    noisy render (a swapped or duplicated half fails)."""
    recovered = _cell_centres(sheet, boxes["recovered"]).astype(int)
    assert np.abs(recovered - art).mean() < 4 and np.abs(recovered - art).max() <= 24
    left, top, right, bottom = boxes["recovered"]
    block = np.asarray(sheet)[top:bottom, left:right].astype(int)
    assert (block == np.repeat(np.repeat(recovered, CELL // 24, 0), CELL // 24, 1)).all()
    left, top, right, bottom = boxes["generated"]
    generated = np.asarray(sheet)[top:bottom, left:right].astype(int)
    clean = np.repeat(np.repeat(art, CELL // 24, 0), CELL // 24, 1)
    assert np.abs(generated - clean).mean() < 12  # it is this art ...
    assert (generated != clean).any(axis=2).mean() > 0.5  # ... as rendered, with its noise


def test_sheet_recovered_half_reproduces_the_art(sheet, arts):
    for key, art in arts.items():
        _assert_recovered(sheet, sheet.info["tiles"][key], art)


def test_sheet_draws_a_missing_tile(sheet):
    left, top, right, bottom = sheet.info["tiles"][(4, 7.5)]["generated"]
    right = sheet.info["tiles"][(4, 7.5)]["recovered"][2]
    region = np.asarray(sheet)[top:bottom, left:right].astype(int)
    grey = np.abs(region - region[..., :1]).max(axis=2) <= 2  # R == G == B
    assert grey.mean() > 0.99
    assert 150 < np.median(region) < 240  # light grey, not white and not art
    assert (region.sum(axis=2) < 150).sum() > 20  # dark "missing" text


def test_sheet_frames_only_the_best_tile(sheet):
    arr = np.asarray(sheet).astype(int)

    def best_pixels_around(key) -> int:
        left, top, right, bottom = sheet.info["tiles"][key]["tile"]
        strip = arr[max(0, top - 14) : top, left:right]  # the spacing above the tile
        return int((np.abs(strip - np.array(BEST_RGB)).sum(axis=2) == 0).sum())

    assert best_pixels_around((2, 7.5)) > (CELL * 2)
    assert best_pixels_around((4, 3.0)) == 0
    assert best_pixels_around((2, 3.0)) == 0


def test_sheet_rejects_keys_outside_the_grid(arts):
    image = _generated(arts[(2, 3.0)], 0)
    with pytest.raises(ValueError, match=r"images .*\(2, '3'\)"):
        comparison_sheet({(2, "3"): image}, [2], [3.0], cell_size=CELL)
    with pytest.raises(ValueError, match=r"best=\(8, 3.0\)"):
        comparison_sheet({(2, 3.0): image}, [2], [3.0], best=(8, 3.0), cell_size=CELL)


def test_seed_sheet_uses_the_same_tiles(arts):
    art_a, art_b = arts[(2, 3.0)], arts[(2, 7.5)]
    images = {("p01", 0): _generated(art_a, 0), ("p02_a_rather_long_prompt_id", 1): _generated(art_b, 1)}
    prompts = ["p01", "p02_a_rather_long_prompt_id"]
    sheet = seed_sheet(images, prompts, [0, 1], title="best cell", cell_size=CELL)
    tiles = sheet.info["tiles"]
    assert set(tiles) == {
        ("p01", 0),
        ("p01", 1),
        ("p02_a_rather_long_prompt_id", 0),
        ("p02_a_rather_long_prompt_id", 1),
    }
    for key, art in ((("p01", 0), art_a), (("p02_a_rather_long_prompt_id", 1), art_b)):
        _assert_recovered(sheet, tiles[key], art)
    missing = tiles[("p01", 1)]
    region = np.asarray(sheet)[
        missing["generated"][1] : missing["generated"][3], missing["generated"][0] : missing["recovered"][2]
    ]
    assert 150 < np.median(region) < 240
    with pytest.raises(ValueError, match=r"\('p03', 0\)"):
        seed_sheet({("p03", 0): images[("p01", 0)]}, ["p01"], [0])
