"""No reward for missing evidence: a picture that collapsed to one colour, a blank render or
NaN pixels score at the bad end of every metric and below every honest attempt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageFilter

from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.config import CONF_DIR
from bespoke_exp.config.schema import AnalysisConfig
from bespoke_exp.demo.defects import apply_defect
from bespoke_exp.demo.punks import PunkSpec, caption, render, sample_spec
from bespoke_exp.pixelart.colors import NAMED_COLORS
from bespoke_exp.scoring.evaluate import evaluate
from bespoke_exp.scoring.registry import worst_value

CONF = OmegaConf.load(CONF_DIR / "metrics" / "default.yaml")
SETTINGS = {
    "weights": OmegaConf.to_container(CONF.weights),
    "regions": OmegaConf.to_container(CONF.regions),
}
PROMPT = caption(PunkSpec())  # the advanced seed prompt: "vibrant orange solid background", ...


def collapsed_pictures() -> dict[str, Image.Image]:
    nan = np.full((256, 256, 3), np.nan)
    return {
        "flat square in the prompt's background colour": Image.new("RGB", (256, 256), NAMED_COLORS["orange"]),
        "all black": Image.new("RGB", (256, 256)),
        "one grey": Image.new("RGB", (1024, 1024), (128, 128, 128)),
        "NaN pixels": nan,
        "one pixel": Image.new("RGB", (1, 1), (40, 80, 220)),
    }


def honest_attempts() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    wrong = render(sample_spec(rng))
    return {
        "noise": Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        "heavily blurred portrait": Image.fromarray(render(PunkSpec()))
        .resize((256, 256))
        .filter(ImageFilter.GaussianBlur(12)),
        "another portrait": apply_defect(wrong, "combined", rng),
        "two colours": Image.fromarray(
            np.where(np.arange(256)[:, None, None] < 128, 0, 255).astype(np.uint8).repeat(256, 1).repeat(3, 2)
        ),
    }


@pytest.mark.parametrize("name", list(collapsed_pictures()))
def test_a_collapsed_picture_scores_at_the_bad_end_of_every_metric(name: str) -> None:
    ev = evaluate(collapsed_pictures()[name], PROMPT, **SETTINGS)
    assert ev.metrics["quality/collapsed"] == 1.0
    for key, value in ev.metrics.items():
        if key not in ("score", "quality/collapsed"):
            assert value == worst_value(key), (key, value)
    assert ev.metrics["score"] == 0.0
    assert not any(c.passed or c.passed_tolerant for c in ev.checks if c.checked)
    background = next(c for c in ev.checks if c.name == "background")
    assert background.detail.startswith("collapsed:")


def test_every_honest_attempt_outscores_every_collapsed_picture() -> None:
    collapsed = [evaluate(p, PROMPT, **SETTINGS).metrics["score"] for p in collapsed_pictures().values()]
    honest = {n: evaluate(p, PROMPT, **SETTINGS).metrics for n, p in honest_attempts().items()}
    assert all(m["quality/collapsed"] == 0.0 for m in honest.values())
    assert min(m["score"] for m in honest.values()) > max(collapsed)


def test_a_collapsing_epoch_ranks_last_in_a_sweep() -> None:
    """Epochs 1-2 draw noisy attempts, epoch 3 collapses to the background colour: before
    collapse was scored it outranked both (a flat orange square passed the background check,
    fitted any grid and showed no anti-aliasing)."""
    rng = np.random.default_rng(0)
    rows = []
    for epoch in (1, 2, 3):
        for seed in range(3):
            if epoch == 3:
                image = collapsed_pictures()["flat square in the prompt's background colour"]
            else:
                image = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
            score = evaluate(image, PROMPT, **SETTINGS).metrics["score"]
            rows.append(
                {
                    "run_id": f"r{epoch}",
                    "epoch": epoch,
                    "guidance": 7.5,
                    "prompt_id": "advanced",
                    "seed": seed,
                    "score": score,
                }
            )
    rec = recommend_from_images(pd.DataFrame(rows), final_epoch=3, settings=AnalysisConfig(n_boot=200))
    assert [r["epoch"] for r in rec.ranking][-1] == 3
    assert rec.best["epoch"] != 3


def test_weighting_the_collapse_flag_counts_against_a_collapsed_picture() -> None:
    """A user who weights `quality/collapsed` means to penalise collapse, as its direction says."""
    weights = {"quality/collapsed": 1.0, "grid/r2": 1.0}
    collapsed = evaluate(
        collapsed_pictures()["all black"], PROMPT, weights=weights, regions=SETTINGS["regions"]
    )
    noise = evaluate(honest_attempts()["noise"], PROMPT, weights=weights, regions=SETTINGS["regions"])
    assert noise.metrics["score"] > collapsed.metrics["score"]
