"""What the LoRA buys, read from simulated sweeps with a known truth: the gain over the base per
metric family, the trigger effect, in-set against held-out prompts, and which images the
production pick is ranked on."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd

from bespoke_exp.analysis.lora_value import measure, ranked_rows
from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.config.schema import AnalysisConfig
from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "calibrate_decisions", REPO / "scripts" / "calibrate_decisions.py"
)
cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cal)

FAST = AnalysisConfig(n_boot=300)
EPOCHS = (0, 1, 2, 3, 4)


def sweep(seed: int, grid_gain: float, palette_gain: float, prompts: int = 4, seeds: int = 2) -> pd.DataFrame:
    """Epoch 0 is the base; every LoRA epoch adds `grid_gain` to the grid family and
    `palette_gain` to the palette family; the composite is their mean."""
    rng = np.random.default_rng(seed)
    flat = cal.simulate(rng, prompts=prompts, seeds=seeds, epochs=EPOCHS, interaction_sd=0.0, noise=0.02)
    lora = (flat["epoch"] != 0).to_numpy(float)
    images = flat.assign(
        **{
            "score/grid": flat["score"] + grid_gain * lora,
            "score/palette": flat["score"] + palette_gain * lora + rng.normal(0, 0.02, len(flat)),
        }
    )
    images["score"] = (images["score/grid"] + images["score/palette"]) / 2
    return images


def test_the_gain_over_the_base_names_the_family_the_lora_improves_and_the_one_it_does_not() -> None:
    value = measure(sweep(1, grid_gain=0.15, palette_gain=0.0), FAST)
    codes = {f.code: f for f in value.findings}
    assert "gain_over_base" in codes and "no_gain_over_base" not in codes
    assert codes["gain_over_base"].evidence["improves"] == ["grid"]
    assert "palette" in codes["gain_over_base"].evidence["does_not_improve"]
    grid = [r for r in value.baseline if r["family"] == "grid"]
    assert [r["epoch"] for r in grid] == [1, 2, 3, 4]
    assert all(r["significant"] and r["ci_low"] > 0.05 for r in grid)
    assert not any(r["significant"] for r in value.baseline if r["family"] == "palette")


def test_a_lora_no_better_than_the_base_says_so() -> None:
    value = measure(sweep(2, grid_gain=0.0, palette_gain=0.0), FAST)
    (finding,) = [f for f in value.findings if f.code.endswith("gain_over_base")]
    assert finding.code == "no_gain_over_base"
    assert "No epoch beats the base model beyond noise" in finding.sentence


def test_a_lora_worse_than_the_base_is_not_called_a_gain() -> None:
    value = measure(sweep(3, grid_gain=-0.15, palette_gain=-0.1), FAST)
    assert {f.code for f in value.findings} == {"no_gain_over_base"}
    assert all(r["gain"] < 0 for r in value.baseline)


def with_trigger(images: pd.DataFrame, effect: float) -> pd.DataFrame:
    """The same items with the trigger words removed: `effect` less at every LoRA epoch, plus noise."""
    rng = np.random.default_rng(7)
    off = images.copy()
    lora = (off["epoch"] != 0).to_numpy(float)
    off["score"] = off["score"] - effect * lora + rng.normal(0, 0.02, len(off))
    return pd.concat([images.assign(trigger=1.0), off.assign(trigger=0.0)], ignore_index=True)


def test_the_trigger_effect_is_paired_per_epoch_and_an_ignored_trigger_is_named() -> None:
    base = sweep(4, grid_gain=0.1, palette_gain=0.0)
    responds = measure(with_trigger(base, 0.1), FAST)
    assert [r["epoch"] for r in responds.trigger] == list(EPOCHS)
    assert all(r["significant"] and abs(r["effect"] - 0.1) < 0.03 for r in responds.trigger if r["epoch"])
    assert not responds.trigger[0]["significant"]  # the base model has no trigger to respond to
    assert "trigger_matters" in {f.code for f in responds.findings}
    ignored = measure(with_trigger(base, 0.0), FAST)
    assert "trigger_ignored" in {f.code for f in ignored.findings}


def test_the_production_pick_never_ranks_the_base_or_a_trigger_off_image() -> None:
    images = with_trigger(sweep(5, grid_gain=-0.2, palette_gain=-0.2), -0.3)  # base and trigger-off win
    rows, note = ranked_rows(images)
    assert set(rows["epoch"]) == {1, 2, 3, 4} and set(rows["trigger"]) == {1.0}
    assert "baseline" in note and "trigger" in note
    rec = recommend_from_images(images, final_epoch=4, settings=FAST)
    assert rec.best["epoch"] != 0 and "trigger" not in rec.axes
    assert rec.to_dict()["lora_value"]["baseline"]


def test_in_set_prompts_rising_while_held_out_ones_fall_make_a_gap_and_the_ranking_uses_held_out() -> None:
    rng = np.random.default_rng(6)
    images = cal.simulate(rng, prompts=8, seeds=2, epochs=(1, 2, 3, 4, 5, 6), interaction_sd=0.0, noise=0.02)
    in_set = images["prompt_id"].isin(["p0", "p1", "p2", "p3"])
    epoch = images["epoch"].to_numpy(float)
    images["score"] += np.where(in_set, 0.04 * epoch, 0.10 - 0.02 * epoch)
    images["split"] = np.where(in_set, "train", "heldout")
    rec = recommend_from_images(images, final_epoch=6, settings=FAST)
    splits = rec.lora_value.splits
    gaps = [r["gap"] for r in splits]
    assert gaps == sorted(gaps) and splits[-1]["significant"] and not splits[0]["significant"]
    assert splits[0]["in_set"] < splits[-1]["in_set"] and splits[0]["held_out"] > splits[-1]["held_out"]
    assert "generalisation_gap" in {f.code for f in rec.diagnosis.findings}
    assert rec.best["epoch"] == 1  # held-out prompts peak first; all eight together would favour 6
    assert "held-out prompts" in rec.ranked_on and "## What the LoRA buys" in rec.to_markdown()


def test_a_sweep_that_measured_none_of_it_has_no_lora_value() -> None:
    images = cal.simulate(np.random.default_rng(8), prompts=3, seeds=2, epochs=(1, 2))
    assert measure(images, FAST) is None
    assert recommend_from_images(images, settings=FAST).to_dict()["lora_value"] is None
