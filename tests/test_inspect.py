"""Checkpoint intelligence: what a LoRA file is (family, rank, alpha, training settings), what
a folder of them holds (`python -m bespoke_exp.inspect`), and a LoRA of the wrong family
refused before the base model loads. Every file is a tiny real safetensors file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from bespoke_exp.config import CONF_DIR, compose_config
from bespoke_exp.generate import checkpoints
from bespoke_exp.generate.checkpoint_folder import format_inspection, inspect_checkpoints
from bespoke_exp.generate.checkpoints import (
    CheckpointError,
    file_sha256,
    lora_family,
    read_checkpoint,
    training_settings,
)
from bespoke_exp.inspect import main as inspect_main
from bespoke_exp.sweep.job import run_job

# Module names as trainers write them (a `.lora_down.weight` etc. is added per module).
SDXL_KOHYA = [  # kohya sd-scripts on SDXL: SGM UNet names, two text encoders
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
]
SD1_KOHYA = [
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
]
FLUX_KOHYA = [  # kohya's FLUX LoRAs also train CLIP-L under lora_te1_
    "lora_unet_double_blocks_0_img_attn_qkv",
    "lora_unet_single_blocks_37_linear1",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
]


def write_lora(
    path: Path,
    modules: list[str] = SDXL_KOHYA,
    *,
    rank: int = 4,
    alpha: float | None = 2.0,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """A kohya-format LoRA file with tiny random tensors (width 8)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in modules:
        tensors[f"{module}.lora_down.weight"] = torch.randn(rank, 8, generator=generator)
        tensors[f"{module}.lora_up.weight"] = torch.randn(8, rank, generator=generator)
        if alpha is not None:
            tensors[f"{module}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path), metadata=metadata)
    return path


def kohya_metadata(epoch: int, num_epochs: int = 5, **changes: str) -> dict[str, str]:
    """The header kohya's train_network writes (all strings), for epoch `epoch`."""
    metadata = {
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(num_epochs),
        "ss_steps": str(25 * epoch),
        "ss_max_train_steps": str(25 * num_epochs),
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_resolution": "(1024, 1024)",
        "ss_learning_rate": "0.0001",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_total_batch_size": "2",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_num_train_images": "50",
        "ss_cache_latents": "True",
        "ss_seed": "42",
        "ss_training_finished_at": str(1_700_000_000 + epoch),
        "ss_dataset_dirs": json.dumps({"10_bespoke": {"n_repeats": 10, "img_count": 5}}),
        "ss_tag_frequency": json.dumps(
            {"10_bespoke": {"TOK bespoke": 5, "pixel art": 5, "black pupils": 2, "blue background": 1}}
        ),
    }
    return {**metadata, **{f"ss_{key}": value for key, value in changes.items()}}


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A kohya run of 5 epochs with epoch 3's file missing."""
    folder = tmp_path / "run"
    folder.mkdir()
    for epoch in (1, 2, 4):
        write_lora(folder / f"Run-{epoch:06d}.safetensors", metadata=kohya_metadata(epoch), seed=epoch)
    write_lora(folder / "Run.safetensors", metadata=kohya_metadata(5), seed=5)
    return folder


# --- what a file is ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "family"),
    [
        ([f"{m}.lora_down.weight" for m in SDXL_KOHYA], "sdxl"),
        # diffusers-style UNet names, as the demo writes them, without text encoders
        (["lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_q.lora_down.weight"], "sdxl"),
        (["lora_unet_output_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight"], "sdxl"),
        (["unet.up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"], "sdxl"),
        ([f"{m}.lora_down.weight" for m in SD1_KOHYA], "sd1"),
        (["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight"], "sd1"),
        (["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v.lora_down.weight"], "sd1"),
        ([f"{m}.lora_down.weight" for m in FLUX_KOHYA], "flux"),
        (["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"], "flux"),
        (["lora_transformer_single_transformer_blocks_0_attn_to_q.lora_down.weight"], "flux"),
        (["lora_unet_time_embedding_linear_1.lora_down.weight"], "unknown"),
    ],
)
def test_lora_family_from_tensor_keys(keys, family):
    assert lora_family(keys)[0] == family


def test_a_family_the_keys_cannot_tell_comes_from_the_header():
    keys = ["lora_unet_time_embedding_linear_1.lora_down.weight"]
    family, evidence = lora_family(keys, {"ss_base_model_version": "sdxl_base_v1-0"})
    assert family == "sdxl" and "ss_base_model_version" in evidence


