"""The embedded demo: trained for real, reproducibly, and judged by an oracle that renders
the exact portrait each held-out prompt asks for, independent of the harness's metrics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import torch
from mlflow import MlflowClient
from PIL import Image
from safetensors import safe_open

from bespoke_exp.analysis import load_sweep
from bespoke_exp.analysis.diagnosis import Thresholds
from bespoke_exp.config import compose_config
from bespoke_exp.demo import punks
from bespoke_exp.demo.base_training import BaseTraining, crisp_render, rough_render
from bespoke_exp.demo.build import ensure_demo, train_demo
from bespoke_exp.demo.oracle import heldout_specs, inset_specs, oracle_accuracy
from bespoke_exp.demo.training import LORA_STEM, DemoTraining, training_specs, write_training_set
from tests.helpers import SD_SCRIPTS_ARGUMENTS


def test_the_demo_prompt_set_is_the_oracles_heldout_specs() -> None:
    items = compose_config([]).prompts["items"]
    specs = heldout_specs(len(items))
    assert [item["text"] for item in items] == [punks.lora_caption(s) for s in specs]
    trained = {(s.background, s.hair, s.skin) for s in training_specs(DemoTraining())}
    assert not trained & {(s.background, s.hair, s.skin) for s in specs}


def test_the_demo_split_set_is_the_heldout_set_and_training_captions_word_for_word(tmp_path) -> None:
    """prompts=demo_split: demo.yaml's held-out four, then four of the LoRA's own captions (as
    the demo's training folder holds them), each the oracle's spec."""
    items = compose_config(["prompts=demo_split"]).prompts["items"]
    heldout = [(item["id"], item["text"]) for item in compose_config([]).prompts["items"]]
    assert [(item["id"], item["text"]) for item in items[: len(heldout)]] == heldout
    inset = [item["text"] for item in items[len(heldout) :]]
    assert inset == [punks.lora_caption(s) for s in inset_specs(len(inset))]
    write_training_set(tmp_path / "train", DemoTraining())
    captions = {p.read_text().strip() for p in (tmp_path / "train").rglob("*.txt")}
    assert len(inset) == 4 and set(inset) <= captions


def test_the_oracle_tells_the_asked_portrait_from_rough_and_wrong_ones() -> None:
    spec, other = heldout_specs()[:2]
    rng = np.random.default_rng(0)
    assert oracle_accuracy(crisp_render(spec), spec) == 1.0
    # a smooth, off-grid rendering of the right portrait: much is right, far from all
    rough = np.mean([oracle_accuracy(rough_render(spec, rng), spec) for _ in range(8)])
    assert 0.3 < rough < 0.9
    # another portrait: the figure's layout matches, its colours do not
    assert oracle_accuracy(crisp_render(other), spec) < 0.5
    assert oracle_accuracy(np.zeros((192, 192, 3), np.uint8), spec) < 0.1


def _sha256(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


def _contents(folder: Path) -> dict[str, tuple[dict, dict]]:
    """Every safetensors file's tensors and metadata. Not its bytes: safetensors writes the
    metadata in hash-map order, so two saves of the same content differ byte for byte."""
    contents = {}
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            contents[str(path.relative_to(folder))] = (tensors, handle.metadata())
    return contents


def test_training_the_demo_from_nothing_is_reproducible(tmp_path, monkeypatch) -> None:
    """`python -m bespoke_exp.demo --train` on a shortened schedule: the same code that
    trained the shipped weights, twice, to the same tensors and metadata."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    lora = DemoTraining(epochs=3, images=4, repeats=1, batch_size=2)
    roots = [train_demo(tmp_path / name, BaseTraining.smoke(), lora, log=lambda _: None) for name in "ab"]
    first, second = (_contents(root) for root in roots)
    assert first.keys() == second.keys()
    for name, (tensors, metadata) in first.items():
        assert metadata == second[name][1], name
        assert tensors.keys() == second[name][0].keys(), name
        assert all(torch.equal(tensors[k], second[name][0][k]) for k in tensors), name
    names = sorted(p.name for p in (roots[0] / "checkpoints").iterdir())
    assert names == [
        f"{LORA_STEM}-000001.safetensors",
        f"{LORA_STEM}-000002.safetensors",
        f"{LORA_STEM}.safetensors",
    ]
    metadata = first[f"checkpoints/{LORA_STEM}.safetensors"][1]
    assert metadata["ss_epoch"] == "3" and metadata["ss_steps"] == "6"  # 3 epochs x 4 images / 2
    assert metadata["ss_unet_lr"] == str(lora.learning_rate)
    assert metadata["ss_text_encoder_lr"] == str(lora.text_encoder_lr)
    assert metadata["ss_training_started_at"] == "2026-09-21T14:13:20"
    # The header says what the captions say: all four carry the trigger word, and only the
    # one after the first `captions_without_background` names a background.
    captions = [p.read_text() for p in sorted((roots[0] / "train" / "1_bespoke").glob("*.txt"))]
    assert [" background" in c for c in captions] == [False, False, False, True]
    tags = json.loads(metadata["ss_tag_frequency"])["1_bespoke"]
    assert tags["bespoke"] == 4
    assert sum(n for tag, n in tags.items() if tag.endswith(" background")) == 1


def test_building_the_demo_twice_gives_the_same_checkpoints(tmp_path) -> None:
    first, second = (_sha256(ensure_demo(tmp_path / name)) for name in "ab")
    assert first == second and len(first) == 10 + 4  # ten epochs, unet, vae, two text encoders


@pytest.mark.slow
def test_the_readme_sweep_finds_the_overfitting_the_demo_was_trained_into(tmp_path, demo_dir) -> None:
    """The README's demo sweep end to end (generation -> recovered grid -> metrics -> ranking
    -> diagnosis), checked against the oracle's cell accuracy on the very images it logged:
    the demo LoRA is under-trained at epoch 1, best soon after, and overfit by the end."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [
        *(sys.executable, "-m", "bespoke_exp", "-m", f"paths.demo={demo_dir}", f"tracking.uri={uri}"),
        *("tracking.experiment=oracle", f"hydra.sweep.dir={tmp_path / 'sweep'}"),
        *("epoch=1,2,...,10", "guidance=1,1.5,2"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = load_sweep(tracking_uri=uri, experiment="oracle")
    images = _with_oracle(sweep, uri, tmp_path / "images")
    prompts = len(compose_config([]).prompts["items"])
    assert len(images) == 10 * 3 * prompts * 2
    oracle = images.pivot_table("oracle", index=["prompt_id", "seed", "guidance"], columns="epoch")
    score = images.pivot_table("score", index=["prompt_id", "seed", "guidance"], columns="epoch")
    peak = int(oracle.mean().idxmax())
    # The trajectory the demo was trained into, by the oracle and by the harness's score:
    # epoch 1 and epoch 10 both worse than the oracle's peak, beyond noise (paired over the
    # same prompt, seed and guidance).
    assert 1 < peak < 10, oracle.mean()
    for table in (oracle, score):
        assert _paired_lower_bound(table[peak] - table[1]) > 0, table.mean()
        assert _paired_lower_bound(table[peak] - table[10]) > 0, table.mean()
    assert images[["oracle", "score"]].corr().iloc[0, 1] > 0.5
    recommendation = json.loads(
        Path(
            MlflowClient(uri).download_artifacts(
                sweep.parent_run_id, "report/recommendation.json", str(tmp_path)
            )
        ).read_text()
    )
    diagnosis, best = recommendation["diagnosis"], recommendation["best"]
    assert diagnosis["code"] == "overfitting", diagnosis["sentence"]
    assert abs(best["epoch"] - peak) <= 1, (best, oracle.mean())
    assert best["mean"] > Thresholds().poor + 0.05, best
    retrain = recommendation["retrain"]
    assert retrain["action"] == "fewer_epochs" and abs(retrain["epochs"] - peak) <= 1, retrain
    _the_next_run_is_the_recorded_one_for_fewer_epochs(uri, demo_dir, retrain["epochs"])
    # The trainer's loss, still falling, beside the held-out score that peaked (dashboard histories).
    client = MlflowClient(uri)
    loss = {m.step: m.value for m in client.get_metric_history(sweep.parent_run_id, "epoch_training/loss")}
    score = {
        m.step: m.value
        for m in client.get_metric_history(sweep.parent_run_id, "epoch_training/held-out_score")
    }
    assert sorted(loss) == sorted(score) == list(range(1, 11))
    assert loss[10] < loss[best["epoch"]] < loss[1] and max(score, key=score.get) == best["epoch"]
    assert recommendation["training_curve"]["sentence"].startswith("Training curve (loss/epoch_average)")


def _the_next_run_is_the_recorded_one_for_fewer_epochs(uri: str, demo_dir: Path, epochs: int) -> None:
    """`python -m bespoke_exp.retrain` prints an sd-scripts config: every key one of its
    arguments, the epoch count the advice's, every other value the checkpoint header's."""
    done = subprocess.run(
        [sys.executable, "-m", "bespoke_exp.retrain", "--tracking-uri", uri], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    args = {k: v for section in tomllib.loads(done.stdout).values() for k, v in section.items()}
    assert set(args) <= SD_SCRIPTS_ARGUMENTS, set(args) - SD_SCRIPTS_ARGUMENTS
    assert args["max_train_epochs"] == epochs and args["save_every_n_epochs"] == 1
    with safe_open(str(demo_dir / "checkpoints" / f"{LORA_STEM}.safetensors"), "pt") as handle:
        header = handle.metadata()
    recorded = {
        "learning_rate": float(header["ss_learning_rate"]),
        "unet_lr": float(header["ss_unet_lr"]),
        "text_encoder_lr": float(header["ss_text_encoder_lr"]),
        "network_dim": int(header["ss_network_dim"]),
        "network_alpha": int(header["ss_network_alpha"]),
        "network_module": header["ss_network_module"],
        "lr_scheduler": header["ss_lr_scheduler"],
        "lr_warmup_steps": int(header["ss_lr_warmup_steps"]),
        "train_batch_size": int(header["ss_batch_size_per_device"]),
        "seed": int(header["ss_seed"]),
        "caption_dropout_rate": float(header["ss_caption_dropout_rate"]),
        "mixed_precision": header["ss_mixed_precision"],
        "resolution": header["ss_resolution"].strip("()").replace(" ", ""),
        "output_name": header["ss_output_name"],
        "cache_latents": header["ss_cache_latents"] == "True",
        "zero_terminal_snr": header["ss_zero_terminal_snr"] == "True",
        "optimizer_type": header["ss_optimizer"].rsplit(".", 1)[-1],
        "network_train_unet_only": float(header["ss_text_encoder_lr"]) == 0,
    }
    assert {k: args[k] for k in recorded} == recorded
    unrecorded = {"pretrained_model_name_or_path", "train_data_dir", "output_dir"}
    assert all(args[k].startswith("<FILL IN") for k in unrecorded)
    assert set(args) == {*recorded, *unrecorded, "max_train_epochs", "save_every_n_epochs", "save_model_as"}


def _paired_lower_bound(differences: pd.Series, confidence: float = 0.95) -> float:
    """One-sided bootstrap bound on the mean of paired differences."""
    rng = np.random.default_rng(0)
    values = differences.to_numpy(float)
    means = rng.choice(values, size=(10000, len(values))).mean(axis=1)
    return float(np.quantile(means, 1 - confidence))


def _with_oracle(sweep, uri: str, download: Path) -> pd.DataFrame:
    """Every generated image scored by the oracle, beside the harness's own score."""
    items = compose_config([]).prompts["items"]
    client, specs = MlflowClient(uri), dict(zip((item["id"] for item in items), heldout_specs(len(items))))
    rows = []
    for row in sweep.images.itertuples():
        name = f"images/{row.prompt_id}_seed{row.seed}.png"
        path = client.download_artifacts(row.run_id, name, str(download / row.run_id))
        accuracy = oracle_accuracy(Image.open(path).convert("RGB"), specs[row.prompt_id])
        rows.append(
            {
                **{k: getattr(row, k) for k in ("epoch", "guidance", "prompt_id", "seed", "score")},
                "oracle": accuracy,
            }
        )
    return pd.DataFrame(rows)
