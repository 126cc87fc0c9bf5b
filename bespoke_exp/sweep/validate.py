"""Refuse a config before it costs anything: every problem named by key, value and what
is allowed, before a run is created or a model loads.

`config_problems(cfg)` lists what is wrong with one job's config; `validate_job_config`
raises them as one ConfigError. The sweep callback runs the same checks on every job's
composed config (swept values included) before the sweep's parent run exists.
"""

from __future__ import annotations

import math
import re
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
# A prompt id names image files, artifact folders and MLflow metrics (by_prompt/<id>/...): it must be
# safe in all three on every filesystem.
PROMPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
PROMPT_ID_FORM = "1-64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit"
SPLITS = ("train", "heldout")
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
    problems += _image_size(cfg)
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


def _image_size(cfg: DictConfig) -> list[str]:
    """Width and height: multiples of the model's latent size, with room for one latent per cell
    at least. A smaller image can't draw `prompts.cells` cells: its few pixels score as if flat
    art, above real images."""
    from bespoke_exp.generate.pipeline import SD_LATENT_SCALE, latent_scale

    problems: list[str] = []
    cells = _value(cfg, "prompts.cells")
    pretrained = OmegaConf.select(cfg, "model.pretrained", throw_on_missing=False)  # ???: _model says so
    scale = latent_scale(pretrained) if isinstance(pretrained, str) else SD_LATENT_SCALE
    for key in ("width", "height"):
        size = _value(cfg, f"sampler.{key}")
        if not _is_int(size) or size <= 0 or size % scale:
            problems.append(f"sampler.{key}={size!r} must be a positive multiple of {scale}")
        elif _is_int(cells) and cells > 0 and size < cells * scale:
            problems.append(
                f"sampler.{key}={size} is too small for {cells} cells: the model draws one latent per "
                f"{scale} px, so {cells} cells need at least {cells * scale} px (prompts.cells={cells})"
            )
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
    weights = OmegaConf.to_container(weights) if OmegaConf.is_dict(weights) else {}
    for key, weight in weights.items():
        try:
            metric_spec(key)
        except KeyError:
            problems.append(f"metrics.weights.{key}: no such metric (see bespoke_exp/scoring/registry.py)")
        if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
            problems.append(f"metrics.weights.{key}={weight!r} must be a finite number >= 0")
    if not any(_is_number(w) and math.isfinite(w) and w > 0 for w in weights.values()):
        problems.append(
            "metrics.weights: no metric has a weight > 0, so every image's score would be 0 and the "
            "ranking arbitrary; give at least one metric a positive weight"
        )
    _fraction(problems, "metrics.pass_share", _value(cfg, "metrics.pass_share"), "of a box that must match")
    _fraction(problems, "metrics.near_copy", _value(cfg, "metrics.near_copy"), "of cells a near-copy shares")
    tolerance = _value(cfg, "metrics.tolerance")
    if not _is_int(tolerance) or tolerance < 0:
        problems.append(f"metrics.tolerance={tolerance!r} must be an integer >= 0 (cells of slack)")
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


def _fraction(problems: list[str], name: str, value: object, what: str) -> None:
    """A share: finite, above 0, at most 1."""
    if not _is_number(value) or not math.isfinite(value) or not 0 < value <= 1:
        problems.append(f"{name}={value!r} must be a number in (0, 1] (the share {what})")


def _prompts(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    cells = _value(cfg, "prompts.cells")
    if not _is_int(cells) or cells < 2:
        problems.append(f"prompts.cells={cells!r} must be an integer >= 2 (cells per side of the art: 24)")
    items = _value(cfg, "prompts.items") or []
    if len(items) == 0:
        problems.append(f"prompts={_value(cfg, 'prompts.name')!r} has no items")
    ids = [item.get("id") for item in items]
    if len(set(map(str, ids))) != len(ids):
        problems.append(f"prompts.items ids must be unique, got {ids}")
    for item in items:
        problems += _prompt_item(item, cells)
    return problems


def _prompt_item(item: DictConfig, cells: object) -> list[str]:
    """One prompt: a safe id, a split the analysis knows, a text whose coordinates are on the grid."""
    prompt_id = item.get("id")
    prompt_id = str(prompt_id) if _is_int(prompt_id) else prompt_id  # YAML reads `id: 7` as a number
    if not isinstance(prompt_id, str) or not PROMPT_ID.fullmatch(prompt_id):
        long = isinstance(prompt_id, str) and len(prompt_id) > 80
        shown = f"{prompt_id[:80]}..." if long else prompt_id
        return [f"prompts item id {shown!r} must be {PROMPT_ID_FORM} (it names files and MLflow metrics)"]
    problems = []
    split = item.get("split")
    if split not in (None, "", *SPLITS):
        problems.append(
            f"prompts item {prompt_id!r}: split={split!r} must be train (the captions' own wording) or "
            "heldout (wording or combinations the training captions lack)"
        )
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        return [*problems, f"prompts item {prompt_id!r}: text is empty; write the prompt to generate"]
    if _is_int(cells) and cells >= 2:
        try:
            validate_prompt(text, cells)
        except ValueError as error:
            problems.append(f"prompts item {prompt_id!r}: {error}")
    return problems


def _analysis(cfg: DictConfig) -> list[str]:
    """The end-of-sweep analysis settings: checked now, not after every job has run."""
    from bespoke_exp.analysis.diagnosis import Thresholds

    problems: list[str] = []
    metric = _value(cfg, "analysis.metric")
    try:
        metric_spec(str(metric))
    except KeyError:
        problems.append(
            f"analysis.metric={metric!r} is not a metric (score, or a key in bespoke_exp/scoring/registry.py)"
        )
    n_boot = _value(cfg, "analysis.n_boot")
    if not _is_int(n_boot) or n_boot < 100:
        problems.append(f"analysis.n_boot={n_boot!r} must be an integer >= 100 (bootstrap resamples)")
    confidence = _value(cfg, "analysis.confidence")
    if not _is_number(confidence) or not math.isfinite(confidence) or not 0.5 <= confidence < 1:
        problems.append(f"analysis.confidence={confidence!r} must be a number in [0.5, 1), e.g. 0.95")
    min_prompts = _value(cfg, "analysis.min_prompts")
    if not _is_int(min_prompts) or min_prompts < 2:
        problems.append(f"analysis.min_prompts={min_prompts!r} must be an integer >= 2")
    thresholds = _value(cfg, "analysis.thresholds")
    known = Thresholds.__dataclass_fields__
    for key, value in (OmegaConf.to_container(thresholds) if OmegaConf.is_dict(thresholds) else {}).items():
        if key not in known:
            problems.append(f"analysis.thresholds.{key}: no such threshold (known: {', '.join(known)})")
        elif key == "lookback" and (not _is_int(value) or value < 1):
            problems.append(f"analysis.thresholds.lookback={value!r} must be an integer >= 1 (epochs)")
        elif not _is_number(value) or not math.isfinite(value) or value < 0:
            problems.append(f"analysis.thresholds.{key}={value!r} must be a finite number >= 0")
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
    _analysis,
)
# What scoring stored images needs: no model, checkpoint or sampler.
SCORING_CHECKS: tuple[Callable[[DictConfig], list[str]], ...] = (
    _training_images,
    _metrics,
    _prompts,
    _analysis,
)
