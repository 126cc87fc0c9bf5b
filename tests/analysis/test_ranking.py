"""analysis statistics, diagnosis and recommendation: bootstrap ranking, paired comparisons
and the diagnosis rules on constructed sweeps."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bespoke_exp.analysis.diagnosis import diagnose
from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.analysis.statistics import NEAR_COPY, compare_combinations, marginal, rank_combinations
from bespoke_exp.config.schema import AnalysisConfig, Thresholds

GUIDANCE = (5.0, 7.5, 10.0)
PROMPTS = {"p_train": "train", "p_held1": "heldout", "p_held2": "heldout"}
SEEDS = range(4)
B = 500  # bootstrap replicates: enough for stable 95% bounds on these tables, and fast
FAST = AnalysisConfig(n_boot=B)


def sweep(
    curve: Callable[[int], float],
    guidance: Callable[[float], float] = lambda g: 0.0,
    *,
    epochs=range(1, 11),
    split_effect: Callable[[int, str], float] = lambda e, s: 0.0,
    near_copy: Callable[[int], float] | None = None,
    noise: float = 0.01,
    item_sd: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per image: score = curve(epoch) + guidance term + split term + item effect + noise.

    The item effect (per prompt and seed, shared by every combination) models prompt difficulty:
    paired comparisons should cancel it.
    """
    rng = np.random.default_rng(seed)
    items = [(p, s) for p in PROMPTS for s in SEEDS]
    effect = dict(zip(items, rng.normal(0.0, item_sd, len(items))))
    rows = []
    for e in epochs:
        for g in GUIDANCE:
            for k, (p, s) in enumerate(items):
                row = {
                    "run_id": f"run-e{e}-g{g}",
                    "epoch": e,
                    "guidance": g,
                    "prompt_id": p,
                    "split": PROMPTS[p],
                    "seed": s,
                    "checkpoint": f"lora-{e:06d}.safetensors",
                    "score": curve(e)
                    + guidance(g)
                    + split_effect(e, PROMPTS[p])
                    + effect[(p, s)]
                    + rng.normal(0.0, noise),
                    "grid/purity": 0.9,
                }
                if near_copy is not None:  # deterministic: the first round(rate * n) items are copies
                    row[NEAR_COPY] = float(k < round(near_copy(e) * len(items)))
                rows.append(row)
    return pd.DataFrame(rows)


def peak6(e: int) -> float:
    return 0.75 - 0.015 * (e - 6) ** 2


def rising(e: int) -> float:
    return 0.40 + 0.04 * e


def sweet(e: int) -> float:  # rises to epoch 6, then a decline far smaller than the noise
    return 0.50 + 0.04 * min(e, 6) - 0.0005 * max(e - 6, 0)


def codes(diag) -> list[str]:
    return [f.code for f in diag.findings]


def finding(diag, code: str):
    return next(f for f in diag.findings if f.code == code)


# --------------------------------------------------------------------------- scenarios
def test_clear_peak_at_epoch_6_is_overfitting_and_suggests_six_epochs() -> None:
    rec = recommend_from_images(sweep(peak6, lambda g: -abs(g - 7.5) * 0.01), final_epoch=10, settings=FAST)
    assert (rec.best["epoch"], rec.best["guidance"]) == (6, 7.5)
    assert rec.best["checkpoint"] == "lora-000006.safetensors"
    assert rec.diagnosis.code == "overfitting" and codes(rec.diagnosis)[0] == "overfitting"
    assert rec.retrain.action == "fewer_epochs" and rec.retrain.epochs == 6
    ev = finding(rec.diagnosis, "overfitting").evidence
    assert ev["peak_epoch"] == 6 and ev["last_epoch"] == 10
    assert ev["ci_low"] > 0 and ev["drop"] == pytest.approx(0.015 * 16, abs=0.01)


@pytest.mark.parametrize("final_epoch", [10, None])
def test_still_rising_at_the_final_epoch_is_undertrained(final_epoch) -> None:
    rec = recommend_from_images(sweep(rising), final_epoch=final_epoch, settings=FAST)
    assert rec.best["epoch"] == 10
    assert rec.diagnosis.code == "undertrained"
    assert rec.retrain.action == "more_epochs" and rec.retrain.epochs > 10


