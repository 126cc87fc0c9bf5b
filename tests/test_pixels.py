"""Grid recovery on procedurally generated portraits with each synthetic defect class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect, cell_edges, upscale
from bespoke_exp.demo.punks import PunkSpec, render, sample_spec
from bespoke_exp.pixelart.grid import cell_accuracy, fit_grid, recover_grid


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
def test_recover_grid_gets_cells_right_under_each_defect(defect: str) -> None:
    rng = np.random.default_rng([7, DEFECT_CLASSES.index(defect)])
    accuracies = []
    for _ in range(3):
        truth = render(sample_spec(rng))
        grid = recover_grid(apply_defect(truth, defect, rng))
        assert grid.size == (24, 24) and grid.mode == "RGB"
        accuracies.append(cell_accuracy(np.asarray(grid), truth))
    # Single defects are recovered perfectly; all of them stacked can cost a portrait
    # a few rows (see scripts/bench_pixels.py for the figures on 200 portraits).
    if defect == "combined":
        assert np.mean(accuracies) >= 0.9, accuracies
    else:
        assert min(accuracies) == 1.0, accuracies


def test_fit_grid_finds_non_integer_boundaries_within_a_pixel() -> None:
    grid = render(PunkSpec())
    fit = fit_grid(Image.fromarray(upscale(grid, 1024)), 24)
    true = cell_edges(24, 1024, 0.0)
    # A boundary between identical columns (rows) can't be seen and needn't be exact;
    # every visible one, and the frame, must be within a pixel and a half.
    visible_x = [0, 24] + [k for k in range(1, 24) if (grid[:, k - 1] != grid[:, k]).any()]
    visible_y = [0, 24] + [k for k in range(1, 24) if (grid[k - 1] != grid[k]).any()]
    assert np.abs(fit.x[visible_x] - true[visible_x]).max() <= 1.5
    assert np.abs(fit.y[visible_y] - true[visible_y]).max() <= 1.5
    assert fit.cell_size == pytest.approx(1024 / 24, rel=0.02)


def test_partial_frame_beats_plain_resize() -> None:
    rng = np.random.default_rng(11)
    ours, nearest = [], []
    for _ in range(4):
        truth = render(sample_spec(rng))
        img = apply_defect(truth, "partial", rng)
        ours.append(cell_accuracy(np.asarray(recover_grid(img)), truth))
        nearest.append(cell_accuracy(np.asarray(img.resize((24, 24), Image.NEAREST)), truth))
    assert min(ours) == 1.0 and np.mean(nearest) < 0.95


def test_demo_resolution_256() -> None:
    rng = np.random.default_rng(3)
    truth = render(sample_spec(rng))
    img = apply_defect(truth, "blur", rng, size=256)
    assert cell_accuracy(np.asarray(recover_grid(img)), truth) == 1.0


def test_grid_sized_input_is_returned_as_is() -> None:
    truth = render(PunkSpec())
    assert np.array_equal(np.asarray(recover_grid(Image.fromarray(truth))), truth)


@pytest.mark.parametrize("shape", [(1024, 1024, 3), (256, 256, 3), (7, 5, 3), (1, 1, 3), (300, 200, 3)])
def test_arbitrary_images_never_raise(shape: tuple[int, int, int]) -> None:
    noise = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for arr in (noise, np.zeros(shape, np.uint8), np.full(shape, 200, np.uint8)):
        out = recover_grid(Image.fromarray(arr), 24)
        assert out.size == (24, 24)
