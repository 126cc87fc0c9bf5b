"""Refuse a config before it costs anything: what the types in `config/schema.py` can't say
(ranges, finiteness, files and folders, what this machine has, rules across keys), every
problem named by key, value and what is allowed, before a run is created or a model loads.
A value of the wrong type never gets this far: composing the config refuses it.

`config_problems(cfg)` lists what is wrong with one job's config; `validate_job_config`
raises them as one ConfigError. The sweep callback runs the same checks on every job's
composed config (swept values included) before the sweep's parent run exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from bespoke_exp.config import ConfigError
from bespoke_exp.config.params import BASE_EPOCH
from bespoke_exp.config.schema import MIN_N_BOOT, Thresholds, must
from bespoke_exp.generate import checkpoints
from bespoke_exp.generate.prompt_chunks import MODES as LONG_PROMPTS
from bespoke_exp.job.prompt_sets import template_items
from bespoke_exp.pixelart.grid import IMAGE_SUFFIXES
from bespoke_exp.scoring.expectations import validate_prompt
from bespoke_exp.scoring.palette import load_palette
from bespoke_exp.scoring.regions import parse_regions
from bespoke_exp.scoring.registry import metric_spec

DTYPES = ("auto", "float32", "float16", "bfloat16")
# A prompt id names image files, artifact folders and MLflow metrics (by_prompt/<id>/...): it must be
# safe in all three on every filesystem.
PROMPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
SPLITS = ("train", "heldout")
PALETTE_WORDS = ("auto", "prompts", "train_dir")


def validate_job_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of one job's config (one line each)."""
    raise_problems(config_problems(cfg))


def raise_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem, one per line; nothing when there are none."""
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def config_problems(cfg: DictConfig, checks: tuple | None = None) -> list[str]:
    """Every problem of one job's config: ranges, finiteness, files and folders, scheduler /
    dtype / device availability, metric weights, palette, regions, prompts, analysis."""
    problems: list[str] = []
    for check in checks or _CHECKS:
        try:
            problems += check(cfg)
        except OmegaConfBaseException as error:  # a missing ??? value or a broken interpolation
            problems.append(_omegaconf_message(error))
    return list(dict.fromkeys(problems))


def _value(cfg: DictConfig, key: str) -> object:
    """The resolved value at a dotted key; raises OmegaConf's error for ??? and bad interpolations."""
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", "") or "?"
    if isinstance(error, MissingMandatoryValue):
        return f"{key} is not set (???); set it on the command line, e.g. {key}=..."
    return f"{key}: {str(error).splitlines()[0]}"


def _finite(problems: list[str], name: str, value: float, above: float, strictly: bool = False) -> None:
    """A finite number >= `above` (> `above` when `strictly`)."""
    if not math.isfinite(value):
        problems.append(f"{name}={value} must be a finite number")
    elif value < above or (strictly and value == above):
        problems.append(f"{name}={value:g} must be {'>' if strictly else '>='} {above:g}")


