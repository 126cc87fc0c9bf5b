"""The next training run as a config for kohya's sd-scripts (`sdxl_train_network.py
--config_file next.toml`): the settings the checkpoint header records (`ss_*`), changed only
where the retrain advice says, with a plain-words list of what changed.

sd-scripts reads `--config_file` by flattening its sections into argument names, so the
sections here only group the keys for a reader; every key is one of `train_network.py`'s
arguments (kohya-ss/sd-scripts 48d368f, `SD_SCRIPTS_ARGUMENTS` in the tests). What the header
does not record (the base model's path, the training folder, where to save) is a placeholder
string that sd-scripts fails on by name, never a guess.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bespoke_exp.analysis.diagnosis import RetrainSuggestion

ARTIFACT_DIR = "retrain"
TOML_FILE = "sd_scripts.toml"
CHANGES_FILE = "changes.md"
PLACEHOLDER = "<FILL IN: {what}>"

# header setting (ss_ left out) -> (section, sd-scripts argument); the value carries over as it is.
_SAME = {
    "network": ("network_module", "network_dim", "network_alpha", "network_dropout"),
    "optimizer": (
        "learning_rate",
        "unet_lr",
        "text_encoder_lr",
        "lr_scheduler",
        "lr_warmup_steps",
        "max_grad_norm",
    ),
    "training": (
        "seed",
        "mixed_precision",
        "full_fp16",
        "gradient_checkpointing",
        "gradient_accumulation_steps",
        "clip_skip",
        "max_token_length",
        "noise_offset",
        "noise_offset_random_strength",
        "adaptive_noise_scale",
        "multires_noise_iterations",
        "multires_noise_discount",
        "ip_noise_gamma",
        "ip_noise_gamma_random_strength",
        "min_snr_gamma",
        "scale_weight_norms",
        "zero_terminal_snr",
        "loss_type",
        "huber_schedule",
        "huber_scale",
        "huber_c",
        "prior_loss_weight",
        "fp8_base",
        "fp8_base_unet",
        "lowram",
        "v2",
    ),
    "dataset": (
        "cache_latents",
        "caption_dropout_rate",
        "caption_dropout_every_n_epochs",
        "caption_tag_dropout_rate",
        "keep_tokens",
        "shuffle_caption",
        "color_aug",
        "flip_aug",
        "random_crop",
        "enable_bucket",
        "bucket_no_upscale",
        "min_bucket_reso",
        "max_bucket_reso",
        "resize_interpolation",
    ),
}
_RENAMED = {
    "batch_size_per_device": ("dataset", "train_batch_size"),
    "debiased_estimation": ("training", "debiased_estimation_loss"),
}
_SECTIONS = ("model", "network", "optimizer", "training", "dataset", "saving")
# The optimizer class kohya records (`module.Class(args)`) -> sd-scripts' --optimizer_type.
_OPTIMIZERS = {
    "AdamW": "AdamW",
    "AdamW8bit": "AdamW8bit",
    "PagedAdamW8bit": "PagedAdamW8bit",
    "Lion": "Lion",
    "Lion8bit": "Lion8bit",
    "SGD": "SGDNesterov",
    "Adafactor": "Adafactor",
    "Prodigy": "Prodigy",
    "DAdaptAdam": "DAdaptAdam",
    "DAdaptAdaptation": "DAdaptation",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_FUNCTION_WORDS = {
    "and",
    "the",
    "with",
    "for",
    "from",
    "into",
    "onto",
    "its",
    "his",
    "her",
    "their",
    "over",
    "under",
}
_PHRASE_BREAK = re.compile(r",(?![^()]*\))")  # a comma outside parentheses: "(8,12)" stays whole


@dataclass
class TrainerConfig:
    """The next run's sd-scripts config and what it changes from the run the header describes."""

    values: dict[str, dict[str, object]]  # section -> argument -> value
    changes: list[str]  # plain words: what differs from the recorded run, and why
    placeholders: list[str]  # arguments the header does not record: set them before training
    caption_gaps: list[str] = field(default_factory=list)  # prompt phrases no training caption has
    notes: list[str] = field(default_factory=list)  # header values sd-scripts can't take as they are

    def arguments(self) -> dict[str, object]:
        """Every argument as sd-scripts sees it once the sections are flattened."""
        return {k: v for section in self.values.values() for k, v in section.items()}

    def to_toml(self) -> str:
        lines = [
            "# Next training run for kohya's sd-scripts:",
            "#   accelerate launch sdxl_train_network.py --config_file sd_scripts.toml",
            "#",
            *(f"# {line}".rstrip() for line in self._summary()),
        ]
        for section in _SECTIONS:
            entries = self.values.get(section) or {}
            if entries:
                lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in entries.items())]
        return "\n".join(lines) + "\n"

    def changes_markdown(self) -> str:
        return "\n".join(["# Next training run (sd-scripts)", "", *self._summary()]) + "\n"

    def _summary(self) -> list[str]:
        """What changed and why, what to fill in, what sd-scripts can't take, what the captions
        lack: the same words atop the TOML (as comments) and in changes.md."""
        lines = ["Changed from the run that made the swept checkpoints:", ""]
        lines += [f"- {c}" for c in self.changes] or ["- nothing"]
        if self.placeholders:
            lines += [
                "",
                "Not in the checkpoint header, set before training: " + ", ".join(self.placeholders),
            ]
        for note in self.notes:
            lines += ["", f"Note: {note}"]
        if self.caption_gaps:
            lines += [
                "",
                "Prompt phrases no training caption has:",
                "",
                *(f"- {g}" for g in self.caption_gaps),
            ]
        return [
            *lines,
            "",
            "Its training loss beside the next sweep's scores: set logging_dir, then checkpoint.train_logs",
        ]


