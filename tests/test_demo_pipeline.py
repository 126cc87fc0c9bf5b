"""The demo's LoRA files are real kohya checkpoints that the real diffusers loader takes."""

import logging

import numpy as np
import pytest
from safetensors import safe_open

from bespoke_exp.demo.training import LORA_STEM, DemoTraining
from bespoke_exp.generate import pipeline as pl
from bespoke_exp.generate.checkpoints import available_epochs, describe_checkpoint


@pytest.fixture(scope="module")
def pipe(demo_dir):
    return pl.load_pipeline(str(demo_dir / "pipeline"), device="cpu", dtype="float32")


SETTINGS = pl.SamplerSettings(
    scheduler="euler", steps=2, guidance=7.5, width=128, height=128, negative_prompt="", batch_size=2
)
ITEMS = [
    pl.GenerationItem("p", "TOK bespoke, 24x24 pixel grid portrait, orange solid background", s)
    for s in (0, 1)
]


def _pixels(pipe) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for _, image in pl.generate(pipe, ITEMS, SETTINGS)]


def test_ten_epochs_named_like_the_users_run(demo_dir):
    epochs = available_epochs(demo_dir / "checkpoints", LORA_STEM, 10)
    assert list(epochs) == list(range(1, 11))
    assert epochs[10].name == f"{LORA_STEM}.safetensors"
    assert epochs[1].name == f"{LORA_STEM}-000001.safetensors"


def test_checkpoints_are_kohya_format_with_truthful_metadata(demo_dir):
    training = DemoTraining()
    steps = []
    for epoch, path in available_epochs(demo_dir / "checkpoints", LORA_STEM, 10).items():
        info = describe_checkpoint(path, epoch)
        with safe_open(str(path), "pt") as handle:
            keys = list(handle.keys())
        prefixes = {k.split("_")[0] + "_" + k.split("_")[1] for k in keys}
        # UNet only, as the header says (kohya names text-encoder adapters lora_te1_ / lora_te2_)
        assert prefixes == {"lora_unet"} and info.metadata["ss_text_encoder_lr"] == "0.0"
        assert info.metadata["ss_zero_terminal_snr"] == "True"  # the base's schedule, as trained
        assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
        assert info.metadata["ss_epoch"] == str(epoch)
        assert info.rank == int(info.metadata["ss_network_dim"]) == training.rank
        steps.append(int(info.metadata["ss_steps"]))
    assert steps == [epoch * training.batches_per_epoch for epoch in range(1, 11)]


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


def test_batched_generation_equals_one_at_a_time(pipe):
    batched = _pixels(pipe)
    single = [
        np.asarray(image, dtype=np.int16)
        for item in ITEMS
        for _, image in pl.generate(pipe, [item], SETTINGS)
    ]
    assert all(np.abs(b - s).max() <= 1 for b, s in zip(batched, single))


def test_failed_load_leaves_no_adapter_behind(pipe, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")
    base = _pixels(pipe)
    with pytest.raises(Exception):
        with pl.lora_applied(pipe, broken):
            pass
    assert all(np.array_equal(b, a) for b, a in zip(base, _pixels(pipe)))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
