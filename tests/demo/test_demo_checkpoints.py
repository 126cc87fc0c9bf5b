"""The demo's LoRA files are real kohya checkpoints: ten epochs named as kohya names them, with
truthful metadata (diffusers' loader taking them is in generate/test_lora_loading.py)."""

from safetensors import safe_open

from bespoke_exp.demo.training import LORA_STEM, DemoTraining
from bespoke_exp.generate.checkpoints import available_epochs, describe_checkpoint


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