def test_still_rising_before_the_trainers_last_epoch_asks_to_sweep_the_rest() -> None:
    images = sweep(rising, epochs=range(1, 9))
    diag = diagnose(images, final_epoch=10, settings=FAST)
    assert diag.code == "still_improving" and diag.retrain is None
    assert "9-10" in diag.sentence
    with pytest.raises(ValueError, match="final_epoch=6"):
        diagnose(images, final_epoch=6, settings=FAST)


def test_flat_and_poor_says_check_the_data() -> None:
    rec = recommend_from_images(sweep(lambda e: 0.30), final_epoch=10, settings=FAST)
    assert rec.diagnosis.code == "poor_overall" and codes(rec.diagnosis)[0] == "poor_overall"
    assert rec.retrain.action == "check_data"
    assert finding(rec.diagnosis, "poor_overall").evidence["best_score"] < 0.5
    assert "none is good enough" in rec.to_markdown()


def test_widening_heldout_gap_is_a_finding_with_its_numbers() -> None:
    gap = lambda e, s: 0.02 * e if s == "train" else -0.01 * e  # noqa: E731
    diag = diagnose(sweep(sweet, split_effect=gap), final_epoch=10, settings=FAST)
    ev = finding(diag, "generalisation_gap").evidence
    assert ev["slope"] == pytest.approx(0.03, abs=0.005)
    assert ev["late_gap"] == pytest.approx(0.30, abs=0.03) and ev["epochs"] == list(range(1, 11))
    assert ev["gap"][-1] > ev["gap"][0]
    assert ev["n_train_prompts"] == 1 and ev["n_heldout_prompts"] == 2
    # A constant gap (held-out prompts simply harder) is not a widening one.
    constant = diagnose(sweep(sweet, split_effect=lambda e, s: 0.1 if s == "train" else 0.0), settings=FAST)
    assert "generalisation_gap" not in codes(constant)


def test_sweet_spot_within_noise_needs_no_retrain() -> None:
    diag = diagnose(sweep(sweet, noise=0.03), final_epoch=10, settings=FAST)
    assert diag.code == "sweet_spot" and diag.retrain is None
    ev = finding(diag, "sweet_spot").evidence
    assert ev["peak_epoch"] < 10 and ev["last_epoch"] == 10
    assert ev["ci_low"] <= 0 <= ev["ci_high"]


def test_plateau_at_the_last_epoch_is_final_best_unless_any_gain_counts() -> None:
    # Epoch 10 is 0.005 above a plateau: real (tiny noise) but below min_effect.
    images = sweep(lambda e: 0.4 + 0.05 * min(e, 8) + 0.005 * (e == 10), noise=0.005)
    diag = diagnose(images, final_epoch=10, settings=FAST)
    assert diag.code == "final_best" and diag.retrain is None
    assert finding(diag, "final_best").evidence["ref_epoch"] == 8
    strict = diagnose(images, final_epoch=10, settings=replace(FAST, thresholds=Thresholds(min_effect=0.0)))
    assert strict.code == "undertrained"


def test_rising_near_copies_are_flagged_by_epoch() -> None:
    images = sweep(sweet, near_copy=lambda e: max(0.0, (e - 5) * 0.1))  # 0.3, 0.4, 0.5 at epochs 8-10
    diag = diagnose(images, final_epoch=10, settings=FAST)
    f = finding(diag, "memorisation")
    assert f.evidence["flagged_epochs"] == [8, 9, 10] and f.evidence["slope"] > 0
    assert "8, 9, 10" in f.sentence and "rising" in f.sentence
    assert diag.retrain.action == "fewer_epochs" and diag.retrain.epochs == 7  # sweet_spot sets none
    assert "memorisation" not in codes(diagnose(sweep(sweet, near_copy=lambda e: 0.0), settings=FAST))
    images[NEAR_COPY] = np.nan  # no training folder configured
    assert "memorisation" not in codes(diagnose(images, settings=FAST))


