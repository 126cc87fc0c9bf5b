"""Rescoring a sweep (`python -m bespoke_exp.rescore`) scores its images again without a pipeline,
composes its config as the sweep did (its own config folders included), never registers a champion
the sweep itself could not, and refuses, before writing anything, when the images it would score
are gone; `rank` finds a sweep in any experiment and ranks it with the settings it ran with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp import analysis, rank
from bespoke_exp.rescore import rescore
from tests.helpers import SECRET, STEM, small_sweep_command, sqlite_uri, user_prompts


@pytest.fixture()
def failed_sweep(tmp_path, demo_dir) -> tuple[str, str]:
    """A two-job sweep composed from a user's own config folder (`--config-dir`), with a prompt
    naming an environment variable, whose epoch 2 file is truncated: (tracking uri, sweep id)."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for epoch in (1, 2):
        shutil.copy(demo_dir / "checkpoints" / f"{STEM}-{epoch:06d}.safetensors", folder)
    broken = folder / f"{STEM}-000002.safetensors"
    broken.write_bytes(broken.read_bytes()[:1000])
    text = "bespoke, pixel art portrait, female, purple background, ${oc.env:BESPOKE_TEST_TOKEN}"
    conf = user_prompts(tmp_path / "my_conf", [{"id": "p1", "split": "heldout", "text": text}])
    uri = sqlite_uri(tmp_path)
    command = small_sweep_command(
        demo_dir,
        "prompts=mine",
        "checkpoint=folder",
        f"checkpoint.dir={folder}",
        "epoch=1,2",
        "guidance=1.5",
        "sampler.seeds=[0,1]",
        f"paths.root={tmp_path}",
        f"tracking.uri={uri}",
        "tracking.experiment=rescore",
    )
    command[3:3] = ["--config-dir", str(conf)]  # after `-m bespoke_exp`: Hydra's flags come first
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "BESPOKE_TEST_TOKEN": SECRET}
    )
    assert done.returncode == 1, done.stderr[-3000:]  # epoch 2 failed: no champion
    assert "requires torchvision" not in done.stderr  # a note the user can't act on is not shown
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rescore").experiment_id])
    sweep_id = next(r.data.tags["sweep_id"] for r in runs if r.data.tags.get("bespoke.role") == "sweep")
    job = next(r for r in runs if r.data.tags.get("epoch") == "1")
    assert job.info.status == "FINISHED"
    config = Path(client.download_artifacts(job.info.run_id, "config.yaml", str(tmp_path)))
    assert SECRET not in json.dumps(job.data.params) + config.read_text()
    assert job.data.params["prompts.items.p1.text"] == text
    assert not client.search_model_versions(f"name = '{STEM}'")
    return uri, sweep_id


@pytest.mark.slow
def test_rescore_composes_as_the_sweep_did_and_never_crowns_an_incomplete_sweep(failed_sweep, capsys) -> None:
    uri, sweep_id = failed_sweep
    new, rec = rescore(sweep_id, ["metrics.weights={grid/r2:0.3}"], tracking_uri=uri, experiment="rescore")
    assert "not registering a champion: sweep" in capsys.readouterr().out
    client = MlflowClient(uri)
    assert not client.search_model_versions(f"name = '{STEM}'")
    reread = analysis.load_sweep(new.parent_run_id, tracking_uri=uri, experiment="rescore")
    assert reread.status == "FINISHED" and reread.incomplete() == "only 1 of the sweep's 2 jobs finished"

    # The images a rescore reads are gone: it says which, and writes nothing.
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    for image in artifacts.rglob("p1_seed1.png"):
        image.unlink()
    parents_before = len(client.search_runs([new.tracker.experiment_id], "tags.`bespoke.role` = 'sweep'"))
    with pytest.raises(
        analysis.AnalysisError, match=r"no longer has 1 of its images in the store \(images/p1_"
    ):
        rescore(sweep_id, [], tracking_uri=uri, experiment="rescore")
    after = client.search_runs([new.tracker.experiment_id], "tags.`bespoke.role` = 'sweep'")
    assert len(after) == parents_before


@pytest.mark.slow
def test_rescore_and_rank_use_the_sweeps_own_store_settings(tmp_path, demo_dir, capsys) -> None:
    uri = sqlite_uri(tmp_path)
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
    capsys.readouterr()
    assert rank.main(["--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["diagnosis"]["code"] != "poor_overall"

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
