"""Are the sweep's decisions calibrated? On simulated sweeps (scripts/calibrate_decisions.py
draws them: prompt and seed effects shared by every combination, prompt x combination
interaction, image noise), a null sweep must rarely yield "beats the runner-up" or an
overfitting/undertrained diagnosis, a planted effect must be found at the sample size the
recommendation asks for, and partial or small sweeps must say what they cannot tell.

The heavy version (more repetitions, other designs) is `python scripts/calibrate_decisions.py`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest

from bespoke_exp.analysis.diagnosis import diagnose
from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.analysis.resampling import resampling
from bespoke_exp.analysis.statistics import compare_combinations
from bespoke_exp.config.schema import AnalysisConfig
from tests.helpers import REPO

_SCRIPT = REPO / "scripts" / "calibrate_decisions.py"
_spec = importlib.util.spec_from_file_location("calibrate_decisions", _SCRIPT)
cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cal)

B = 300  # bootstrap replicates per simulated sweep: the 0.95 max-t quantile is stable enough
FAST = AnalysisConfig(n_boot=B)


def outcomes(reps: int, curve=None, seed: int = 0, **design) -> dict[str, float]:
    """Share of simulated sweeps that claim beats / overfitting / undertrained, and the seeds per
    prompt each too-small sweep asks for."""
    rng = np.random.default_rng(seed)
    beats, trend, asked = 0, 0, []
    for r in range(reps):
        rec = recommend_from_images(
            cal.simulate(rng, curve, **design), final_epoch=10, settings=replace(FAST, seed=r)
        )
        beats += bool(rec.beats_runner_up.significant)
        trend += bool({f.code for f in rec.diagnosis.findings} & {"overfitting", "undertrained"})
        if not rec.separation["separated"]:
            asked.append(rec.separation["seeds_needed"] or 10**6)
    return {"beats": beats / reps, "trend": trend / reps, "asked": asked}


# --------------------------------------------------------------------------- null sweeps
def test_null_sweep_with_few_prompts_rarely_claims_a_winner_or_a_trend() -> None:
    # 3 prompts x 4 seeds, 10 epochs x 3 guidance. Prompts are fixed here
    # (seeds resampled within them), so the null has no prompt x combination interaction.
    # Before selection was paid for, ~20% of these sweeps were called overfitting/undertrained.
    r = outcomes(200, prompts=3, seeds=4, interaction_sd=0.0)
    assert r["beats"] <= 0.05
    assert r["trend"] <= 0.05


@pytest.mark.parametrize("prompts", [4, 3])
def test_null_sweep_with_two_seeds_per_prompt_rarely_claims_a_winner_or_a_trend(prompts) -> None:
    # The demo's shape and a typical first sweep's. Some prompts' images several times noisier
    # than others' (the "uneven" noise model): a seeds-within-prompt bootstrap sees two values
    # per prompt, half their variance, and called a trend in ~7% of these sweeps.
    r = outcomes(150, seed=11, prompts=prompts, seeds=2, interaction_sd=0.0, prompt_noise_sd=0.7)
    assert r["beats"] <= 0.05
    assert r["trend"] <= 0.05


def test_a_seed_drifting_over_neighbouring_epochs_does_not_make_a_trend() -> None:
    # The same seed on adjacent checkpoints gives similar images, so near epochs differ less than
    # far ones: a variance pooled over every epoch alone would be too small for the peak-vs-last
    # comparison the trend rests on.
    r = outcomes(150, seed=12, prompts=4, seeds=2, interaction_sd=0.0, epoch_corr=0.9)
    assert r["trend"] <= 0.05


def test_a_sweep_too_small_for_any_interval_says_so_and_claims_nothing() -> None:
    one = cal.simulate(np.random.default_rng(13), cal.peak(0.3), prompts=1, seeds=1)
    rec = recommend_from_images(one, final_epoch=10, settings=FAST)
    assert rec.diagnosis.code not in ("overfitting", "undertrained")
    assert not rec.beats_runner_up.significant
    assert any("too small for any interval" in c for c in rec.intervals["caveats"])
    assert "too small for any interval" in rec.to_markdown()


def test_two_tied_leaders_are_rarely_separated() -> None:
    # The least favourable case for "beats the runner-up": the top two are truly equal.
    two = lambda e, g: 0.65 + 0.05 * (((e == 6) | (e == 7)) & (g == 7.5))  # noqa: E731
    assert outcomes(200, two, seed=9, prompts=3, seeds=4, interaction_sd=0.0)["beats"] <= 0.05


def test_null_sweep_with_many_prompts_is_calibrated_for_unseen_prompts() -> None:
    # Each prompt has its own response to epoch and guidance (interaction): only resampling
    # prompts, not (prompt, seed) items, covers prompts outside the set.
    r = outcomes(150, prompts=6, seeds=3, interaction_sd=0.02, seed=1)
    assert r["beats"] <= 0.05
    assert r["trend"] <= 0.05


def test_a_named_comparison_resamples_prompts_not_items() -> None:
    # Strong prompt x combination interaction, little seed noise: seeds of a prompt move
    # together, so 8 prompts x 4 seeds carry about 8 units of evidence, not 32.
    rng = np.random.default_rng(2)
    false = 0
    for r in range(150):
        images = cal.simulate(rng, prompts=8, seeds=4, epochs=(1, 2), interaction_sd=0.05, noise=0.005)
        false += compare_combinations(images, (1, 5.0), (2, 5.0), settings=replace(FAST, seed=r)).significant
    assert false / 150 <= 0.07  # an item-level bootstrap calls ~15-20% of these significant


# --------------------------------------------------------------------------- power
def test_a_planted_overfitting_peak_is_found_at_the_demo_size() -> None:
    rng = np.random.default_rng(3)
    found = sum(
        diagnose(cal.simulate(rng, cal.peak(0.04)), final_epoch=10, settings=replace(FAST, seed=r)).code
        == "overfitting"
        for r in range(40)
    )
    assert found / 40 >= 0.9


def test_a_planted_winner_is_found_with_the_seeds_the_recommendation_asks_for() -> None:
    lead = cal.best_cell(0.06)
    small = outcomes(30, lead, seed=4, prompts=3, seeds=4)
    assert small["beats"] < 0.5  # 4 seeds per prompt is too few to call this winner reliably ...
    need = int(np.median(small["asked"]))
    assert 4 < need <= 16  # ... and the recommendation says roughly how many would do
    big = outcomes(60, lead, seed=5, prompts=3, seeds=need)
    assert big["beats"] >= 0.7  # sized for 80% power


# --------------------------------------------------------------------------- what a sweep cannot tell
def test_a_partial_sweep_does_not_claim_no_retrain() -> None:
    # Flat, and without image noise so the verdict cannot hinge on a lucky draw.
    flat = {"interaction_sd": 0.0, "noise": 0.0}
    images = cal.simulate(np.random.default_rng(6), epochs=(1, 2), **flat)
    rec = recommend_from_images(images, final_epoch=10, settings=FAST)
    assert rec.diagnosis.code == "partial_sweep" and rec.retrain is None
    assert "3-10" in rec.diagnosis.sentence
    md = rec.to_markdown()
    assert "No retrain needed" not in md and "no retrain needed" not in md
    assert "Not decided yet" in md
    # The whole run swept: the same flat scores are a plain no-retrain verdict.
    full = recommend_from_images(
        cal.simulate(np.random.default_rng(6), **flat), final_epoch=10, settings=FAST
    )
    assert full.diagnosis.code in ("sweet_spot", "final_best") and "No retrain needed." in full.to_markdown()


def test_an_overfitting_call_on_a_partial_sweep_names_the_unswept_epochs() -> None:
    images = cal.simulate(np.random.default_rng(7), cal.peak(0.08, at=3), epochs=tuple(range(1, 8)))
    diag = diagnose(images, final_epoch=10, settings=FAST)
    assert diag.code == "overfitting"
    partial = next(f for f in diag.findings if f.code == "partial_sweep")
    assert partial.evidence["unswept"] == [8, 10]


def test_few_prompts_and_seeds_are_named_in_the_recommendation() -> None:
    images = cal.simulate(np.random.default_rng(8), prompts=3, seeds=2)  # the demo: 6 items
    rec = recommend_from_images(images, final_epoch=10, settings=FAST)
    assert rec.intervals["prompt_level"] is False and rec.intervals["df"] == 3
    md = rec.to_markdown()
    assert "speaks for these prompts only" in md and "3 prompts x 2 seeds" in md
    assert "simultaneous over the best against each of the other 29" in md
    many = recommend_from_images(cal.simulate(np.random.default_rng(8), prompts=6), settings=FAST)
    assert many.intervals["prompt_level"] is True and many.intervals["df"] == 5
    assert not any("these prompts only" in c for c in many.intervals["caveats"])


# --------------------------------------------------------------------------- the machinery
def test_resampling_draws_prompts_then_keeps_their_seeds_or_seeds_within_fixed_prompts() -> None:
    prompts = np.repeat(["a", "b", "c", "d", "e", "f"], 4)
    two = resampling(prompts, AnalysisConfig(n_boot=200, min_prompts=5))
    w = two.weights.reshape(200, 6, 4)
    assert two.two_level and (w == w[:, :, :1]).all()  # a drawn prompt brings all its seeds
    assert (w.sum(axis=(1, 2)) == 24).all() and (w[:, :, 0] == 0).any()  # some prompts left out
    fixed = resampling(prompts[:12], AnalysisConfig(n_boot=200, min_prompts=5))
    w = fixed.weights.reshape(200, 3, 4)
    assert not fixed.two_level and (w.sum(axis=2) == 4).all()  # every prompt kept, seeds drawn
    assert (w != w[:, :, :1]).any()
    assert (fixed.df, two.df) == (9, 5)