def sd_scripts_config(
    training: Mapping[str, object],
    advice: RetrainSuggestion | None,
    prompts: Sequence[str] = (),
    waits_on: str | None = None,
) -> TrainerConfig:
    """The next run from the header's settings (`generate.checkpoints.training_settings`, ss_
    left out) and the retrain advice (None: the same run again); `prompts` (the texts swept)
    are checked against the captions' tags (`tag_frequency`). `waits_on`: why the advice is not
    to be acted on yet (`Recommendation.waits_on`): the recorded run is written unchanged."""
    values: dict[str, dict[str, object]] = {s: {} for s in _SECTIONS}
    notes: list[str] = []
    for section, names in _SAME.items():
        for name in names:
            _put(values[section], name, training.get(name))
    for header, (section, name) in _RENAMED.items():
        _put(values[section], name, training.get(header))
    if training.get("text_encoder_lr") == 0:  # kohya's way to train the UNet alone
        values["network"]["network_train_unet_only"] = True
    _network_args(values["network"], training.get("network_args"))
    _optimizer(values["optimizer"], training.get("optimizer"), notes)
    resolution = _resolution(training.get("resolution"))
    if resolution:
        values["dataset"]["resolution"] = resolution
    placeholders = _model_and_paths(values, training, notes)
    epochs = training.get("num_epochs")
    if isinstance(epochs, int):
        values["training"]["max_train_epochs"] = epochs
    values["saving"].update({"save_every_n_epochs": 1, "save_model_as": "safetensors"})
    if training.get("output_name"):
        values["saving"]["output_name"] = str(training["output_name"])
    changes = _apply(values, training, None if waits_on else advice)
    if waits_on:
        changes.insert(0, f"no setting yet: the verdict waits on the next sweep ({waits_on})")
    return TrainerConfig(
        values, changes, placeholders, caption_gaps(training.get("tag_frequency"), prompts), notes
    )


def _put(section: dict[str, object], name: str, value: object) -> None:
    """A recorded value, as sd-scripts takes it: None (kohya writes "None") and False flags are
    its defaults, so they are left out."""
    if value is None or value is False or value == "":
        return
    if isinstance(value, float) and not math.isfinite(value):
        return
    section[name] = value


def _network_args(network: dict[str, object], recorded: object) -> None:
    if isinstance(recorded, dict) and recorded:  # kohya records them as a JSON object
        network["network_args"] = [f"{k}={v}" for k, v in recorded.items()]


def _optimizer(optimizer: dict[str, object], recorded: object, notes: list[str]) -> None:
    """`torch.optim.adamw.AdamW(weight_decay=0.1)` -> optimizer_type AdamW, optimizer_args."""
    if not isinstance(recorded, str) or not recorded:
        return
    match = re.match(r"^(?P<path>[\w.]+)(?:\((?P<args>.*)\))?$", recorded.strip())
    name = match["path"].rsplit(".", 1)[-1] if match else ""
    if name not in _OPTIMIZERS:
        notes.append(
            f"optimizer {recorded!r} has no sd-scripts optimizer_type here: set optimizer_type yourself"
        )
        return
    optimizer["optimizer_type"] = _OPTIMIZERS[name]
    if match["args"]:
        optimizer["optimizer_args"] = [a.strip() for a in _PHRASE_BREAK.split(match["args"]) if a.strip()]


