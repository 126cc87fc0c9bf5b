"""Where things live and what a config means as data: the project and demo folders, the
resolvers `conf/` uses, flattening to MLflow params and the job fingerprint.
Plain OmegaConf and the standard library; nothing here starts a job."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROJECT_ROOT = CONF_DIR.parent

# An identical job gives identical images and scores whatever is excluded here: where
# things are stored, how runs are tracked and analysed, and whether to re-run it.
# The top-level `lora_scale` shortcut is left out too: `checkpoint.lora_scale` holds the value the
# job uses (it interpolates the shortcut, or the older `checkpoint.lora_scale=` spelling sets it).
FINGERPRINT_EXCLUDES = ("paths", "tracking", "analysis", "hydra", "force", "checkpoint.dir", "lora_scale")
# The sweep axes a job records as tags (axis -> the config key holding the value it ran with);
# the analysis ranks every combination of them. A new axis (LoRA strength, a sampler setting an
# Optuna sweeper tunes) is one entry here. epoch and guidance are always axes; the others only
# when a sweep varies them.
SWEEP_AXES = {"epoch": "epoch", "guidance": "sampler.guidance", "lora_scale": "checkpoint.lora_scale"}
# The embedded demo's recipe: bump when bespoke_exp.demo changes what it builds. Each
# recipe builds into its own folder, so old builds are left untouched.
DEMO_RECIPE = "v4"


def default_demo_dir() -> Path:
    """Where the demo lives unless `BESPOKE_EXP_DEMO_DIR` says otherwise."""
    override = os.environ.get("BESPOKE_EXP_DEMO_DIR")
    if override:
        return Path(override).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()  # empty: unset
    return (cache / "bespoke_exp" / f"demo-{DEMO_RECIPE}").resolve()


def register_resolvers() -> None:
    """The resolvers conf/config.yaml uses for `paths.*`."""
    OmegaConf.register_new_resolver("bespoke_project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("bespoke_demo_dir", lambda: str(default_demo_dir()), replace=True)
    # Cached like Hydra's own `now`, so every later read of the sweep folder gets the same token.
    OmegaConf.register_new_resolver(
        "bespoke_token", lambda: secrets.token_hex(2), use_cache=True, replace=True
    )


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


# Free text is data: OmegaConf would resolve a prompt reading "${oc.env:API_TOKEN}" to the token
# and log it as a param. Every string under these keys is taken exactly as written.
LITERAL_KEYS = ("prompts.items", "sampler.negative_prompt")


def literal_text(cfg: DictConfig) -> DictConfig:
    """Escape `${` in every string under LITERAL_KEYS so it resolves to exactly the text written
    (in place; returns `cfg`). Call it once, where a config is composed: escaping is not idempotent."""
    with read_write(cfg), open_dict(cfg):
        for key in LITERAL_KEYS:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if isinstance(parent, DictConfig) and leaf in parent:
                _escape_strings(parent, leaf)
    return cfg


def _escape_strings(container: DictConfig | ListConfig, key: str | int) -> None:
    node = container._get_node(key)
    if isinstance(node, (DictConfig, ListConfig)):
        for child in node.keys() if isinstance(node, DictConfig) else range(len(node)):
            _escape_strings(node, child)
        return
    raw = node._value()
    if isinstance(raw, str) and "${" in raw:
        # k backslashes before `${` become 2k+1: they resolve back to k backslashes and a literal `${`.
        container[key] = re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m[1]) + 1) + "${", raw)


def compose_config(overrides: Iterable[str] = (), search_path: Iterable[str] = ()) -> DictConfig:
    """conf/config.yaml composed with `overrides`, as `python -m bespoke_exp` composes it
    (outside a running Hydra app), free text taken literally. `search_path`: further config
    folders (`file://...`, `pkg://...`), as `--config-dir` or `hydra.searchpath` add them."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return literal_text(
            compose(config_name="config", overrides=[*search_path_overrides(search_path), *overrides])
        )


def search_path_overrides(search_path: Iterable[str]) -> list[str]:
    """The Hydra override that adds `search_path` (config folders as URIs) to the search path."""
    entries = [json.dumps(str(entry)) for entry in search_path]
    return [f"hydra.searchpath=[{','.join(entries)}]"] if entries else []


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
