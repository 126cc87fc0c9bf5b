"""Config helpers shared by the CLI and tests: resolvers, validation, flattening and
the job fingerprint. Plain OmegaConf; nothing here starts a job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROJECT_ROOT = CONF_DIR.parent

# An identical job gives identical images and scores whatever is excluded here: where
# things are stored, how runs are tracked and analysed, and whether to re-run it.
FINGERPRINT_EXCLUDES = ("paths", "tracking", "analysis", "hydra", "force")


def register_resolvers() -> None:
    from bespoke_exp.demo import default_demo_dir

    OmegaConf.register_new_resolver("bespoke_project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("bespoke_demo_dir", lambda: str(default_demo_dir()), replace=True)


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


def validate_job_config(cfg: DictConfig) -> None:
    """Reject values that would waste a model load, naming the key and what is allowed."""
    s = cfg.sampler
    problems = []
    if not isinstance(cfg.epoch, int) or isinstance(cfg.epoch, bool):
        problems.append(f"epoch={cfg.epoch!r} must be an integer (sweep with epoch=1,2,...,10)")
    if int(s.steps) <= 0:
        problems.append(f"sampler.steps={s.steps} must be > 0")
    if float(s.guidance) < 0:
        problems.append(f"guidance={s.guidance} must be >= 0")
    for key in ("width", "height"):
        if int(s[key]) <= 0 or int(s[key]) % 8:
            problems.append(f"sampler.{key}={s[key]} must be a positive multiple of 8")
    if len(s.seeds) == 0:
        problems.append("sampler.seeds is empty; give at least one seed, e.g. [0, 1]")
    if int(s.batch_size) <= 0:
        problems.append(f"sampler.batch_size={s.batch_size} must be > 0")
    items = cfg.prompts.get("items") or []
    if len(items) == 0:
        problems.append(f"prompts={cfg.prompts.get('name')!r} has no items")
    ids = [item.get("id") for item in items]
    if len(set(ids)) != len(ids) or any(not i for i in ids):
        problems.append(f"prompts.items ids must be unique and non-empty, got {ids}")
    from bespoke_exp.prompt_spec import validate_prompt

    for item in items:
        try:
            validate_prompt(str(item.get("text", "")), int(cfg.prompts.get("cells", 24)))
        except ValueError as error:
            problems.append(f"prompts item {item.get('id')!r}: {error}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


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
                entry_name = f"{name}.{entry.get('id', index)}" if isinstance(entry, dict) else f"{name}.{index}"
                flat.update(flatten(entry, f"{entry_name}.") if isinstance(entry, dict) else {entry_name: json.dumps(entry)})
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


def job_fingerprint(cfg: DictConfig, exclude: Iterable[str] = FINGERPRINT_EXCLUDES) -> str:
    """Short stable hash of what decides a job's images, the same on every machine.

    `paths.*` are masked before resolving, so the demo's cache folder (inside
    `model.pretrained`) does not leak in; the checkpoint folder is left out because the
    checkpoint's sha256 identifies the file wherever it lives.
    """
    masked = cfg.copy()
    with open_dict(masked):
        for key in list(masked.get("paths") or {}):
            masked.paths[key] = f"<paths.{key}>"
    data = job_config(masked)
    data.get("checkpoint", {}).pop("dir", None)
    kept = {k: v for k, v in data.items() if k not in set(exclude)}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]

