"""What a composed config means as data: MLflow params (flattened dotted keys) and the job
fingerprint, the hash of everything that decides a job's work."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf, open_dict

# An identical job gives identical images and scores whatever is excluded here: where
# things are stored, how runs are tracked and analysed, and whether to re-run it.
# The top-level `lora_scale` shortcut is left out too: `checkpoint.lora_scale` holds the value the
# job uses (it interpolates the shortcut, or the older `checkpoint.lora_scale=` spelling sets it).
FINGERPRINT_EXCLUDES = ("paths", "tracking", "analysis", "hydra", "force", "checkpoint.dir", "lora_scale")
# The sweep axes a job records as tags (axis -> the config key holding the value it ran with);
# the analysis ranks every combination of them. A new axis (LoRA strength, a sampler setting an
# Optuna sweeper tunes) is one entry here. epoch and guidance are always axes; the others only
# when a sweep varies them. `trigger` is a bool, recorded as 1 (on) or 0 (off).
SWEEP_AXES = {
    "epoch": "epoch",
    "guidance": "sampler.guidance",
    "lora_scale": "checkpoint.lora_scale",
    "trigger": "trigger",
}
BASE_EPOCH = 0  # epoch=0: the base model without the LoRA, the baseline every epoch is measured against


def is_baseline(cfg: DictConfig) -> bool:
    """The job runs the base model alone: no LoRA file is read or applied."""
    return int(cfg.epoch) == BASE_EPOCH


def job_config(cfg: DictConfig) -> dict:
    """The resolved config as plain data, without Hydra's own node."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> strings, as MLflow params; lists of scalars stay one JSON value."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            for index, entry in enumerate(value):
                entry_name = (
                    f"{name}.{entry.get('id', index)}" if isinstance(entry, dict) else f"{name}.{index}"
                )
                flat.update(
                    flatten(entry, f"{entry_name}.")
                    if isinstance(entry, dict)
                    else {entry_name: json.dumps(entry)}
                )
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


def job_fingerprint(cfg: DictConfig, exclude: Iterable[str] = FINGERPRINT_EXCLUDES) -> str:
    """Short stable hash of the config less the `exclude`d keys (top-level or dotted), the
    same on every machine.

    `paths.*` are masked before resolving, so the demo's cache folder (inside
    `model.pretrained`) does not leak in; the checkpoint folder is left out because the
    checkpoint's sha256 identifies the file wherever it lives.
    """
    masked = cfg.copy()
    with open_dict(masked):
        for key in list(masked.get("paths") or {}):
            masked.paths[key] = f"<paths.{key}>"
    kept = job_config(masked)
    for key in exclude:
        *parents, leaf = key.split(".")
        node = kept
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
