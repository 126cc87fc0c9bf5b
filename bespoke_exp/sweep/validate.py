"""Refuse a config before it costs anything: every problem named by key, value and what
is allowed, before a run is created or a model loads.

`config_problems(cfg)` lists what is wrong with one job's config; `validate_job_config`
raises them as one ConfigError. The sweep callback runs the same checks on every job's
composed config (swept values included) before the sweep's parent run exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bespoke_exp.config import ConfigError
from bespoke_exp.generate import checkpoints
from bespoke_exp.generate.prompt_chunks import MODES as LONG_PROMPTS
from bespoke_exp.pixelart.grid import IMAGE_SUFFIXES
from bespoke_exp.scoring.expectations import validate_prompt
from bespoke_exp.scoring.palette import load_palette
from bespoke_exp.scoring.regions import parse_regions
from bespoke_exp.scoring.registry import metric_spec

DTYPES = ("auto", "float32", "float16", "bfloat16")
_MISSING = object()


def validate_job_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of one job's config (one line each)."""
    raise_problems(config_problems(cfg))


def raise_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem, one per line; nothing when there are none."""
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def config_problems(cfg: DictConfig, checks: tuple | None = None) -> list[str]:
    """Every problem of one job's config: types, ranges, finiteness, files and folders,
    scheduler / dtype / device availability, metric weights, palette, regions, prompts."""
    problems: list[str] = []
    for check in checks or _CHECKS:
        try:
            problems += check(cfg)
        except OmegaConfBaseException as error:  # a missing ??? value or a broken interpolation
            problems.append(_omegaconf_message(error))
    return list(dict.fromkeys(problems))


def _value(cfg: DictConfig, key: str) -> object:
    """The resolved value at a dotted key; raises OmegaConf's error for ??? and bad interpolations."""
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", "") or "?"
    if type(error).__name__ == "MissingMandatoryValue":
        return f"{key} is not set (???); set it on the command line, e.g. {key}=..."
    return f"{key}: {str(error).splitlines()[0]}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(problems: list[str], name: str, value: object, minimum: float | None = None) -> None:
    """A finite real number (>= minimum when given)."""
    if not _is_number(value):
        problems.append(f"{name}={value!r} must be a number")
    elif not math.isfinite(value):
        problems.append(f"{name}={value} must be a finite number")
    elif minimum is not None and value < minimum:
        problems.append(f"{name}={value} must be >= {minimum:g}")


