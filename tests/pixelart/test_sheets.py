"""Comparison and seed sheets (pixelart/sheets.py): each generated picture beside the grid recovered
from it, epochs as rows and guidances as columns, drawn for real."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bespoke_exp.demo.punks import render, sample_spec
from bespoke_exp.pixelart.sheets import BEST_RGB, comparison_sheet, seed_sheet

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