def test_guidance_sensitivity_names_the_best_guidance() -> None:
    diag = diagnose(sweep(peak6, {5.0: -0.10, 7.5: -0.04, 10.0: 0.0}.get), settings=FAST)
    f = finding(diag, "guidance_sensitive")
    assert f.evidence["best_guidance"] == 10.0 and "10 scores best" in f.sentence
    assert f.evidence["spread"] == pytest.approx(0.10, abs=0.01)
    assert "guidance_insensitive" in codes(diagnose(sweep(peak6), settings=FAST))


# --------------------------------------------------------------------------- comparisons
def test_best_does_not_beat_an_identical_runner_up_but_beats_a_worse_one() -> None:
    images = sweep(peak6, {5.0: -0.10, 7.5: 0.0, 10.0: 0.0}.get)  # 7.5 and 10 identical in expectation
    same = compare_combinations(images, (6, 7.5), (6, 10.0), settings=FAST)
    assert not same.significant and same.ci_low < 0 < same.ci_high
    worse = compare_combinations(images, (6, 7.5), (6, 5.0), settings=FAST)
    assert worse.significant and worse.diff == pytest.approx(0.10, abs=0.01)
    rec = recommend_from_images(images, settings=FAST)
    assert rec.best["epoch"] == 6 and rec.runner_up["epoch"] == 6
    assert not rec.beats_runner_up.significant and "does not beat the runner-up" in rec.to_markdown()


def test_comparison_is_paired_over_items() -> None:
    # Prompt difficulty (sd 0.2) dwarfs the 0.03 difference; only a paired bootstrap sees it.
    images = sweep(lambda e: 0.6 + 0.03 * (e == 6), item_sd=0.2, noise=0.005)
    cmp = compare_combinations(images, (6, 7.5), (5, 7.5), settings=FAST)
    assert cmp.significant and cmp.diff == pytest.approx(0.03, abs=0.01) and cmp.n_items == 12
    ranked = rank_combinations(images, settings=FAST).set_index(["epoch", "guidance"])
    assert ranked.loc[(6, 7.5), "ci_low"] < ranked.loc[(5, 7.5), "mean"]  # unpaired CIs overlap


def test_missing_items_are_compared_on_the_shared_ones() -> None:
    images = sweep(peak6)
    drop = (images.epoch == 6) & (images.guidance == 7.5) & (images.seed == 0)
    cmp = compare_combinations(images[~drop], (6, 7.5), (5, 7.5), settings=FAST)
    assert cmp.n_items == 9
    ranked = rank_combinations(images[~drop], settings=FAST).set_index(["epoch", "guidance"])
    assert ranked.loc[(6, 7.5), "n_items"] == 9 and ranked.loc[(5, 7.5), "n_items"] == 12


# --------------------------------------------------------------------------- ranking and marginals
def test_rank_combinations_is_sorted_with_cis_around_the_mean_and_seeded() -> None:
    images = sweep(peak6, noise=0.03)
    r = rank_combinations(images, settings=replace(FAST, seed=3))
    assert len(r) == 30 and list(r["rank"]) == list(range(1, 31))
    assert r["mean"].is_monotonic_decreasing
    assert ((r.ci_low <= r["mean"]) & (r["mean"] <= r.ci_high) & (r.ci_low < r.ci_high)).all()
    expect = images.groupby(["epoch", "guidance"])["score"].mean()
    got = r.set_index(["epoch", "guidance"])["mean"].sort_index()
    assert got.to_numpy() == pytest.approx(expect.to_numpy())
    assert list(r.columns[:4]) == ["epoch", "guidance", "run_id", "checkpoint"]
    pd.testing.assert_frame_equal(r, rank_combinations(images, settings=replace(FAST, seed=3)))
    assert not np.allclose(r.ci_low, rank_combinations(images, settings=replace(FAST, seed=4)).ci_low)