def test_rank_and_alpha_from_the_header_else_from_the_tensors(tmp_path):
    with_header = read_checkpoint(write_lora(tmp_path / "a.safetensors", rank=4, metadata=kohya_metadata(1)))
    assert (with_header.rank, with_header.alpha) == (4, 2.0)
    # No metadata: the most common lora_down rank (a conv module may have its own) and .alpha value.
    path = tmp_path / "b.safetensors"
    tensors = {}
    for index, rank in enumerate((8, 8, 16)):
        tensors[f"lora_unet_m{index}.lora_down.weight"] = torch.zeros(rank, 4)
        tensors[f"lora_unet_m{index}.lora_up.weight"] = torch.zeros(4, rank)
        tensors[f"lora_unet_m{index}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(tensors, str(path))
    bare = read_checkpoint(path)
    assert (bare.rank, bare.alpha, bare.metadata) == (8, 4.0, {})


def test_training_settings_are_the_whole_header_parsed_with_trigger_words():
    metadata = kohya_metadata(3)
    settings = training_settings(metadata)
    assert {key.removeprefix("ss_") for key in metadata} <= set(settings)
    assert settings["learning_rate"] == 0.0001 and settings["text_encoder_lr"] == 5e-05
    assert settings["total_batch_size"] == 2 and settings["cache_latents"] is True
    assert settings["resolution"] == "(1024, 1024)"
    assert settings["optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"
    assert settings["dataset_dirs"] == {"10_bespoke": {"n_repeats": 10, "img_count": 5}}
    # In every one of the folder's 5 captions: trigger words; in 2 of 5: not.
    assert settings["trigger_words"] == ["TOK bespoke", "pixel art"]
    assert json.loads(json.dumps(settings)) == settings  # plain data, ready to be written out


def test_a_file_without_metadata_has_no_settings_and_is_still_described(tmp_path):
    info = read_checkpoint(write_lora(tmp_path / "x.safetensors"))
    assert info.training == {} and info.family == "sdxl" and info.rank == 4 and info.ss_epoch is None


# --- what a folder holds ----------------------------------------------------------------


def test_a_folder_gets_kohya_epochs_and_names_the_gap(run_dir):
    inspection = inspect_checkpoints(run_dir)
    assert [(i.path.name, i.epoch) for i in inspection.checkpoints] == [
        ("Run-000001.safetensors", 1),
        ("Run-000002.safetensors", 2),
        ("Run-000004.safetensors", 4),
        ("Run.safetensors", 5),
    ]
    assert inspection.warnings == ["Run: no file for epoch 3 (of 1..5)"]
    shared = inspection.shared_settings()
    assert shared["optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit" and shared["network_dim"] == 4
    assert "steps" not in shared  # per epoch: a column, not a shared setting


def test_ss_epoch_disagreeing_with_the_name_is_a_warning(run_dir):
    write_lora(run_dir / "Run-000003.safetensors", metadata=kohya_metadata(4), seed=3)
    warnings = inspect_checkpoints(run_dir).warnings
    assert warnings == ["Run-000003.safetensors is epoch 3 by its name, but its header says ss_epoch=4"]


def test_mixed_ranks_families_settings_and_duplicates_are_named(run_dir):
    write_lora(run_dir / "Run-000003.safetensors", rank=8, metadata=kohya_metadata(3, network_dim="8"))
    write_lora(run_dir / "Other.safetensors", SD1_KOHYA, metadata=kohya_metadata(5, learning_rate="0.001"))
    shutil.copy(run_dir / "Run-000001.safetensors", run_dir / "Run-copy.safetensors")
    warnings = inspect_checkpoints(run_dir).warnings
    text = "\n".join(warnings)
    assert "mixed family in one folder: SDXL (6 files); SD1.x (Other.safetensors)" in text
    assert "mixed rank in one folder: 4 (6 files); 8 (Run-000003.safetensors)" in text
    assert "mixed learning_rate in one folder: 0.0001 (6 files); 0.001 (Other.safetensors)" in text
    sha = file_sha256(run_dir / "Run-000001.safetensors")[:12]
    assert f"same content (sha256 {sha}): Run-000001.safetensors, Run-copy.safetensors" in warnings


def test_a_folder_without_any_metadata_is_described_from_names_and_tensors(tmp_path):
    for seed, name in enumerate(("Plain-000001", "Plain-000002", "Plain")):
        write_lora(tmp_path / f"{name}.safetensors", rank=16, alpha=8.0, seed=seed)
    (tmp_path / "notes.ckpt").write_bytes(b"never read")
    inspection = inspect_checkpoints(tmp_path)
    assert [(i.epoch, i.rank, i.alpha, i.family) for i in inspection.checkpoints] == [
        (1, 16, 8.0, "sdxl"),
        (2, 16, 8.0, "sdxl"),
        (3, 16, 8.0, "sdxl"),  # the bare file: the final epoch, one past the numbered ones
    ]
    assert inspection.shared_settings() == {}
    assert inspection.warnings == ["pickle-based files not read (they can run code when loaded): notes.ckpt"]
    assert "training settings: none in the header" in format_inspection(inspection)


def test_unreadable_and_non_lora_files_are_warnings_not_failures(run_dir):
    (run_dir / "Broken.safetensors").write_bytes(b"not a safetensors file")
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(2, 2)}, str(run_dir / "Full.safetensors"))
    warnings = inspect_checkpoints(run_dir).warnings
    assert any(w.startswith(f"{run_dir / 'Broken.safetensors'} is not a readable") for w in warnings)
    assert "Full.safetensors holds no LoRA weights: not a LoRA file" in warnings


def test_one_file_is_inspected_alone_without_gap_warnings(run_dir):
    inspection = inspect_checkpoints(run_dir / "Run.safetensors")
    assert [(i.epoch, i.ss_epoch) for i in inspection.checkpoints] == [(5, 5)]
    assert inspection.warnings == []


def test_the_table_shows_every_file_and_the_shared_settings(run_dir):
    table = format_inspection(inspect_checkpoints(run_dir))
    row = next(line for line in table.splitlines() if line.startswith("5 "))
    assert row.split()[:2] == ["5", "Run.safetensors"] and "SDXL" in row.split()
    assert "lr_scheduler" in table and "cosine_with_restarts" in table
    assert "trigger_words" in table and "TOK bespoke, pixel art" in table
    assert "- Run: no file for epoch 3 (of 1..5)" in table


# --- the command ------------------------------------------------------------------------


def test_inspect_json_is_one_object_with_the_full_settings(run_dir, capsys):
    assert inspect_main([str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["epoch"] for c in data["checkpoints"]] == [1, 2, 4, 5]
    first = data["checkpoints"][0]
    assert first["family"] == "sdxl" and first["rank"] == 4 and first["alpha"] == 2.0
    assert first["sha256"] == hashlib.sha256((run_dir / "Run-000001.safetensors").read_bytes()).hexdigest()
    assert first["training"]["lr_scheduler"] == "cosine_with_restarts"
    assert data["warnings"] == ["Run: no file for epoch 3 (of 1..5)"]


@pytest.mark.parametrize("case", ["missing", "empty", "only_pickles"])
def test_inspect_exits_2_with_one_line_for_a_path_without_checkpoints(tmp_path, capsys, case):
    target = tmp_path / "nothing_here"
    if case != "missing":
        target.mkdir()
    if case == "only_pickles":
        (target / "Run.ckpt").write_bytes(b"x")
    assert inspect_main([str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(target) in error
    assert ("does not exist" if case == "missing" else "holds no .safetensors files") in error


def test_python_m_bespoke_exp_inspect_runs(run_dir):
    done = subprocess.run(
        [sys.executable, "-m", "bespoke_exp.inspect", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Run-000004.safetensors" in done.stdout and "no file for epoch 3" in done.stdout


# --- sha256 cached on disk ----------------------------------------------------------------


def test_sha256_is_cached_on_disk_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoints, "_SHA_CACHE", {})  # as a new process would start
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"first content")
    first = file_sha256(path)
    assert (
        json.loads((tmp_path / "cache" / "bespoke_exp" / "sha256.json").read_text())[str(path.resolve())][2]
        == first
    )
    stat = path.stat()
    path.write_bytes(b"other content")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(checkpoints, "_SHA_CACHE", {})
    assert file_sha256(path) == first  # size and mtime unchanged: the disk cache answers, no rehash
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path) == hashlib.sha256(b"other content").hexdigest()


# --- the family the base model takes ------------------------------------------------------


def test_every_model_config_takes_sdxl_loras_and_a_bad_family_is_refused():
    from bespoke_exp.sweep.validate import config_problems

    for model in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        assert compose_config([f"model={model}"]).model.family == "sdxl", model
    problems = config_problems(compose_config(["model.family=sd3"]))
    assert (
        "model.family='sd3' is not one of sdxl, sd1, flux (the LoRA family the base model takes)" in problems
    )


@pytest.mark.parametrize(("modules", "label"), [(SD1_KOHYA, "SD1.x"), (FLUX_KOHYA, "FLUX")])
def test_a_lora_of_another_family_fails_the_job_before_the_base_model_loads(tmp_path, modules, label):
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("Run-000001", "Run"):
        write_lora(folder / f"{name}.safetensors", modules, metadata=kohya_metadata(2, num_epochs=2))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(
        [
            "model=sdxl",  # a hub id this machine can't load: a job reaching the load would say so instead
            "checkpoint=folder",
            f"checkpoint.dir={folder}",
            "checkpoint.stem=Run",
            "checkpoint.epochs=2",
            "prompts=seed_tests",
            f"paths.root={tmp_path}",
            f"tracking.uri={uri}",
            "tracking.experiment=family",
        ]
    )
    with pytest.raises(CheckpointError) as error:
        run_job(cfg, output_dir=tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{folder / 'Run.safetensors'} is a LoRA for {label} (")
    assert "but model=sdxl expects LoRAs for SDXL (model.family=sdxl)" in message
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("family").experiment_id])
    assert run.info.status == "FAILED" and label in run.data.tags["error"]
    assert run.data.tags["checkpoint_family"] == label.lower().replace(".x", "")
    assert run.data.params["train.optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"


def test_real_kohya_sdxl_key_names_load_onto_the_demo_pipeline(demo_dir, tmp_path):
    """kohya's SGM UNet names and text_model TE names reach the layers they name, through
    diffusers' own load_lora_weights on the demo's SDXL-architecture pipeline."""
    from bespoke_exp.generate import pipeline as pl

    pipe = pl.load_pipeline(str(demo_dir / "pipeline"), device="cpu", dtype="float32")
    unet = pipe.unet
    per_level = unet.config.layers_per_block + 1
    down = next(i for i, block in enumerate(unet.down_blocks) if getattr(block, "attentions", None))
    up = next(i for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None))
    # SGM numbering: input block 1 + level * per_level + j is down_blocks[level]'s j-th layer;
    # output block level * per_level + j is up_blocks[level]'s.
    targets = {
        f"lora_unet_input_blocks_{1 + down * per_level}_1_transformer_blocks_0_attn1_to_q": (
            unet,
            f"down_blocks.{down}.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        f"lora_unet_output_blocks_{up * per_level + 1}_1_transformer_blocks_0_attn2_to_k": (
            unet,
            f"up_blocks.{up}.attentions.1.transformer_blocks.0.attn2.to_k",
        ),
    }
    for prefix, encoder in (("lora_te1", pipe.text_encoder), ("lora_te2", pipe.text_encoder_2)):
        inner = (
            "text_model." if hasattr(encoder, "text_model") else ""
        )  # transformers 5 flattens CLIPTextModel
        for proj in ("q_proj", "out_proj"):  # diffusers needs out_proj to recognise a TE state dict
            targets[f"{prefix}_text_model_encoder_layers_0_self_attn_{proj}"] = (
                encoder,
                f"{inner}encoder.layers.0.self_attn.{proj}",
            )
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (model, layer_path) in targets.items():
        layer = model.get_submodule(layer_path)
        tensors[f"{name}.lora_down.weight"] = torch.randn(2, layer.in_features, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(layer.out_features, 2, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    path = tmp_path / "kohya_sgm.safetensors"
    save_file(tensors, str(path))
    assert read_checkpoint(path).family == "sdxl"
    with pl.lora_applied(pipe, path):
        for name, (model, layer_path) in targets.items():
            layer = model.get_submodule(layer_path)  # peft wrapped the Linear: look it up again
            assert torch.equal(layer.lora_A[pl.ADAPTER_NAME].weight, tensors[f"{name}.lora_down.weight"]), (
                name
            )
            assert torch.equal(layer.lora_B[pl.ADAPTER_NAME].weight, tensors[f"{name}.lora_up.weight"]), name
    assert not pipe.get_list_adapters()
