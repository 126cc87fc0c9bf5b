"""`python -m bespoke_exp.confirm`: the contending combinations run again with new seeds, paired,
as jobs of the same sweep, and the ranking is redone on every seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from bespoke_exp.analysis import load_sweep
from tests.helpers import small_sweep_command, sqlite_uri


@pytest.mark.slow
def test_confirm_adds_paired_new_seeds_to_the_sweep_and_ranks_on_every_seed(tmp_path, demo_dir) -> None:
    uri = sqlite_uri(tmp_path)
    # One seed per prompt leaves no seed noise to measure: no interval, so both epochs contend.
    sweep = small_sweep_command(
        demo_dir, "epoch=1,2", "guidance=1.5", "sampler.seeds=[0]", f"tracking.uri={uri}"
    )
    done = subprocess.run(
        [*sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    before = load_sweep(tracking_uri=uri)
    ranked_before = _ranked_items(MlflowClient(uri), before.parent_run_id, tmp_path / "before")
    command = [sys.executable, "-m", "bespoke_exp.confirm", "--tracking-uri", uri, "--max-rounds", "1"]
    confirmed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert confirmed.returncode == 0, confirmed.stderr[-3000:]
    assert "Before: The epoch is not settled: epoch" in confirmed.stdout, confirmed.stdout

    after = load_sweep(tracking_uri=uri)
    assert after.parent_run_id == before.parent_run_id and after.incomplete() is None
    new = after.images[~after.images["run_id"].isin(before.images["run_id"])]
    assert len(new) == 2 * 3  # both epochs x 3 prompts x one new seed
    assert set(new["seed"]) == {1}  # a seed the sweep never used
    per_epoch = new.groupby("epoch")["prompt_id"].apply(sorted)
    assert per_epoch.loc[1] == per_epoch.loc[2]  # the same prompts at the same seed: paired
    client = MlflowClient(uri)
    rounds = json.loads(
        open(client.download_artifacts(after.parent_run_id, "confirm/rounds.json", str(tmp_path))).read()
    )
    (run,) = rounds["runs"]
    assert [r["images"] for r in run["rounds"]] == [6]
    assert run["outcome"] in ("max_rounds", "settled", "equivalent")
    assert "Stopped: " in confirmed.stdout and run["after"] in confirmed.stdout
    # The report was redone on every seed: twice the items for each epoch.
    assert _ranked_items(client, after.parent_run_id, tmp_path / "after") == [2 * n for n in ranked_before]


def _ranked_items(client: MlflowClient, parent: str, folder) -> list[int]:
    recommendation = client.download_artifacts(parent, "report/recommendation.json", str(folder))
    return [row["n_items"] for row in json.loads(open(recommendation).read())["ranking"]]
