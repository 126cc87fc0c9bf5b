"""The analysis over sweep axes beyond epoch x guidance (LoRA strength, `lora_scale`): every
combination ranked, each axis's effect found, the epoch trend marginalised over the others.

Core logic is tested on constructed image tables; the report test uses a real MLflow store;
none of these needs the demo pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis.diagnosis import diagnose
from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.analysis.statistics import compare_combinations, marginal, rank_combinations
from bespoke_exp.config.schema import AnalysisConfig

PROMPTS, SEEDS = ("p1", "p2", "p3"), range(4)
FAST = AnalysisConfig(n_boot=400)


def images3(lora=lambda s: 0.0, epochs=range(1, 7), guidances=(5.0, 7.5), scales=(0.6, 0.8, 1.0), seed=0):
    """One row per image over epoch x guidance x lora_scale: a peak at epoch 4 plus `lora(scale)`,
    a shared item effect (prompt difficulty) and noise."""
    rng = np.random.default_rng(seed)
    items = [(p, s) for p in PROMPTS for s in SEEDS]
    effect = dict(zip(items, rng.normal(0.0, 0.05, len(items))))
    rows = []
    for e in epochs:
        for g in guidances:
            for scale in scales:
                for p, s in items:
                    score = 0.75 - 0.02 * (e - 4) ** 2 + lora(scale) + effect[p, s] + rng.normal(0, 0.01)
                    rows.append(
                        {
                            "run_id": f"run-e{e}-g{g}-s{scale}",
                            "epoch": e,
                            "guidance": g,
                            "lora_scale": scale,
                            "prompt_id": p,
                            "split": "heldout",
                            "seed": s,
                            "checkpoint": f"lora-{e:06d}.safetensors",
                            "score": score,
                        }
                    )
    return pd.DataFrame(rows)


def codes(diag) -> list[str]:
    return [f.code for f in diag.findings]


def finding(diag, code: str):
    return next(f for f in diag.findings if f.code == code)


# --------------------------------------------------------------------------- analysis over 3 axes
def test_a_three_axis_sweep_ranks_every_combination_and_finds_the_best_lora_scale() -> None:
    images = images3(lora={0.6: -0.10, 0.8: 0.0, 1.0: -0.08}.get)
    rec = recommend_from_images(images, final_epoch=6, settings=FAST)
    assert rec.axes == ["epoch", "guidance", "lora_scale"]
    assert (rec.best["epoch"], rec.best["lora_scale"]) == (4, 0.8)
    assert len(rec.ranking) == 6 * 2 * 3 and {r["lora_scale"] for r in rec.ranking} == {0.6, 0.8, 1.0}
    # The ranking's means are each combination's own, not pooled over lora_scale.
    expect = images.groupby(["epoch", "guidance", "lora_scale"])["score"].mean()
    got = pd.DataFrame(rec.ranking).set_index(["epoch", "guidance", "lora_scale"])["mean"]
    assert got.sort_index().to_numpy() == pytest.approx(expect.to_numpy())
    assert rec.runner_up["lora_scale"] == 0.8  # the other guidance at the same strength: a tie
    md = rec.to_markdown()
    assert "Use epoch 4 at guidance" in md and ", lora_scale 0.8 (score" in md.splitlines()[2]
    assert "| rank | epoch | guidance | lora_scale | score |" in md
    assert [r["lora_scale"] for r in rec.by_axis["lora_scale"]] == [0.6, 0.8, 1.0]


def test_a_lora_scale_that_matters_is_reported_and_one_that_does_not_is_not() -> None:
    diag = diagnose(images3(lora={0.6: -0.12, 0.8: -0.03, 1.0: 0.0}.get), final_epoch=6, settings=FAST)
    f = finding(diag, "lora_scale_sensitive")
    assert f.evidence["best_lora_scale"] == 1.0 and f.evidence["spread"] == pytest.approx(0.12, abs=0.01)
    assert "LoRA strength (lora_scale) matters: 1 scores best" in f.sentence
    assert "guidance_insensitive" in codes(diag)  # guidance still gets its own finding
    flat = diagnose(images3(), final_epoch=6, settings=FAST)
    assert "lora_scale_insensitive" in codes(flat) and "lora_scale_sensitive" not in codes(flat)


def test_the_epoch_trend_marginalises_lora_scale() -> None:
    # At lora_scale 1.0 alone the peak would be epoch 6; averaged over strengths it is epoch 4.
    images = images3()
    images.loc[images.lora_scale == 1.0, "score"] += 0.03 * images.epoch
    diag = diagnose(images, final_epoch=6, settings=FAST)
    assert diag.code == "overfitting"
    ev = finding(diag, "overfitting").evidence
    expected = images.groupby("epoch")["score"].mean()  # balanced: the marginal is the plain mean
    assert ev["peak_epoch"] == int(expected.idxmax())
    assert ev["peak_score"] == pytest.approx(expected.max())
    by_epoch = marginal(images, by="epoch", settings=FAST)
    assert by_epoch["mean"].to_numpy() == pytest.approx(expected.to_numpy())


def test_a_constant_lora_scale_gives_exactly_the_two_axis_results() -> None:
    images = images3(scales=(1.0,))
    two = recommend_from_images(images.drop(columns="lora_scale"), final_epoch=6, settings=FAST).to_dict()
    constant = recommend_from_images(images, final_epoch=6, settings=FAST).to_dict()
    assert constant == two and constant["axes"] == ["epoch", "guidance"]
    assert "lora_scale" not in constant["best"]


def test_combinations_name_every_axis() -> None:
    images = images3(lora={0.6: -0.10, 0.8: 0.0, 1.0: 0.0}.get)
    worse = compare_combinations(images, (4, 5.0, 0.8), (4, 5.0, 0.6), settings=FAST)
    assert worse.significant and worse.diff == pytest.approx(0.10, abs=0.02)
    with pytest.raises(ValueError, match=r"\(epoch, guidance, lora_scale\)"):
        compare_combinations(images, (4, 5.0), (3, 5.0))
    with pytest.raises(ValueError, match=r"\(4, 5.0, 0.7\)"):
        compare_combinations(images, (4, 5.0, 0.7), (3, 5.0, 0.8))
    assert list(rank_combinations(images, settings=FAST).columns[:3]) == ["epoch", "guidance", "lora_scale"]


# --------------------------------------------------------------------------- report from MLflow
EPOCHS, SCALES, PX = (1, 2, 3), (0.5, 1.0), 96  # one guidance, 4 px per cell


def _picture(epoch: int, scale: float, prompt: str, seed: int) -> Image.Image:
    rng = np.random.default_rng([epoch, int(scale * 10), PROMPTS.index(prompt), seed])
    art = rng.integers(0, 256, (5, 3))[rng.integers(0, 5, (24, 24))].astype(np.uint8)
    return Image.fromarray(np.kron(art, np.ones((4, 4, 1), np.uint8)))


def _score(epoch: int, scale: float, prompt: str, seed: int) -> float:
    return 0.5 + 0.05 * epoch + (0.2 if scale == 0.5 else 0.0) + 0.01 * PROMPTS.index(prompt) + 0.002 * seed


@pytest.fixture()
def lora_sweep(tracking_uri, tmp_path) -> analysis.Sweep:
    """Real job runs as a sweep logs them: epoch x lora_scale, guidance 7.5, two prompts, two seeds."""
    tracker = tracking.connect(tracking_uri, "axes")
    tags = {tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-axes"}
    parent = tracking.start_run(tracker, "sweep s-axes", tags=tags)
    for epoch in EPOCHS:
        for scale in SCALES:
            run = tracking.start_run(
                tracker,
                f"epoch={epoch:02d} guidance=7.5 lora_scale={scale:g}",
                parent_run_id=parent,
                params={"metrics.cells": "24", "checkpoint.epochs": "3"},
                tags={
                    tracking.TAG_ROLE: "job",
                    "epoch": str(epoch),
                    "guidance": "7.5",
                    "lora_scale": f"{scale:g}",
                },
            )
            folder, rows = tmp_path / run, []
            folder.mkdir()
            for prompt in PROMPTS[:2]:
                for seed in (0, 1):
                    _picture(epoch, scale, prompt, seed).save(folder / f"{prompt}_seed{seed}.png")
                    rows.append(
                        {
                            "prompt_id": prompt,
                            "split": "",
                            "seed": seed,
                            "score": _score(epoch, scale, prompt, seed),
                        }
                    )
            tracking.log_artifacts(tracker, run, folder, "images")
            tracking.log_table(tracker, run, rows, "metrics/per_image.json")
            tracking.finish_run(tracker, run)
    return analysis.load_sweep(parent, tracking_uri=tracking_uri, experiment="axes")


def test_a_lora_scale_sweep_reports_every_axis_and_draws_the_best_plane(lora_sweep, tmp_path) -> None:
    assert lora_sweep.levels == {"lora_scale": [0.5, 1.0]}
    assert set(lora_sweep.runs["lora_scale"]) == set(lora_sweep.images["lora_scale"]) == {0.5, 1.0}
    out = tmp_path / "report"
    rec = analysis.report_sweep(lora_sweep, AnalysisConfig(n_boot=100), out_dir=out)
    assert (rec.best["epoch"], rec.best["guidance"], rec.best["lora_scale"]) == (3, 7.5, 0.5)
    assert list(pd.read_csv(out / "ranking.csv").columns[:3]) == ["epoch", "guidance", "lora_scale"]
    assert {"score_heatmap.png", "score_by_epoch.png", "comparison_p1.png", "best_seeds.png"} <= {
        p.name for p in out.iterdir()
    }
    parent = lora_sweep.tracker.client.get_run(lora_sweep.parent_run_id)
    assert parent.data.tags["best.lora_scale"] == "0.5" and parent.data.metrics["best/lora_scale"] == 0.5
    # The sliders and the per-guidance curve are the epoch plane at the best strength, named so.
    logged = tracking.logged_image_steps(lora_sweep.tracker, lora_sweep.parent_run_id)
    assert logged == {
        (f"{p}_seed{s}_g7.5_lora_scale0.5", e) for p in PROMPTS[:2] for s in (0, 1) for e in EPOCHS
    }
    history = lora_sweep.tracker.client.get_metric_history(lora_sweep.parent_run_id, "epoch_score/g7.5")
    at_best = [np.mean([_score(e, 0.5, p, s) for p in PROMPTS[:2] for s in (0, 1)]) for e in EPOCHS]
    assert sorted((m.step, m.value) for m in history) == [
        (e, pytest.approx(v)) for e, v in zip(EPOCHS, at_best)
    ]
    assert rec.plane_note() == " at lora_scale 0.5 (the best)"


# --------------------------------------------------------------------------- the sweep side