def _resolution(recorded: object) -> str | None:
    """kohya records `(1024, 1024)`; --resolution takes "1024,1024"."""
    numbers = re.findall(r"\d+", str(recorded)) if recorded is not None else []
    return ",".join(numbers) if len(numbers) in (1, 2) else None


def _model_and_paths(
    values: dict[str, dict[str, object]], training: Mapping[str, object], notes: list[str]
) -> list[str]:
    model = values["model"]
    placeholders = []
    name = str(training.get("sd_model_name") or "")
    if _HUB_ID.match(name) and not name.endswith((".safetensors", ".ckpt")):  # a hub id is recorded whole
        model["pretrained_model_name_or_path"] = name
    else:
        said = f" (the header names it {name!r})" if name else ""
        model["pretrained_model_name_or_path"] = PLACEHOLDER.format(what=f"the base model's path{said}")
        placeholders.append("pretrained_model_name_or_path")
    folders = training.get("dataset_dirs")
    named = (
        ", ".join(f"{f}/" for f in folders)
        if isinstance(folders, dict) and folders
        else "the <repeats>_<name> folders"
    )
    values["dataset"]["train_data_dir"] = PLACEHOLDER.format(what=f"the folder holding {named}")
    values["saving"]["output_dir"] = PLACEHOLDER.format(what="where to save the new checkpoints")
    placeholders += ["train_data_dir", "output_dir"]
    module = training.get("network_module")
    if isinstance(module, str) and not module.startswith(("networks.", "lycoris.")):
        notes.append(f"network_module {module!r} is not an sd-scripts module (networks.lora is kohya's LoRA)")
    return placeholders


def _apply(
    values: dict[str, dict[str, object]], training: Mapping[str, object], advice: RetrainSuggestion | None
) -> list[str]:
    """Change what the advice names; returns the changes in plain words."""
    changes = []
    recorded_epochs = training.get("num_epochs")
    if advice is not None and advice.action in ("fewer_epochs", "more_epochs") and advice.epochs is not None:
        values["training"]["max_train_epochs"] = advice.epochs
        changes.append(
            f"max_train_epochs {recorded_epochs} -> {advice.epochs} ({advice.action}: {advice.reason})"
        )
        scheduler = training.get("lr_scheduler")
        if scheduler not in (None, "constant", "constant_with_warmup"):
            changes.append(
                f"lr_scheduler {scheduler} now runs its course over {advice.epochs} epochs, not "
                f"{recorded_epochs}: the learning rate at epoch {advice.epochs} differs from the swept "
                "checkpoint's"
            )
    elif advice is not None and advice.action == "lower_learning_rate":
        for section, name in (
            ("optimizer", "learning_rate"),
            ("optimizer", "unet_lr"),
            ("optimizer", "text_encoder_lr"),
        ):
            value = values[section].get(name)
            if isinstance(value, (int, float)) and value > 0:
                values[section][name] = value / 2
                changes.append(f"{name} {value:g} -> {value / 2:g} (lower_learning_rate: {advice.reason})")
    elif advice is not None:  # check_data, vary_captions: the captions change, not the settings
        changes.append(f"no setting ({advice.action}: {advice.reason}); change the captions first")
    if "save_every_n_epochs" not in training:
        changes.append(
            "save_every_n_epochs 1 (not recorded in the header): every epoch saved, to sweep again"
        )
    return changes


def caption_gaps(tag_frequency: object, prompts: Sequence[str], limit: int = 20) -> list[str]:
    """Phrases of the prompts (comma-separated, as kohya's captions are) that no training
    caption has, and that share no word with any caption tag: what the LoRA never saw."""
    tags = {
        str(tag).strip().lower()
        for folder in (tag_frequency.values() if isinstance(tag_frequency, dict) else [])
        if isinstance(folder, dict)
        for tag in folder
    }
    if not tags:
        return []
    known = {w for tag in tags for w in _WORD.findall(tag)} | _FUNCTION_WORDS
    phrases = dict.fromkeys(p.strip().lower() for prompt in prompts for p in _PHRASE_BREAK.split(prompt))
    gaps = []
    for phrase in (p for p in phrases if p and p not in tags):
        unseen = [w for w in _WORD.findall(phrase) if w not in known]
        if unseen:
            gaps.append(f"{phrase} (never in a caption: {', '.join(unseen)})")
    return gaps[:limit]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # JSON's escapes are TOML basic-string escapes
