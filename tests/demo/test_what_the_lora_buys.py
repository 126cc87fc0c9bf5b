"""What the LoRA buys, on the demo, against its oracle: the base model as epoch 0, the in-set
(training caption) prompts against the held-out ones, epoch by epoch. The demo was trained to
memorise its captions while it forgets how to draw new combinations (see README), so the
oracle's in-set accuracy rises with the epochs while its held-out accuracy falls, and on the
held-out prompts the base model's colours are as good as the best epoch's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from bespoke_exp.analysis import load_sweep
from bespoke_exp.config import compose_config
from bespoke_exp.demo.oracle import heldout_specs, inset_specs, oracle_accuracy
from tests.helpers import sqlite_uri

EPOCHS = (0, 1, 2, 10)


@pytest.mark.slow
def test_the_split_sweep_reads_in_set_held_out_and_the_base_as_the_oracle_does(tmp_path, demo_dir) -> None:
    uri = sqlite_uri(tmp_path / "mlruns")
    command = [
        *(sys.executable, "-m", "bespoke_exp", "-m", f"paths.demo={demo_dir}", f"tracking.uri={uri}"),
        *("tracking.experiment=lora_value", f"hydra.sweep.dir={tmp_path / 'sweep'}"),
        *(f"epoch={','.join(map(str, EPOCHS))}", "guidance=1.5", "prompts=demo_split"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = load_sweep(tracking_uri=uri, experiment="lora_value")
    images = _with_oracle(sweep, uri, tmp_path / "images")
    assert len(images) == len(EPOCHS) * 8 * 2 and set(images["split"]) == {"train", "heldout"}
    rec = json.loads(
        Path(
            MlflowClient(uri).download_artifacts(
                sweep.parent_run_id, "report/recommendation.json", str(tmp_path)
            )
        ).read_text()
    )
    value = rec["lora_value"]

    # In-set and held-out by epoch: the harness's trends point the way the oracle's do.
    oracle = images[images["epoch"] > 0].groupby(["split", "epoch"])["oracle"].mean()
    harness = {row["epoch"]: row for row in value["splits"]}
    assert sorted(harness) == [1, 2, 10]
    for key, split in (("in_set", "train"), ("held_out", "heldout")):
        for early, late in ((1, 10), (2, 10)):
            truth = np.sign(oracle[split, late] - oracle[split, early])
            assert np.sign(harness[late][key] - harness[early][key]) == truth, (
                key,
                early,
                late,
                oracle,
                harness,
            )
    assert oracle["train", 10] > oracle["train", 1] and oracle["heldout", 10] < oracle["heldout", 2]
    assert harness[10]["gap"] > harness[1]["gap"] and harness[10]["significant"]
    assert "generalisation_gap" in {f["code"] for f in rec["diagnosis"]["findings"]}

    # The ranking and the baseline use the held-out prompts; the base is never the pick.
    assert rec["best"]["epoch"] != 0 and "held-out prompts" in rec["ranked_on"]
    held_out = images[images["split"] == "heldout"].pivot_table("oracle", ["prompt_id", "seed"], "epoch")
    best = int(rec["best"]["epoch"])
    oracle_beats_base = _paired_lower_bound(held_out[best] - held_out[0]) > 0
    adherence = next(r for r in value["baseline"] if r["epoch"] == best and r["family"] == "adherence")
    assert adherence["significant"] == oracle_beats_base, (adherence, held_out.mean())
    buys = next(f for f in value["findings"] if f["code"].endswith("gain_over_base"))
    assert ("adherence" in buys["evidence"]["improves"]) == oracle_beats_base, buys


def _paired_lower_bound(differences: pd.Series, confidence: float = 0.95) -> float:
    """One-sided bootstrap bound on the mean of paired differences."""
    values = differences.to_numpy(float)
    means = np.random.default_rng(0).choice(values, size=(10000, len(values))).mean(axis=1)
    return float(np.quantile(means, 1 - confidence))


def _with_oracle(sweep, uri: str, download: Path) -> pd.DataFrame:
    """Every image scored by the oracle against the portrait its prompt names."""
    items = compose_config(["prompts=demo_split"]).prompts["items"]
    specs = dict(zip((i["id"] for i in items if i["id"].startswith("heldout")), heldout_specs(4)))
    specs |= dict(zip((i["id"] for i in items if i["id"].startswith("inset")), inset_specs(4)))
    client, rows = MlflowClient(uri), []
    for row in sweep.images.itertuples():
        path = client.download_artifacts(
            row.run_id, f"images/{row.prompt_id}_seed{row.seed}.png", str(download)
        )
        rows.append(
            {
                **{k: getattr(row, k) for k in ("epoch", "prompt_id", "seed", "split", "score")},
                "oracle": oracle_accuracy(Image.open(path).convert("RGB"), specs[row.prompt_id]),
            }
        )
    return pd.DataFrame(rows)
