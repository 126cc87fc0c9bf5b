"""evaluate(): property tests with the procedural generator, robustness, registry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp.config import CONF_DIR
from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect
from bespoke_exp.demo.punks import PunkSpec, caption, render, sample_spec
from bespoke_exp.scoring.evaluate import evaluate

CONF = CONF_DIR / "metrics" / "default.yaml"
REGIONS = OmegaConf.to_container(OmegaConf.load(CONF).regions)  # the punk layout, as sweeps use it


def failed(ev) -> set[str]:
    return {c.name for c in ev.checks if c.checked and not c.passed}


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
def test_portraits_pass_every_check_from_their_own_caption(defect: str) -> None:
    rng = np.random.default_rng([21, DEFECT_CLASSES.index(defect)])
    for _ in range(2):
        spec = sample_spec(rng)
        ev = evaluate(apply_defect(render(spec), defect, rng), caption(spec), regions=REGIONS)
        assert failed(ev) == set(), [c.detail for c in ev.checks if c.checked and not c.passed]
        assert ev.metrics["adherence/all_pass"] == 1.0
        assert len([c for c in ev.checks if c.checked]) >= 12


def _image(grid: np.ndarray, seed: int = 0) -> Image.Image:
    return apply_defect(grid, "combined", np.random.default_rng(seed))


def test_moving_a_pupil_fails_exactly_that_check() -> None:
    spec = PunkSpec()
    grid = render(spec).copy()
    skin = grid[12, 7].copy()
    grid[12, 7], grid[12, 8] = grid[12, 8], skin  # pupil (8,12) moves one cell left
    ev = evaluate(_image(grid), caption(spec), regions=REGIONS)
    assert failed(ev) == {"pupils@(8,12)"}
    moved = next(c for c in ev.checks if c.name == "pupils@(8,12)")
    assert moved.passed_tolerant  # one cell off is within the +-1 tolerance


def test_recolouring_the_background_fails_exactly_that_check() -> None:
    spec = PunkSpec()
    ev = evaluate(_image(render(replace(spec, background="green"))), caption(spec), regions=REGIONS)
    assert failed(ev) == {"background"}


def test_dropping_the_collar_fails_exactly_that_check() -> None:
    spec = PunkSpec()
    ev = evaluate(_image(render(replace(spec, collar=None))), caption(spec), regions=REGIONS)
    assert failed(ev) == {"collar@y=20-22"}


def test_mirrored_portrait_is_not_right_facing() -> None:
    spec = PunkSpec()
    ev = evaluate(
        Image.fromarray(render(spec)[:, ::-1]).resize((1024, 1024), Image.NEAREST),
        caption(spec),
        regions=REGIONS,
    )
    assert "facing" in failed(ev)


def test_heavy_blur_fails_the_pixel_art_check() -> None:
    from PIL import ImageFilter

    spec = PunkSpec()
    sharp = Image.fromarray(render(spec)).resize((1024, 1024), Image.NEAREST)
    assert "pixel_art" not in failed(evaluate(sharp, caption(spec), regions=REGIONS))
    blurred = sharp.filter(ImageFilter.GaussianBlur(12))  # ~0.3 cell: visibly smooth edges
    ev = evaluate(blurred, caption(spec), regions=REGIONS)
    assert "pixel_art" in failed(ev)
    assert (
        ev.metrics["grid/aa_cells"] > evaluate(sharp, caption(spec), regions=REGIONS).metrics["grid/aa_cells"]
    )


def test_basic_prompt_checks_regions_without_coordinates() -> None:
    spec = PunkSpec(gender="female", background="purple", hair="brown", iris="blue", skin="light")
    prompt = (
        "TOK bespoke, 24x24 pixel grid portrait, female, purple solid background, brown hair, "
        "blue eyes, light skin tone, right-facing"
    )
    ev = evaluate(_image(render(spec)), prompt, regions=REGIONS)
    assert failed(ev) == set()
    assert [c.name for c in ev.checks if not c.checked] == ["unchecked:female"]
    ev = evaluate(_image(render(replace(spec, hair="yellow"))), prompt, regions=REGIONS)
    assert failed(ev) == {"hair:brown"}


def test_explicit_expectations_add_and_override() -> None:
    spec = PunkSpec()
    img = _image(render(spec))
    ev = evaluate(
        img, "TOK bespoke, right-facing", expectations=["black pupils fixed at (8,12)"], regions=REGIONS
    )
    assert {c.name for c in ev.checks} == {"facing", "pupils@(8,12)"} and failed(ev) == set()
    ev = evaluate(
        img, caption(spec), expectations=["blue solid background"], regions=REGIONS
    )  # replaces the parsed one
    assert failed(ev) == {"background"}


def test_out_of_grid_coordinates_are_reported_unchecked_not_raised() -> None:
    ev = evaluate(_image(render(PunkSpec())), "TOK bespoke, black nose dot at (30,13)", regions=REGIONS)
    assert [c.checked for c in ev.checks] == [False] and "24x24" in ev.checks[0].detail


def test_reference_accuracy() -> None:
    truth = render(PunkSpec())
    ev = evaluate(_image(truth), caption(PunkSpec()), reference=truth, regions=REGIONS)
    assert ev.metrics["ref/exact"] == 1.0 and ev.metrics["ref/near"] > 0.5
    other = render(replace(PunkSpec(), background="green"))
    assert evaluate(_image(truth), "", reference=other, regions=REGIONS).metrics["ref/exact"] < 0.8
