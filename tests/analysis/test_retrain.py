"""The next training run as an sd-scripts config: every key an argument sd-scripts has, every
value the header's own, changed only where the advice says."""

from __future__ import annotations

import json

import pytest
import tomllib

from bespoke_exp.analysis.diagnosis import RetrainSuggestion
from bespoke_exp.analysis.retrain import PLACEHOLDER, caption_gaps, sd_scripts_config
from bespoke_exp.generate.checkpoints import training_settings
from tests.helpers import SD_SCRIPTS_ARGUMENTS, kohya_metadata


def _header(**changes: str) -> dict[str, object]:
    """A header as sd-scripts writes it for a run with optimizer arguments and network args."""
    recorded = {
        "optimizer": "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))",
        "network_args": json.dumps({"conv_dim": "8", "conv_alpha": "4"}),
        "lr_warmup_steps": "0.05",
        "batch_size_per_device": "4",
        "min_snr_gamma": "5.0",
        "noise_offset": "None",
        "flip_aug": "False",
        "shuffle_caption": "True",
    }
    metadata = kohya_metadata(10, num_epochs=10, **{**recorded, **changes})
    return training_settings(metadata)


def _parsed(training, advice=None, prompts=()) -> dict:
    config = sd_scripts_config(training, advice, prompts)
    sections = tomllib.loads(config.to_toml())
    return {key: value for section in sections.values() for key, value in section.items()}


def test_every_key_is_an_sd_scripts_argument_and_every_value_the_headers() -> None:
    args = _parsed(_header(), RetrainSuggestion("fewer_epochs", "peak at 3", 3))
    assert set(args) <= SD_SCRIPTS_ARGUMENTS, set(args) - SD_SCRIPTS_ARGUMENTS
    assert args["max_train_epochs"] == 3
    assert args["save_every_n_epochs"] == 1
    assert "max_train_steps" not in args  # it would override the epoch count
    assert args["learning_rate"] == 1e-4 and args["unet_lr"] == 1e-4 and args["text_encoder_lr"] == 5e-5
    assert args["network_module"] == "networks.lora" and args["network_dim"] == 4
    assert args["network_alpha"] == 2.0
    assert args["network_args"] == ["conv_dim=8", "conv_alpha=4"]
    assert args["optimizer_type"] == "AdamW"
    assert args["optimizer_args"] == ["weight_decay=0.1", "betas=(0.9, 0.99)"]  # a comma inside ()
    assert args["lr_scheduler"] == "cosine_with_restarts" and args["lr_warmup_steps"] == 0.05
    assert args["resolution"] == "1024,1024"  # sd-scripts splits a string; kohya records a tuple
    assert args["train_batch_size"] == 4 and args["seed"] == 42 and args["min_snr_gamma"] == 5.0
    assert args["cache_latents"] is True and args["shuffle_caption"] is True
    assert "noise_offset" not in args and "flip_aug" not in args  # "None" and False: sd-scripts' defaults
    assert "network_train_unet_only" not in args  # the text encoders trained


def test_what_the_header_does_not_record_is_a_placeholder_never_a_guess() -> None:
    config = sd_scripts_config(_header(), None)
    args = config.arguments()
    assert config.placeholders == ["pretrained_model_name_or_path", "train_data_dir", "output_dir"]
    for key in config.placeholders:
        assert args[key].startswith(PLACEHOLDER.split("{")[0]), args[key]
    assert "sd_xl_base_1.0.safetensors" in args["pretrained_model_name_or_path"]  # what it does record
    assert "10_bespoke/" in args["train_data_dir"]
    hub = sd_scripts_config(_header(sd_model_name="stabilityai/stable-diffusion-xl-base-1.0"), None)
    assert hub.arguments()["pretrained_model_name_or_path"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert hub.placeholders == ["train_data_dir", "output_dir"]


def test_the_advice_changes_only_what_it_names_and_says_so() -> None:
    same = sd_scripts_config(_header(), None).arguments()
    more = sd_scripts_config(_header(), RetrainSuggestion("more_epochs", "still rising", 16))
    assert more.arguments() == {**same, "max_train_epochs": 16}
    assert any(c.startswith("max_train_epochs 10 -> 16") for c in more.changes)
    assert any("cosine_with_restarts now runs its course over 16 epochs" in c for c in more.changes)
    lower = sd_scripts_config(_header(), RetrainSuggestion("lower_learning_rate", "near copies"))
    changed = {k for k, v in lower.arguments().items() if same[k] != v}
    assert changed == {"learning_rate", "unet_lr", "text_encoder_lr"}
    assert lower.arguments()["learning_rate"] == pytest.approx(5e-5)
    data = sd_scripts_config(_header(), RetrainSuggestion("check_data", "no combination is good"))
    assert data.arguments() == same and any("change the captions" in c for c in data.changes)
    waiting = sd_scripts_config(
        _header(), RetrainSuggestion("more_epochs", "rising", 16), waits_on="guidance"
    )
    assert waiting.arguments() == same and waiting.changes[0].startswith("no setting yet: the verdict waits")


def test_a_unet_only_run_stays_unet_only_and_a_foreign_optimizer_is_said_not_guessed() -> None:
    config = sd_scripts_config(_header(text_encoder_lr="0.0", optimizer="my.lab.Sophia"), None)
    args = config.arguments()
    assert args["network_train_unet_only"] is True
    assert "optimizer_type" not in args
    assert any("my.lab.Sophia" in note for note in config.notes)
    assert "my.lab.Sophia" in config.to_toml()


def test_caption_gaps_name_the_prompt_phrases_the_training_captions_never_had() -> None:
    tags = {"10_bespoke": {"TOK bespoke": 5, "pixel art": 5, "black pupils": 2, "blue background": 1}}
    prompts = ["TOK bespoke, pixel art, black pupils at (8,12) and (13,12), vibrant orange solid background"]
    gaps = caption_gaps(tags, prompts)
    assert gaps == ["vibrant orange solid background (never in a caption: vibrant, orange, solid)"]
    assert caption_gaps(tags, [*prompts, prompts[0]]) == gaps  # a phrase in two prompts is one gap
    assert caption_gaps({}, prompts) == []  # no record of the captions: nothing claimed
