"""Issue 11: the art's own grid under smooth upscales, noise, wandering widths, drift and
partial-frame placement, measured within 12/255 per channel and through the prompt
checks. scripts/bench_pixels.py gives the figures on many more portraits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect, cell_edges, claim_phrases, upscale
from bespoke_exp.demo.punks import render, sample_spec
from bespoke_exp.pixelart.grid import cell_accuracy, fit_grid, recover_grid
from bespoke_exp.scoring.evaluate import evaluate

CONF = Path(__file__).resolve().parents[1] / "conf" / "metrics" / "default.yaml"
REGIONS = OmegaConf.to_container(OmegaConf.load(CONF).regions)
# The defect classes of the issue's table of real outputs.
ISSUE_CLASSES = ("clean", "smooth", "noise_jpeg", "wander_blur", "drift_blur", "speckle", "offset_partial")
# Worst portrait's share of cells within 12/255 of the truth. Heavy speckle (noise sigma
# up to 40 plus 5% impulse pixels) leaves a cell or two just outside 12 levels; every
# other class is recovered whole. The median of 49 samples (the previous estimator)
# scored 0.83 on speckle and 0.98 on smooth; a window pinned to the frame border, 0.82
# on offset_partial.
WORST = {"speckle": 0.97}


def _portraits(defect: str, n: int, seed: int = 11):
    rng = np.random.default_rng([seed, DEFECT_CLASSES.index(defect)])
    for _ in range(n):
        spec = sample_spec(rng)
        truth = render(spec)
        yield spec, truth, apply_defect(truth, defect, rng), rng


@pytest.mark.parametrize("defect", ISSUE_CLASSES)
def test_cells_within_12_levels_under_each_issue_class(defect: str) -> None:
    acc = [
        cell_accuracy(np.asarray(recover_grid(img)), truth, 12) for _, truth, img, _ in _portraits(defect, 5)
    ]
    assert min(acc) >= WORST.get(defect, 0.99), acc
    assert np.mean(acc) >= (0.98 if defect == "speckle" else 0.995), acc


def _verdicts(image, phrases: list[str]) -> dict[str, bool]:
    ev = evaluate(image, ", ".join(phrases), regions=REGIONS)
    return {c.name: c.passed for c in ev.checks if c.checked}


@pytest.mark.parametrize("defect", ISSUE_CLASSES)
def test_true_claims_pass_and_false_claims_fail(defect: str) -> None:
    right = total = 0
    for spec, truth, img, rng in _portraits(defect, 3, seed=5):
        for phrases, want in zip(claim_phrases(spec, rng), (True, False)):
            # Claims whose verdict on the exact art is not the intended one (a pupil moved
            # onto black hair) say nothing about recovery.
            expected = [k for k, v in _verdicts(truth, phrases).items() if v == want]
            got = _verdicts(img, phrases)
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
    for _, _, img, _ in _portraits(defect, 4, seed=3):
        fit = fit_grid(img, 24)
        assert fit.frame_cells == (24, 24) and fit.window_cell == (0, 0)
        assert fit.coverage == pytest.approx((1.0, 1.0), abs=0.01)


@pytest.mark.parametrize("defect", ["wander", "wander_blur"])
def test_wandering_widths_keep_every_cell(defect: str) -> None:
    # Over a figure whose widths happen to change little, a wandering frame-filling grid
    # looks like art of a smaller pitch (seed 3's last wander portrait does): then the
    # layout must still put the window on the art, and elsewhere the known-count fit,
    # not a rigid lattice, must follow the widths.
    for _, truth, img, _ in _portraits(defect, 4, seed=3):
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
