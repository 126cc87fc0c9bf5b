"""Recovering the art's own grid from a generated picture: each synthetic defect class, smooth
upscales, noise, wandering widths, drift and partial-frame placement, measured by cell accuracy
(within 12/255 per channel, or snapped to the art's palette) and through the prompt checks.
scripts/bench_pixels.py gives the figures on many more portraits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect, cell_edges, claim_phrases, upscale
from bespoke_exp.demo.punks import PunkSpec, render, sample_spec
from bespoke_exp.pixelart.grid import cell_accuracy, fit_grid, recover_grid
from tests.helpers import claim_verdicts, defect_portraits

# The defect classes of the table of real outputs the recovery was measured on.
MEASURED_CLASSES = ("clean", "smooth", "noise_jpeg", "wander_blur", "drift_blur", "speckle", "offset_partial")
# Worst portrait's share of cells within 12/255 of the truth. Heavy speckle (noise sigma
# up to 40 plus 5% impulse pixels) leaves a cell or two just outside 12 levels; every
# other class is recovered whole. The median of 49 samples (the previous estimator)
# scored 0.83 on speckle and 0.98 on smooth; a window pinned to the frame border, 0.82
# on offset_partial.
WORST = {"speckle": 0.97}


@pytest.mark.parametrize("defect", MEASURED_CLASSES)
def test_cells_within_12_levels_under_each_measured_defect_class(defect: str) -> None:
    acc = [
        cell_accuracy(np.asarray(recover_grid(img)), truth, 12)
        for _, truth, img, _ in defect_portraits(defect, 5, seed=11)
    ]
    assert min(acc) >= WORST.get(defect, 0.99), acc
    assert np.mean(acc) >= (0.98 if defect == "speckle" else 0.995), acc


# Before issue 26 the soft classes kept 0.83 (bicubic), 0.95 (lanczos) and 0.89 (soft_texture)
# of the verdicts: pupils and one-cell features read off a lattice drifting on broad edges,
# blended into their neighbours. All now keep every one.
SOFT_CLAIM_CLASSES = ("bicubic", "lanczos", "texture", "soft_texture", "partial_blur")


@pytest.mark.parametrize("defect", MEASURED_CLASSES + SOFT_CLAIM_CLASSES)
def test_true_claims_pass_and_false_claims_fail(defect: str) -> None:
    right = total = 0
    for spec, truth, img, rng in defect_portraits(defect, 3, seed=5):
        for phrases, want in zip(claim_phrases(spec, rng), (True, False)):
            # Claims whose verdict on the exact art is not the intended one (a pupil moved
            # onto black hair) say nothing about recovery.
            expected = [k for k, v in claim_verdicts(truth, phrases).items() if v == want]
            got = claim_verdicts(img, phrases)
            right += sum(got[k] == want for k in expected)
            total += len(expected)
    assert total >= 3 * 12
    assert right / total >= 0.97, (right, total)


@pytest.mark.parametrize(
    "pitch, x_off, y_off",
    # (34, 70) puts the lattice's phase just short of a whole pitch at the working scale,
    # where its edges fall on both ends of the phase circle.
    [(36.0, 0.0, 160.0), (36.0, 34.0, 70.0), (36.5, 150.0, 40.0), (38.5, 77.3, 12.9), (40.0, 23.0, 0.0)],
)
def test_art_window_is_found_when_its_background_runs_to_the_edge(
    pitch: float, x_off: float, y_off: float
) -> None:
    rng = np.random.default_rng(int(pitch * 10))
    truth = render(sample_spec(rng))
    span = 24 * pitch
    pad = tuple(int(v) for v in truth[0, 0])  # the art's own background continues to the frame edge
    img = upscale(truth, 1024, cell_edges(24, span, x_off), cell_edges(24, span, y_off), pad)
    fit = fit_grid(img, 24)
    assert min(fit.frame_cells) > 24  # more cells of the art's pitch fit than the art has
    assert np.abs(np.array(fit.window) - [x_off, y_off, x_off + span, y_off + span]).max() <= 3.0
    assert fit.coverage == pytest.approx((span / 1024, span / 1024), abs=0.005)
    assert fit.cell_size == pytest.approx(pitch, rel=0.01)
    assert cell_accuracy(np.asarray(recover_grid(img)), truth, 12) == 1.0


@pytest.mark.parametrize("defect", ["clean", "blur", "smooth", "noise_jpeg", "drift_blur"])
def test_frame_filling_art_is_not_taken_for_a_partial_frame(defect: str) -> None:
    for _, _, img, _ in defect_portraits(defect, 4, seed=3):
        fit = fit_grid(img, 24)
        assert fit.frame_cells == (24, 24) and fit.window_cell == (0, 0)
        assert fit.coverage == pytest.approx((1.0, 1.0), abs=0.01)


@pytest.mark.parametrize("defect", ["wander", "wander_blur"])
def test_wandering_widths_keep_every_cell(defect: str) -> None:
    # Over a figure whose widths happen to change little, a wandering frame-filling grid
    # looks like art of a smaller pitch (seed 3's last wander portrait does): then the
    # layout must still put the window on the art, and elsewhere the known-count fit,
    # not a rigid lattice, must follow the widths.
    for _, truth, img, _ in defect_portraits(defect, 4, seed=3):
        assert cell_accuracy(np.asarray(recover_grid(img)), truth) == 1.0


def test_cell_accuracy_tolerance_is_per_channel_and_stricter_than_snapping() -> None:
    truth = np.full((24, 24, 3), 100, np.uint8)
    truth[8:16, 8:16] = (200, 40, 40)
    drifted = truth.astype(int)
    drifted[..., 1] += 12  # every cell 12 levels off in one channel
    assert cell_accuracy(drifted, truth, tolerance=12) == 1.0
    assert cell_accuracy(drifted, truth, tolerance=11) == 0.0
    drifted[0, 0, 2] += 30  # one cell far off, still nearest its own colour
    assert cell_accuracy(drifted, truth, tolerance=12) == pytest.approx(1 - 1 / 576)
    assert cell_accuracy(drifted, truth) == 1.0


# --- every defect class, odd sizes ------------------------------------------------------


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
