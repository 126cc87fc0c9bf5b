"""Checkpoint intelligence: what a LoRA file is (family, rank, alpha, training settings) and what
a folder of them holds (the table `python -m bespoke_exp.checkpoints` prints). Every file is a
tiny real safetensors file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bespoke_exp.generate.checkpoint_folder import format_inspection, inspect_checkpoints
from bespoke_exp.generate.checkpoints import lora_family, read_checkpoint, training_settings
from bespoke_exp.generate.digests import file_sha256
from tests.helpers import (
    FLUX_KOHYA,
    SD1_KOHYA,
    SDXL_KOHYA,
    kohya_metadata,
    write_kohya_run,
    write_lora,
    write_not_a_lora,
)


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    return write_kohya_run(tmp_path / "run")


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
    ranks = {f"lora_unet_m{index}": rank for index, rank in enumerate((8, 8, 16))}
    path = write_lora(
        tmp_path / "b.safetensors",
        {module: (4, 4) for module in ranks},
        rank=ranks,
        alpha={module: rank / 2 for module, rank in ranks.items()},
    )
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
    write_not_a_lora(run_dir / "Full.safetensors")
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


# --- sha256 cached on disk ----------------------------------------------------------------


# --- the family the base model takes ------------------------------------------------------