def _sweep_axes(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    epoch, final = _value(cfg, "epoch"), _value(cfg, "checkpoint.epochs")
    if not _is_int(final) or final < 1:
        problems.append(f"checkpoint.epochs={final!r} must be a positive integer (the trainer's last epoch)")
    if not _is_int(epoch):
        problems.append(f"epoch={epoch!r} must be an integer (sweep with epoch=1,2,...,10)")
    elif _is_int(final) and not 1 <= epoch <= final:
        problems.append(f"epoch={epoch} is outside 1..{final} (checkpoint.epochs={final})")
    _number(problems, "guidance", _value(cfg, "sampler.guidance"), minimum=0)
    problems += _lora_scale(cfg)
    return problems


def _lora_scale(cfg: DictConfig) -> list[str]:
    """The LoRA strength the job applies (checkpoint.lora_scale, which follows the top-level
    `lora_scale` unless the older `checkpoint.lora_scale=` spelling set it): finite and > 0."""
    scale = _value(cfg, "checkpoint.lora_scale")
    shortcut = _value(cfg, "lora_scale")
    # Name the key the user wrote: the shortcut, unless checkpoint.lora_scale was set apart from it.
    same = shortcut is scale or (_is_number(shortcut) and _is_number(scale) and str(shortcut) == str(scale))
    name = "lora_scale" if same or shortcut is _MISSING else "checkpoint.lora_scale"
    if _is_number(scale) and math.isfinite(scale) and scale > 0:
        return []
    what = "a finite number > 0" if _is_number(scale) else "a number > 0"
    return [f"{name}={scale!r} must be {what} (the LoRA strength; sweep with lora_scale=0.6,0.8,1.0)"]


def _sampler(cfg: DictConfig) -> list[str]:
    from bespoke_exp.generate.pipeline import scheduler_problem

    problems: list[str] = []
    steps = _value(cfg, "sampler.steps")
    if not _is_int(steps) or steps <= 0:
        problems.append(
            f"sampler.steps={steps!r} must be > 0"
            if _is_int(steps)
            else f"sampler.steps={steps!r} must be an integer > 0"
        )
    for key in ("width", "height"):
        size = _value(cfg, f"sampler.{key}")
        if not _is_int(size) or size <= 0 or size % 8:
            problems.append(f"sampler.{key}={size!r} must be a positive multiple of 8")
    seeds = _value(cfg, "sampler.seeds")
    if not OmegaConf.is_list(seeds) and not isinstance(seeds, list):
        problems.append(f"sampler.seeds={seeds!r} must be a list of integers, e.g. [0, 1]")
    elif len(seeds) == 0:
        problems.append("sampler.seeds is empty; give at least one seed, e.g. [0, 1]")
    elif not all(_is_int(s) and s >= 0 for s in seeds):
        problems.append(f"sampler.seeds={list(seeds)} must be non-negative integers")
    batch = _value(cfg, "sampler.batch_size")
    if not _is_int(batch) or batch <= 0:
        problems.append(f"sampler.batch_size={batch!r} must be an integer > 0")
    scheduler = scheduler_problem(_value(cfg, "sampler.scheduler"))  # unknown, or needs a missing package
    if scheduler:
        problems.append(scheduler)
    return problems


def _prompt_reading(cfg: DictConfig) -> list[str]:
    """How the text encoders read the prompts: sampler.long_prompts, prompt_weighting, clip_skip.
    A key left out of an older sampler config takes its default."""
    problems: list[str] = []
    mode = _value(cfg, "sampler.long_prompts")
    if mode is not _MISSING and mode not in LONG_PROMPTS:
        problems.append(
            f"sampler.long_prompts={mode!r} must be chunk (75-token chunks, as A1111 / ComfyUI) "
            "or truncate (the first 77 tokens, as diffusers alone)"
        )
    weighting = _value(cfg, "sampler.prompt_weighting")
    if weighting is not _MISSING and not isinstance(weighting, bool):
        problems.append(f"sampler.prompt_weighting={weighting!r} must be true or false")
    skip = _value(cfg, "sampler.clip_skip")
    if skip not in (None, _MISSING) and (not _is_int(skip) or skip < 1):
        problems.append(
            f"sampler.clip_skip={skip!r} must be null (the model's own layer) or an integer >= 1 "
            "(A1111's count: 2 = the penultimate layer, SDXL's own)"
        )
    return problems


def _model(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    pretrained = _value(cfg, "model.pretrained")
    if not isinstance(pretrained, str) or not pretrained.strip():
        problems.append(
            f"model.pretrained={pretrained!r} must be a hub id or a folder saved with save_pretrained"
        )
    elif (
        pretrained.startswith(("/", ".", "~"))
        and not Path(pretrained).expanduser().is_dir()
        and not demo_pending(cfg, pretrained)
    ):
        problems.append(
            f"model.pretrained={pretrained} is not a folder (a pipeline saved with save_pretrained)"
        )
    family = _value(cfg, "model.family")
    if family is _MISSING:
        problems.append(
            "model.family is not set; add `family: sdxl` to the model config (the LoRA family it takes)"
        )
    elif family not in checkpoints.BASE_FAMILIES:
        problems.append(
            f"model.family={family!r} is not one of {', '.join(checkpoints.BASE_FAMILIES)} "
            "(the LoRA family the base model takes)"
        )
    dtype = _value(cfg, "model.dtype")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    problems += _device_problems(_value(cfg, "model.device"))
    return problems


def _device_problems(device: object) -> list[str]:
    import torch

    if not isinstance(device, str):
        return [f"model.device={device!r} must be auto, cpu, cuda, cuda:N or mps"]
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu") and not index:
        return []
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            return [f"model.device={device} but torch sees no CUDA GPU on this machine; use model.device=cpu"]
        if index and int(index) >= torch.cuda.device_count():
            return [f"model.device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)"]
        return []
    if kind == "mps" and not index:
        return [] if torch.backends.mps.is_available() else ["model.device=mps but MPS is not available here"]
    return [f"model.device={device!r} must be auto, cpu, cuda, cuda:N or mps"]


def demo_pending(cfg: DictConfig, path: object) -> bool:
    """`path` is inside the embedded demo, which is not built yet: the first job builds it."""
    from bespoke_exp.demo.build import COMPLETE_MARKER

    demo = Path(str(_value(cfg, "paths.demo")))
    return (
        bool(_value(cfg, "model.build_demo"))
        and Path(str(path)).is_relative_to(demo)
        and not (demo / COMPLETE_MARKER).is_file()
    )


def _checkpoint_files(cfg: DictConfig) -> list[str]:
    folder, stem = _value(cfg, "checkpoint.dir"), _value(cfg, "checkpoint.stem")
    if demo_pending(cfg, folder):
        return []
    if not Path(str(folder)).is_dir():
        return [
            f"checkpoint.dir={folder} is not a folder; point it at the folder with {stem}-000001.safetensors"
        ]
    final = _value(cfg, "checkpoint.epochs")
    if _is_int(final) and not checkpoints.available_epochs(Path(str(folder)), str(stem), final):
        others = sorted(p.name for p in Path(str(folder)).glob("*.safetensors"))[:3]
        hint = f" (it holds {', '.join(others)}: is checkpoint.stem right?)" if others else ""
        return [f"checkpoint.dir={folder} has no file named {stem}*.safetensors{hint}"]
    return []


def _training_images(cfg: DictConfig) -> list[str]:
    train_dir = _value(cfg, "checkpoint.train_dir")
    if train_dir in (None, _MISSING) or demo_pending(cfg, train_dir):
        return []
    folder = Path(str(train_dir))
    if not folder.is_dir():
        return [f"checkpoint.train_dir={train_dir} is not a folder (the training images, or null to skip)"]
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
        return [f"checkpoint.train_dir={train_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})"]
    return []


def _metrics(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    weights = _value(cfg, "metrics.weights")
    for key, weight in (OmegaConf.to_container(weights) if OmegaConf.is_dict(weights) else {}).items():
        try:
            metric_spec(key)
        except KeyError:
            problems.append(f"metrics.weights.{key}: no such metric (see bespoke_exp/scoring/registry.py)")
        if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
            problems.append(f"metrics.weights.{key}={weight!r} must be a finite number >= 0")
    problems += _palette_problems(cfg)
    try:
        parse_regions(OmegaConf.to_container(_value(cfg, "metrics.regions")))
    except (ValueError, TypeError, KeyError) as error:
        problems.append(f"metrics.regions: {error}")
    return problems


PALETTE_WORDS = ("auto", "prompts", "train_dir")


def _palette_problems(cfg: DictConfig) -> list[str]:
    palette = _value(cfg, "metrics.palette")
    if palette in PALETTE_WORDS:
        if palette == "train_dir" and not _value(cfg, "checkpoint.train_dir"):
            return ["metrics.palette=train_dir but checkpoint.train_dir is null; set it or use palette=auto"]
        return []
    try:
        load_palette(OmegaConf.to_container(palette) if OmegaConf.is_list(palette) else palette)
    except (ValueError, TypeError) as error:
        return [f"metrics.palette: {error} (or one of {', '.join(PALETTE_WORDS)})"]
    return []


def _prompts(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    items = _value(cfg, "prompts.items") or []
    if len(items) == 0:
        problems.append(f"prompts={_value(cfg, 'prompts.name')!r} has no items")
    ids = [item.get("id") for item in items]
    if len(set(ids)) != len(ids) or any(not i for i in ids):
        problems.append(f"prompts.items ids must be unique and non-empty, got {ids}")
    for item in items:
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"prompts item {item.get('id')!r}: text is empty; write the prompt to generate")
            continue
        try:
            validate_prompt(text, int(_value(cfg, "prompts.cells")))
        except ValueError as error:
            problems.append(f"prompts item {item.get('id')!r}: {error}")
    return problems


_CHECKS: tuple[Callable[[DictConfig], list[str]], ...] = (
    _sweep_axes,
    _sampler,
    _prompt_reading,
    _model,
    _checkpoint_files,
    _training_images,
    _metrics,
    _prompts,
)
# What scoring stored images needs: no model, checkpoint or sampler.
SCORING_CHECKS: tuple[Callable[[DictConfig], list[str]], ...] = (_training_images, _metrics, _prompts)