def test_lower_is_better_metrics_rank_lowest_first() -> None:
    # The registry says grid/aa_width is lower-is-better.
    images = sweep(peak6).assign(**{"grid/aa_width": lambda d: d.epoch + d.score})
    assert rank_combinations(images, settings=replace(FAST, metric="grid/aa_width")).iloc[0]["epoch"] == 1
    assert compare_combinations(
        images, (1, 7.5), (2, 7.5), settings=replace(FAST, metric="grid/aa_width")
    ).significant
    assert not compare_combinations(
        images, (2, 7.5), (1, 7.5), settings=replace(FAST, metric="grid/aa_width")
    ).significant
    assert (
        rank_combinations(images, higher_is_better=True, settings=replace(FAST, metric="grid/aa_width")).iloc[
            0
        ]["epoch"]
        == 10
    )


def test_marginals_average_the_other_factor() -> None:
    images = sweep(peak6, {5.0: -0.10, 7.5: 0.0, 10.0: -0.05}.get)
    by_e = marginal(images, by="epoch", settings=FAST)
    assert list(by_e.columns) == ["epoch", "mean", "ci_low", "ci_high", "n_items"]
    assert list(by_e.epoch) == list(range(1, 11)) and by_e.loc[by_e["mean"].idxmax(), "epoch"] == 6
    by_g = marginal(images, by="guidance", settings=FAST).set_index("guidance")
    assert by_g.loc[7.5, "mean"] - by_g.loc[5.0, "mean"] == pytest.approx(0.10, abs=0.01)
    with pytest.raises(ValueError, match="seed"):
        marginal(images, by="seed")


# --------------------------------------------------------------------------- output
def test_to_dict_is_plain_json() -> None:
    images = sweep(peak6, near_copy=lambda e: 0.0)
    images.loc[images.epoch == 3, "checkpoint"] = np.nan
    d = recommend_from_images(images, final_epoch=10, settings=FAST).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert {"best", "ranking", "diagnosis", "retrain"} <= set(d)
    assert set(d["diagnosis"]) == {"code", "sentence", "findings"}
    assert d["retrain"] == {"action": "fewer_epochs", "reason": d["retrain"]["reason"], "epochs": 6}
    assert type(d["best"]["epoch"]) is int and type(d["best"]["mean"]) is float
    assert {r["checkpoint"] for r in d["ranking"] if r["epoch"] == 3} == {None}
    assert (
        json.loads(json.dumps(recommend_from_images(sweep(sweet), settings=FAST).to_dict()))["retrain"]
        is None
    )


def test_markdown_headline_names_the_pick_and_its_ci() -> None:
    md = recommend_from_images(
        sweep(peak6, lambda g: -abs(g - 7.5) * 0.01), final_epoch=10, settings=FAST
    ).to_markdown()
    assert md.splitlines()[2].startswith("Use epoch 6 at guidance 7.5 (score 0.")
    assert "95% CI" in md and "beyond noise" in md and "fewer_epochs (epochs=6)" in md
    assert "| 1 | 6 | 7.5 |" in md


# --------------------------------------------------------------------------- bad input
def test_errors_name_the_problem() -> None:
    images = sweep(peak6, epochs=[1, 2])
    with pytest.raises(ValueError, match="empty"):
        rank_combinations(images.iloc[:0])
    with pytest.raises(ValueError, match=r"'prompt_id', 'seed'"):
        rank_combinations(images.drop(columns=["prompt_id", "seed"]))
    with pytest.raises(ValueError, match="adherence/pass_rate"):
        rank_combinations(images, settings=AnalysisConfig(metric="adherence/pass_rate"))
    with pytest.raises(ValueError, match="no/such"):
        rank_combinations(images.assign(**{"no/such": 1.0}), settings=AnalysisConfig(metric="no/such"))
    with pytest.raises(ValueError, match=r"\(3, 7.5\)"):
        compare_combinations(images, (1, 7.5), (3, 7.5))


def test_thresholds_change_the_verdict() -> None:
    images = sweep(lambda e: 0.60)
    assert diagnose(images, settings=FAST).code != "poor_overall"
    assert diagnose(images, settings=replace(FAST, thresholds=Thresholds(poor=0.7))).code == "poor_overall"
