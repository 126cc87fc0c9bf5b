"""evaluate(): property tests with the procedural generator, robustness, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect
from bespoke_exp.demo.punks import PunkSpec, caption, render, sample_spec, with_changes
from bespoke_exp.scoring.evaluate import aggregate, evaluate
from bespoke_exp.scoring.regions import parse_regions
from bespoke_exp.scoring.registry import METRICS, composite_score, metric_spec

CONF = Path(__file__).resolve().parents[1] / "conf" / "metrics" / "default.yaml"
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
    ev = evaluate(_image(render(with_changes(spec, background="green"))), caption(spec), regions=REGIONS)
    assert failed(ev) == {"background"}


def test_dropping_the_collar_fails_exactly_that_check() -> None:
    spec = PunkSpec()
    ev = evaluate(_image(render(with_changes(spec, collar=None))), caption(spec), regions=REGIONS)
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
    ev = evaluate(_image(render(with_changes(spec, hair="yellow"))), prompt, regions=REGIONS)
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
    other = render(with_changes(PunkSpec(), background="green"))
    assert evaluate(_image(truth), "", reference=other, regions=REGIONS).metrics["ref/exact"] < 0.8


@pytest.mark.parametrize("size", [1024, 256, 24, 5])
def test_arbitrary_images_give_finite_metrics(size: int) -> None:
    rng = np.random.default_rng(size)
    prompt = caption(PunkSpec())
    for arr in (
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        np.zeros((size, size, 3), np.uint8),
        np.full((size, size, 3), (30, 160, 90), np.uint8),
    ):
        ev = evaluate(Image.fromarray(arr), prompt, weights={"grid/r2": 1.0}, regions=REGIONS)
        assert all(np.isfinite(v) for v in ev.metrics.values())
        assert set(ev.metrics) >= {
            k for k in METRICS if not k.startswith(("ref/", "check/", "memorisation/"))
        }


def test_noise_scores_below_clean_art() -> None:
    weights = OmegaConf.to_container(OmegaConf.load(CONF).weights)
    spec = PunkSpec()
    clean = evaluate(_image(render(spec)), caption(spec), weights=weights, regions=REGIONS)
    noise = evaluate(
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        caption(spec),
        weights=weights,
        regions=REGIONS,
    )
    assert clean.metrics["score"] > 0.9 > 0.5 > noise.metrics["score"]
    for key in ("grid/r2", "grid/purity", "grid/edge_alignment", "adherence/pass_rate"):
        assert clean.metrics[key] > noise.metrics[key], key
    assert clean.metrics["palette/colors"] < noise.metrics["palette/colors"]
    assert clean.metrics["palette/off_palette_rate"] < noise.metrics["palette/off_palette_rate"]


def test_composite_score_respects_direction_and_rejects_unknown_keys() -> None:
    good = {"grid/r2": 0.9, "palette/off_palette_rate": 0.0}
    bad = {"grid/r2": 0.9, "palette/off_palette_rate": 0.8}
    w = {"grid/r2": 1.0, "palette/off_palette_rate": 1.0}
    assert composite_score(good, w) > composite_score(bad, w)
    with pytest.raises(ValueError, match="grid/purty"):
        composite_score(good, {"grid/purty": 1.0})
    assert "score" not in evaluate(np.zeros((24, 24, 3), np.uint8), "", regions=REGIONS).metrics


def test_aggregate_uses_registry_and_adds_check_pass_rates() -> None:
    spec = PunkSpec()
    good = evaluate(_image(render(spec)), caption(spec), regions=REGIONS)
    moved = render(spec).copy()
    moved[12, 8] = moved[12, 7]
    bad = evaluate(_image(moved), caption(spec), regions=REGIONS)
    agg = aggregate([good, bad])
    assert agg["adherence/pass_rate"] == pytest.approx(
        np.mean([good.metrics["adherence/pass_rate"], bad.metrics["adherence/pass_rate"]])
    )
    assert agg["check/pupils_8_12"] == 0.5 and agg["check/nose_11_13"] == 1.0
    assert all(metric_spec(k).aggregation in ("mean", "min", "max", "median") for k in agg)


def test_default_config_is_consistent_with_the_registry() -> None:
    cfg = OmegaConf.load(CONF)
    assert set(cfg.weights) <= set(METRICS)
    regions = parse_regions(OmegaConf.to_container(cfg.regions))
    assert {"hair", "eyes", "skin"} <= set(regions)
    with pytest.raises(ValueError, match="hair"):
        parse_regions({"hair": "x=1-2"})