def _sweep_axes(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    epoch, final = _value(cfg, "epoch"), _value(cfg, "checkpoint.epochs")
    if final < 1:
        problems.append(f"checkpoint.epochs={final} must be {must('checkpoint.epochs')}")
    elif not (epoch == BASE_EPOCH or 1 <= epoch <= final):
        problems.append(
            f"epoch={epoch} is outside 1..{final} (checkpoint.epochs={final}); "
            f"epoch={BASE_EPOCH} is the base model without the LoRA"
        )
    _finite(problems, "guidance", _value(cfg, "sampler.guidance"), 0)
    return problems + _lora_scale(cfg) + _trigger_words(cfg)


def _lora_scale(cfg: DictConfig) -> list[str]:
    """The LoRA strength the job applies (checkpoint.lora_scale, which follows the top-level
    `lora_scale` unless the `checkpoint.lora_scale=` spelling set it apart): finite and > 0."""
    scale = _value(cfg, "checkpoint.lora_scale")
    # Name the key the user wrote: the shortcut, unless checkpoint.lora_scale was set apart from it.
    name = "lora_scale" if str(_value(cfg, "lora_scale")) == str(scale) else "checkpoint.lora_scale"
    if math.isfinite(scale) and scale > 0:
        return []
    why = (
        "the LoRA strength; sweep with lora_scale=0.6,0.8,1.0; "
        f"use epoch={BASE_EPOCH} for the base model without the LoRA"
    )
    return [f"{name}={scale:g} must be a finite number > 0 ({why})"]


def _trigger_words(cfg: DictConfig) -> list[str]:
    """checkpoint.trigger_words: null (read from the LoRA header) or words to leave out."""
    words = _value(cfg, "checkpoint.trigger_words")
    if words is None:
        return []
    if not words or any(not str(w).strip() for w in words):
        return [
            f"checkpoint.trigger_words={list(words)} must be null (read from the LoRA's header) or a "
            "list of non-empty words, e.g. [TOK,bespoke]"
        ]
    return []


def _sampler(cfg: DictConfig) -> list[str]:
    from bespoke_exp.generate.schedulers import scheduler_problem

    problems: list[str] = []
    if _value(cfg, "sampler.steps") <= 0:
        problems.append(f"sampler.steps={_value(cfg, 'sampler.steps')} must be > 0")
    problems += _image_size(cfg)
    seeds = list(_value(cfg, "sampler.seeds"))
    if not seeds:
        problems.append("sampler.seeds is empty; give at least one seed, e.g. [0, 1]")
    elif min(seeds) < 0:
        problems.append(f"sampler.seeds={seeds} must be non-negative integers")
    if _value(cfg, "sampler.batch_size") <= 0:
        problems.append(f"sampler.batch_size={_value(cfg, 'sampler.batch_size')} must be an integer > 0")
    scheduler = scheduler_problem(_value(cfg, "sampler.scheduler"))  # unknown, or needs a missing package
    if scheduler:
        problems.append(scheduler)
    mode = _value(cfg, "sampler.long_prompts")
    if mode not in LONG_PROMPTS:
        problems.append(
            f"sampler.long_prompts={mode!r} must be chunk (75-token chunks, as A1111 / ComfyUI) "
            "or truncate (the first 77 tokens, as diffusers alone)"
        )
    skip = _value(cfg, "sampler.clip_skip")
    if skip is not None and skip < 1:
        problems.append(f"sampler.clip_skip={skip} must be {must('sampler.clip_skip')}")
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
        if size <= 0 or size % scale:
            problems.append(f"sampler.{key}={size} must be a positive multiple of {scale}")
        elif cells > 0 and size < cells * scale:
            problems.append(
                f"sampler.{key}={size} is too small for {cells} cells: the model draws one latent per "
                f"{scale} px, so {cells} cells need at least {cells * scale} px (prompts.cells={cells})"
            )
    return problems


def _model(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    pretrained = _value(cfg, "model.pretrained")
    if not pretrained.strip():
        problems.append(f"model.pretrained={pretrained!r} must be {must('model.pretrained')}")
    elif (
        pretrained.startswith(("/", ".", "~"))
        and not Path(pretrained).expanduser().is_dir()
        and not demo_pending(cfg, pretrained)
    ):
        problems.append(
            f"model.pretrained={pretrained} is not a folder (a pipeline saved with save_pretrained)"
        )
    family = _value(cfg, "model.family")
    if family not in checkpoints.BASE_FAMILIES:
        problems.append(
            f"model.family={family!r} is not one of {', '.join(checkpoints.BASE_FAMILIES)} "
            "(the LoRA family the base model takes)"
        )
    dtype = _value(cfg, "model.dtype")
    if dtype not in DTYPES:
        problems.append(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    span = _value(cfg, "model.guidance_range")
    if span is not None and not (
        len(span) == 2 and all(math.isfinite(v) and v > 0 for v in span) and span[0] <= span[1]
    ):
        problems.append(f"model.guidance_range={list(span)} must be null or [low, high] with 0 < low <= high")
    return problems + _device_problems(_value(cfg, "model.device"))


def guidance_warning(cfg: DictConfig, guidances: list[float]) -> str | None:
    """One line when guidance values to be swept lie outside the range the model follows
    prompts in (`model.guidance_range`), naming the range; None when inside or no range."""
    span = _value(cfg, "model.guidance_range")
    if span is None:
        return None
    low, high = (float(v) for v in span)
    outside = sorted({g for g in guidances if not low <= g <= high})
    if not outside:
        return None
    values = ", ".join(f"{g:g}" for g in outside)
    return (
        f"guidance {values} is outside {low:g}-{high:g}, the range model={_value(cfg, 'model.name')} "
        "follows prompts in (model.guidance_range): expect burnt colours above it and prompts "
        "ignored below it; the sweep goes on"
    )


def _device_problems(device: str) -> list[str]:
    import torch

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
    if not Path(folder).is_dir():
        return [
            f"checkpoint.dir={folder} is not a folder; point it at the folder with {stem}-000001.safetensors"
        ]
    final = _value(cfg, "checkpoint.epochs")
    if final >= 1 and not checkpoints.available_epochs(Path(folder), stem, final):
        others = sorted(p.name for p in Path(folder).glob("*.safetensors"))[:3]
        hint = f" (it holds {', '.join(others)}: is checkpoint.stem right?)" if others else ""
        return [f"checkpoint.dir={folder} has no file named {stem}*.safetensors{hint}"]
    return []


def _training_images(cfg: DictConfig) -> list[str]:
    train_dir = _value(cfg, "checkpoint.train_dir")
    if train_dir is None or demo_pending(cfg, train_dir):
        return []
    folder = Path(train_dir)
    if not folder.is_dir():
        return [f"checkpoint.train_dir={train_dir} is not a folder (the training images, or null to skip)"]
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
        return [f"checkpoint.train_dir={train_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})"]
    return []


def _training_logs(cfg: DictConfig) -> list[str]:
    train_logs = _value(cfg, "checkpoint.train_logs")
    if train_logs is None or demo_pending(cfg, train_logs) or _demo_adds_logs(cfg, train_logs):
        return []
    folder = Path(train_logs).expanduser()
    if not folder.is_dir():
        return [
            f"checkpoint.train_logs={train_logs} is not a folder (the trainer's TensorBoard "
            "--logging_dir, or null to skip)"
        ]
    # The glob analysis.training_log reads (job may not import analysis): cheap, no tensorboard.
    if next(folder.rglob("events.out.tfevents.*"), None) is None:
        return [
            f"checkpoint.train_logs={train_logs} holds no TensorBoard event files "
            "(events.out.tfevents.*); point it at the trainer's --logging_dir, or null to skip"
        ]
    return []


def _demo_adds_logs(cfg: DictConfig, path: object) -> bool:
    """A demo built before it shipped its training log gets it when the first job builds."""
    from bespoke_exp.demo.build import SHIPPED_WEIGHTS

    demo = Path(str(_value(cfg, "paths.demo")))
    return (
        bool(_value(cfg, "model.build_demo"))
        and Path(str(path)) == demo / "logs"
        and (SHIPPED_WEIGHTS / "logs").is_dir()
    )


def _metrics(cfg: DictConfig) -> list[str]:
    problems: list[str] = []
    weights = OmegaConf.to_container(_value(cfg, "metrics.weights"))
    for key, weight in weights.items():
        try:
            metric_spec(key)
        except KeyError:
            problems.append(f"metrics.weights.{key}: no such metric (see bespoke_exp/scoring/registry.py)")
        if not math.isfinite(weight) or weight < 0:
            problems.append(f"metrics.weights.{key}={weight!r} must be a finite number >= 0")
    if not any(math.isfinite(w) and w > 0 for w in weights.values()):
        problems.append(
            "metrics.weights: no metric has a weight > 0, so every image's score would be 0 and the "
            "ranking arbitrary; give at least one metric a positive weight"
        )
    _share(problems, "metrics.pass_share", _value(cfg, "metrics.pass_share"), "of a box that must match")
    _share(problems, "metrics.near_copy", _value(cfg, "metrics.near_copy"), "of cells a near-copy shares")
    if _value(cfg, "metrics.tolerance") < 0:
        problems.append(
            f"metrics.tolerance={_value(cfg, 'metrics.tolerance')} must be {must('metrics.tolerance')}"
        )
    problems += _palette_problems(cfg)
    try:
        parse_regions(OmegaConf.to_container(_value(cfg, "metrics.regions")))
    except (ValueError, TypeError, KeyError) as error:
        problems.append(f"metrics.regions: {error}")
    return problems


def _share(problems: list[str], name: str, value: float, what: str) -> None:
    """A share: finite, above 0, at most 1."""
    if not 0 < value <= 1:  # NaN fails this too
        problems.append(f"{name}={value!r} must be a number in (0, 1] (the share {what})")


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
    cells = _value(cfg, "prompts.cells")
    if cells < 2:
        problems.append(f"prompts.cells={cells} must be {must('prompts.cells')}")
    items = template_items(cfg, problems)  # the items, then what the templates expand to
    if len(items) == 0:
        problems.append(f"prompts={_value(cfg, 'prompts.name')!r} has no items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        problems.append(f"prompts.items ids must be unique, got {ids}")
    for item in items:
        problems += _prompt_item(item, cells)
    return problems


def _prompt_item(item: DictConfig, cells: int) -> list[str]:
    """One prompt: a safe id, a split the analysis knows, a text whose coordinates are on the grid."""
    if not PROMPT_ID.fullmatch(item.id):
        shown = f"{item.id[:80]}..." if len(item.id) > 80 else item.id
        return [
            f"prompts item id {shown!r} must be {must('prompts.items.id')} "
            "(it names files and MLflow metrics)"
        ]
    problems = []
    if item.split not in (None, "", *SPLITS):
        problems.append(
            f"prompts item {item.id!r}: split={item.split!r} must be train (the captions' own wording) or "
            "heldout (wording or combinations the training captions lack)"
        )
    if not item.text.strip():
        return [*problems, f"prompts item {item.id!r}: text is empty; write the prompt to generate"]
    if cells >= 2:
        try:
            validate_prompt(item.text, cells)
        except ValueError as error:
            problems.append(f"prompts item {item.id!r}: {error}")
    return problems


def _analysis(cfg: DictConfig) -> list[str]:
    """The end-of-sweep analysis settings: checked now, not after every job has run."""
    problems: list[str] = []
    metric = _value(cfg, "analysis.metric")
    try:
        metric_spec(metric)
    except KeyError:
        problems.append(
            f"analysis.metric={metric!r} is not a metric (score, or a key in bespoke_exp/scoring/registry.py)"
        )
    n_boot = _value(cfg, "analysis.n_boot")
    if n_boot < MIN_N_BOOT:
        problems.append(f"analysis.n_boot={n_boot} must be {must('analysis.n_boot')}")
    confidence = _value(cfg, "analysis.confidence")
    if not 0.5 <= confidence < 1:  # NaN fails this too
        problems.append(f"analysis.confidence={confidence!r} must be a number in [0.5, 1), e.g. 0.95")
    if _value(cfg, "analysis.min_prompts") < 2:
        problems.append(f"analysis.min_prompts={_value(cfg, 'analysis.min_prompts')} must be an integer >= 2")
    known = {f.name for f in dataclasses.fields(Thresholds)}
    for key, value in OmegaConf.to_container(_value(cfg, "analysis.thresholds")).items():
        if key not in known:  # `+analysis.thresholds.x=...` adds keys past the schema
            problems.append(f"analysis.thresholds.{key}: no such setting (known: {', '.join(known)})")
        elif key == "lookback" and value < 1:
            problems.append(
                f"analysis.thresholds.lookback={value} must be {must('analysis.thresholds.lookback')}"
            )
        elif not math.isfinite(value) or value < 0:
            problems.append(f"analysis.thresholds.{key}={value!r} must be a finite number >= 0")
    return problems


_CHECKS: tuple[Callable[[DictConfig], list[str]], ...] = (
    _sweep_axes,
    _sampler,
    _model,
    _checkpoint_files,
    _training_images,
    _training_logs,
    _metrics,
    _prompts,
    _analysis,
)
# What scoring stored images needs: no model, checkpoint or sampler.
SCORING_CHECKS: tuple[Callable[[DictConfig], list[str]], ...] = (
    _training_images,
    _training_logs,
    _metrics,
    _prompts,
    _analysis,
)
