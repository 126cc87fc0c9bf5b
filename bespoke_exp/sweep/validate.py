"""Refuse a config before it costs anything: every problem named by key, value and what
is allowed, before a run is created or a model loads."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bespoke_exp.config import ConfigError
from bespoke_exp.pixelart.grid import IMAGE_SUFFIXES
from bespoke_exp.scoring.expectations import validate_prompt


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
    for item in items:
        try:
            validate_prompt(str(item.get("text", "")), int(cfg.prompts.get("cells", 24)))
        except ValueError as error:
            problems.append(f"prompts item {item.get('id')!r}: {error}")
    train_dir = cfg.checkpoint.get("train_dir")
    if train_dir and not Path(str(train_dir)).is_dir():
        problems.append(
            f"checkpoint.train_dir={train_dir} is not a folder (the training images, or null to skip)"
        )
    elif train_dir and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(str(train_dir)).rglob("*")):
        problems.append(f"checkpoint.train_dir={train_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
