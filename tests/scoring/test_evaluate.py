"""evaluate() on whole pictures: clean art outscores noise, every registered metric is reported
whatever the picture, a metric that can't be computed scores at its bad end; and aggregate()
reduces a set of evaluations as the registry says, with each check's pass rate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp.config import CONF_DIR
from bespoke_exp.demo.defects import apply_defect
from bespoke_exp.demo.punks import PunkSpec, caption, render
from bespoke_exp.scoring import evaluate as evaluate_module
from bespoke_exp.scoring.checks import Check
from bespoke_exp.scoring.evaluate import Evaluation, aggregate, evaluate
from bespoke_exp.scoring.registry import METRICS, composite_score, worst_value

CONF = CONF_DIR / "metrics" / "default.yaml"
REGIONS = OmegaConf.to_container(OmegaConf.load(CONF).regions)  # the punk layout, as sweeps use it
PER_IMAGE = {k for k in METRICS if not k.startswith(("ref/", "check/", "memorisation/"))}


def _image(grid: np.ndarray, seed: int = 0) -> Image.Image:
    return apply_defect(grid, "combined", np.random.default_rng(seed))


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


@pytest.mark.parametrize("size", [256, 24, 5])
@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_every_registered_metric_is_reported_for_any_picture(size: int, kind: str) -> None:
    """What a job logs and aggregates: exactly the registry's per-image metrics (a key missing from
    the registry could not be aggregated or ranked), collapsed picture or not, any size."""
    rng = np.random.default_rng(size)
    picture = (
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if kind == "noise"
        else np.full((size, size, 3), (30, 160, 90), np.uint8)
    )
    ev = evaluate(Image.fromarray(picture), caption(PunkSpec()), weights={"grid/r2": 1.0}, regions=REGIONS)
    # A family the weights leave out has no part score (not a perfect one): here only the grid's.
    assert set(ev.metrics) == PER_IMAGE - {"score/adherence", "score/palette"}
    assert ev.metrics["quality/collapsed"] == (1.0 if kind == "flat" else 0.0)


def test_a_metric_that_cannot_be_computed_scores_at_its_bad_end(monkeypatch) -> None:
    computed = evaluate_module.fidelity_metrics

    def fidelity_with_gaps(*args):
        return {**computed(*args), "grid/r2": float("nan"), "grid/aa_width": float("inf")}

    monkeypatch.setattr(evaluate_module, "fidelity_metrics", fidelity_with_gaps)
    weights = {"grid/r2": 1.0, "grid/aa_width": 1.0, "grid/purity": 1.0}
    ev = evaluate(_image(render(PunkSpec())), caption(PunkSpec()), weights=weights, regions=REGIONS)
    assert ev.metrics["grid/r2"] == worst_value("grid/r2")
    assert ev.metrics["grid/aa_width"] == worst_value("grid/aa_width")
    assert ev.metrics["score"] == pytest.approx(composite_score(ev.metrics, weights))
    assert ev.metrics["score"] == pytest.approx(ev.metrics["grid/purity"] / 3)  # the two gaps count zero


def _evaluation(metrics: dict[str, float], *checks: Check) -> Evaluation:
    return Evaluation(metrics=metrics, checks=list(checks), grid=np.zeros((24, 24, 3), np.uint8))


def test_aggregate_reduces_each_metric_as_its_registry_entry_says(monkeypatch) -> None:
    for key, how in (("grid/r2", "min"), ("grid/purity", "max"), ("grid/aa_width", "median")):
        monkeypatch.setitem(METRICS, key, replace(METRICS[key], aggregation=how))
    values = {
        "grid/r2": (0.2, 0.5, 0.8),
        "grid/purity": (0.2, 0.5, 0.8),
        "grid/aa_width": (1.0, 5.0, 30.0),
        "palette/colors": (2.0, 4.0, 9.0),  # the registry's own "mean"
    }
    agg = aggregate(_evaluation({k: v[i] for k, v in values.items()}) for i in range(3))
    assert agg == {"grid/r2": 0.2, "grid/purity": 0.8, "grid/aa_width": 5.0, "palette/colors": 5.0}


def test_a_metric_some_images_lack_is_aggregated_over_those_that_have_it() -> None:
    agg = aggregate([_evaluation({"grid/r2": 0.4, "ref/exact": 0.9}), _evaluation({"grid/r2": 0.6})])
    assert agg == {"grid/r2": pytest.approx(0.5), "ref/exact": 0.9}


def test_a_checks_pass_rate_counts_the_images_where_it_was_checked() -> None:
    pupils, hair = "pupils@(8,12)", "hair:brown"
    agg = aggregate(
        [
            _evaluation(
                {}, Check(pupils, True, ""), Check(hair, False, "beyond the read limit", checked=False)
            ),
            _evaluation({}, Check(pupils, False, ""), Check(hair, True, "")),
            _evaluation({}, Check(pupils, True, ""), Check(hair, True, "")),
        ]
    )
    assert agg == {"check/pupils_8_12": pytest.approx(2 / 3), "check/hair_brown": 1.0}


def test_moving_a_pupil_halves_that_checks_pass_rate_over_two_portraits() -> None:
    spec = PunkSpec()
    good = evaluate(_image(render(spec)), caption(spec), regions=REGIONS)
    moved = render(spec).copy()
    moved[12, 8] = moved[12, 7]
    bad = evaluate(_image(moved), caption(spec), regions=REGIONS)
    agg = aggregate([good, bad])
    assert agg["check/pupils_8_12"] == 0.5 and agg["check/nose_11_13"] == 1.0
