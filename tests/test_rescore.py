"""Rescoring a sweep composes its config as the sweep did (its own config folders included),
never registers a champion the sweep itself could not, and refuses, before writing anything,
when the images it would score are gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp import analysis
from bespoke_exp.sweep.rescore import rescore
from tests.conftest import small_sweep_command
from tests.test_untrusted_input import SECRET, user_prompts

STEM = "Bespoke_Punks_24x24_Pixel_Art"


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
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
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
