"""LoRA files applied to the base pipeline through diffusers' own loader, and removed again: kohya's
key names reach the layers they name, a file that does not fit is named, nothing is left behind."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bespoke_exp.demo.training import LORA_STEM
from bespoke_exp.generate import pipeline as pl
from bespoke_exp.generate.checkpoints import available_epochs, read_checkpoint
from bespoke_exp.generate.pipeline import LoraLoadError
from tests.helpers import pixels, two_seeds, write_lora


@pytest.fixture(scope="module")
def pipe(demo_dir):
    return pl.load_pipeline(str(demo_dir / "pipeline"), device="cpu", dtype="float32")


ITEMS, SETTINGS = two_seeds()


def _pixels(pipe) -> list[np.ndarray]:
    return pixels(pipe, ITEMS, SETTINGS)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_lora_changes_output_and_unloading_restores_base_exactly(pipe, demo_dir):
    base = _pixels(pipe)
    with pl.lora_applied(pipe, demo_dir / "checkpoints" / f"{LORA_STEM}.safetensors"):
        with_lora = _pixels(pipe)
    after = _pixels(pipe)
    assert any(np.abs(b - w).mean() > 1.0 for b, w in zip(base, with_lora))
    assert all(np.array_equal(b, a) for b, a in zip(base, after))


def test_epochs_differ_from_each_other(pipe, demo_dir):
    outputs = []
    for epoch in (1, 10):
        path = available_epochs(demo_dir / "checkpoints", LORA_STEM, 10)[epoch]
        with pl.lora_applied(pipe, path):
            outputs.append(_pixels(pipe)[0])
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.5


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor.clone()
        for name in ("unet", "text_encoder", "text_encoder_2", "vae")
        for key, tensor in getattr(pipe, name).state_dict().items()
    }


def test_the_base_weights_are_bit_identical_after_loras_are_loaded_and_unloaded(pipe, demo_dir):
    pl.unload_lora(pipe)  # an earlier test's adapter, kept
    before = _weights(pipe)
    files = available_epochs(demo_dir / "checkpoints", LORA_STEM, 10)
    for epoch in (3, 5):
        with pl.lora_applied(pipe, files[epoch], scale=0.8):
            _pixels(pipe)
    pl.unload_lora(pipe)
    after = _weights(pipe)
    assert after.keys() == before.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []


def test_a_kept_adapter_is_not_loaded_again_and_draws_what_a_fresh_load_draws(pipe, demo_dir, monkeypatch):
    path = available_epochs(demo_dir / "checkpoints", LORA_STEM, 10)[2]
    pl.unload_lora(pipe)
    loads = []
    real_load = pipe.load_lora_weights
    monkeypatch.setattr(pipe, "load_lora_weights", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with pl.lora_applied(pipe, path, scale=1.0):
        full = _pixels(pipe)
    base = _pixels(pipe)  # between blocks the pipeline draws as the base model
    with pl.lora_applied(pipe, path, scale=0.5):  # the next job of the same epoch
        half_kept = _pixels(pipe)
    assert len(loads) == 1
    pl.unload_lora(pipe)
    with pl.lora_applied(pipe, path, scale=0.5):
        half_fresh = _pixels(pipe)
    assert len(loads) == 2
    assert all(np.array_equal(k, f) for k, f in zip(half_kept, half_fresh))
    assert any(not np.array_equal(k, f) for k, f in zip(half_kept, full))
    with pl.lora_applied(pipe, None):
        assert all(np.array_equal(b, x) for b, x in zip(base, _pixels(pipe)))


def test_failed_load_leaves_no_adapter_behind(pipe, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")
    base = _pixels(pipe)
    with pytest.raises(LoraLoadError, match=f"{broken} could not be applied to the base model"):
        with pl.lora_applied(pipe, broken):
            pass
    assert all(np.array_equal(b, a) for b, a in zip(base, _pixels(pipe)))


def test_a_unet_only_lora_loads_without_diffusers_notes_about_text_encoder_keys(pipe, demo_dir):
    # diffusers says so twice per load of such a file (kohya's --network_train_unet_only): once
    # per job, it would bury the job's own lines. The LoRA itself must still apply.
    path = available_epochs(demo_dir / "checkpoints", LORA_STEM, 10)[10]
    seen = _Collect()
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(seen)
    try:
        with pl.lora_applied(pipe, path):
            assert pipe.get_active_adapters() == [pl.ADAPTER_NAME]
    finally:
        diffusers_logger.removeHandler(seen)
    assert not [m for m in seen.messages if m.startswith("No LoRA keys")]


def test_a_lora_that_does_not_fit_the_base_model_is_named_with_its_file(pipe, tmp_path) -> None:
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    path = write_lora(tmp_path / "wrong_shapes.safetensors", {key: (7, 5)}, rank=4, alpha=4.0)
    with pytest.raises(LoraLoadError, match=f"{path} could not be applied to the base model"):
        with pl.lora_applied(pipe, path):
            pass
    assert not pipe.get_list_adapters()  # nothing half-applied is left on the cached pipeline


def test_real_kohya_sdxl_key_names_load_onto_the_demo_pipeline(pipe, tmp_path):
    """kohya's SGM UNet names and text_model TE names reach the layers they name, through
    diffusers' own load_lora_weights on the demo's SDXL-architecture pipeline."""
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
    sizes = {}
    for name, (model, layer_path) in targets.items():
        layer = model.get_submodule(layer_path)
        sizes[name] = (layer.in_features, layer.out_features)
    path = write_lora(tmp_path / "kohya_sgm.safetensors", sizes, rank=2, alpha=2.0)
    tensors = load_file(str(path))
    assert read_checkpoint(path).family == "sdxl"
    with pl.lora_applied(pipe, path):
        for name, (model, layer_path) in targets.items():
            layer = model.get_submodule(layer_path)  # peft wrapped the Linear: look it up again
            assert torch.equal(layer.lora_A[pl.ADAPTER_NAME].weight, tensors[f"{name}.lora_down.weight"]), (
                name
            )
            assert torch.equal(layer.lora_B[pl.ADAPTER_NAME].weight, tensors[f"{name}.lora_up.weight"]), name
    pl.unload_lora(pipe)
    assert not pipe.get_list_adapters()
