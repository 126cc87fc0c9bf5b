"""Two identities: images are reused when only the scoring changed, scores are recomputed
when the scoring changed, and everything is redone when the generation changed. Rescoring a
finished sweep needs no pipeline; `rank` finds sweeps in any experiment and ranks them with
the settings they ran with."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp.config import compose_config
from bespoke_exp.pixelart.colors import PROTOTYPES
from bespoke_exp.sweep.identity import TAG_GENERATION, TAG_SCORING
from bespoke_exp.sweep.job import run_job
from bespoke_exp.sweep.job_scores import make_scorer

PACKAGE = Path(__file__).resolve().parents[1] / "bespoke_exp"


def _run(cfg, run_id):
    return MlflowClient(cfg.tracking.uri).get_run(run_id)


def test_a_new_metric_weight_rescores_the_same_images_without_generating(small_cfg, tmp_path) -> None:
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    small_cfg.metrics.weights["grid/r2"] = 0.9
    second = run_job(small_cfg, output_dir=tmp_path / "b")
    assert second.status == "FINISHED" and second.run_id != first.run_id
    old, new = _run(small_cfg, first.run_id), _run(small_cfg, second.run_id)
    assert new.data.tags["images_from"] == first.run_id
    assert new.data.tags[TAG_GENERATION] == old.data.tags[TAG_GENERATION]
    assert new.data.tags[TAG_SCORING] != old.data.tags[TAG_SCORING]
    assert "time/generate_s" in old.data.metrics and "time/generate_s" not in new.data.metrics
    assert new.data.metrics["score"] != old.data.metrics["score"]
    for image in (tmp_path / "a" / "images").glob("*.png"):
        assert (tmp_path / "b" / "images" / image.name).read_bytes() == image.read_bytes()
    # The same scoring again: nothing to redo.
    assert run_job(small_cfg, output_dir=tmp_path / "c").status == "SKIPPED"


def test_a_generation_change_generates_again(small_cfg, tmp_path) -> None:
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    small_cfg.sampler.steps = 3
    second = run_job(small_cfg, output_dir=tmp_path / "b")
    new = _run(small_cfg, second.run_id)
    assert "images_from" not in new.data.tags and "time/generate_s" in new.data.metrics
    assert new.data.tags[TAG_GENERATION] != _run(small_cfg, first.run_id).data.tags[TAG_GENERATION]


def test_a_change_to_the_scoring_code_changes_the_scoring_identity(tmp_path) -> None:
    copy = tmp_path / "bespoke_exp"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "from bespoke_exp.sweep.identity import scoring_code_hash; print(scoring_code_hash())"

    def code_hash() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
            check=True,
        )
        return done.stdout.strip()

    before = code_hash()
    checks = copy / "scoring" / "checks.py"
    checks.write_text(checks.read_text().replace("MIN_R2 = 0.3", "MIN_R2 = 0.31"))
    assert code_hash() != before
    (copy / "analysis" / "report.py").write_text("# analysis code does not decide a score\n")
    assert code_hash() == code_hash()


def test_a_real_run_never_scores_against_the_demo_generator_palette() -> None:
    cfg = compose_config(["experiment=bespoke_civitai"])
    assert cfg.metrics.palette == "auto" and cfg.checkpoint.train_dir is None
    palette = {tuple(c) for c in make_scorer(cfg).settings["palette"]}
    named = {PROTOTYPES[n] for n in ("orange", "purple", "green", "black", "pink", "blue", "brown", "tan")}
    assert named <= palette  # the colours the seed prompts name ...
    assert PROTOTYPES["red"] not in palette and PROTOTYPES["yellow"] not in palette  # ... and no others


def test_with_training_images_the_palette_is_theirs(demo_dir) -> None:
    cfg = compose_config([f"paths.demo={demo_dir}"])
    scorer = make_scorer(cfg)
    assert np.array_equal(scorer.settings["palette"], np.unique(scorer.training.reshape(-1, 3), axis=0))


@pytest.mark.slow
def test_rescore_and_rank_use_the_sweeps_own_store_settings(tmp_path, demo_dir) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    common = [
        f"paths.demo={demo_dir}",
        f"paths.root={tmp_path}",
        f"tracking.uri={uri}",
        "sampler.steps=2",
        "sampler.seeds=[0]",
        "sampler.width=192",
        "sampler.height=192",
    ]
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "bespoke_exp",
            "-m",
            *common,
            "tracking.experiment=elsewhere",
            "sampler.negative_prompt='low quality, blurry'",  # a value with spaces must survive rescore
            "epoch=1,2",
            "analysis.thresholds.poor=0.01",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    # rank: no --experiment, and the sweep's own poor threshold (0.01), not the default (0.5).
    ranked = subprocess.run(
        [sys.executable, "-m", "bespoke_exp.rank", "--json", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    assert json.loads(ranked.stdout)["diagnosis"]["code"] != "poor_overall"

    rescored = subprocess.run(
        [sys.executable, "-m", "bespoke_exp.rescore", "--tracking-uri", uri, "metrics.weights={grid/r2:0.9}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert "Loading pipeline components" not in rescored.stderr  # no pipeline was loaded
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("elsewhere").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("bespoke.role") == "sweep"]
    new_parent = next(p for p in parents if "rescored_from" in p.data.tags)
    old_parent = next(p for p in parents if "rescored_from" not in p.data.tags)
    assert new_parent.info.status == "FINISHED" and new_parent.data.tags["diagnosis"]
    old_jobs = {
        r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == old_parent.info.run_id
    }
    new_jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == new_parent.info.run_id]
    assert len(new_jobs) == 2 and {r.data.tags["images_from"] for r in new_jobs} == set(old_jobs)
    for job in new_jobs:
        old = old_jobs[job.data.tags["images_from"]]
        assert "time/generate_s" not in job.data.metrics
        assert job.data.metrics["score"] != old.data.metrics["score"]
        assert job.data.params["metrics.weights.grid/r2"] == "0.9"
