"""What a run's config must be: one dataclass per config group, each default said once.

`conf/config.yaml` starts from `BespokeConfig` (registered in Hydra's ConfigStore as
`bespoke_schema`), so every group option in `conf/` is merged into these types: a value of the
wrong type, or a key no dataclass has, fails where the config is composed, and
`config.compose.type_problem` says so in one line. The YAML files hold what differs per option
(the demo's sampler, SDXL's model, the prompt sets, the metric weights); the defaults every
option shares live here. The composed config is the settings object: `OmegaConf.to_object`
gives these dataclasses, which the stages take as they are.

`must` in a field's metadata says what the value must be, for error messages; `job/validate.py`
checks what a type can't (ranges, files, cross-field rules).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from bespoke_exp.pixelart import CELLS

MIN_N_BOOT = 100  # fewer bootstrap resamples make a 95% interval's ends noise


def _must(default: Any = MISSING, must: str = "", **kwargs) -> Any:
    return field(default=default, metadata={"must": must}, **kwargs)


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: str = _must(must="a hub id or a folder saved with save_pretrained")
    family: str = "sdxl"  # the LoRA family this base takes (sdxl, sd1, flux): another family's is refused
    build_demo: bool = False  # build the embedded demo (once) if it is not there yet
    variant: str | None = None  # e.g. fp16: the hub's half-size weights
    device: str = "auto"  # auto: cuda, then mps, then cpu
    dtype: str = "auto"  # auto: float16 on CUDA, float32 elsewhere
    # [low, high]: the classifier-free guidance this model follows prompts at, from its own
    # measurements or card; a sweep outside it is warned about before it starts (None: no range)
    guidance_range: list[float] | None = None


@dataclass
class CheckpointConfig:
    dir: str = MISSING  # the folder holding {stem}-000001.safetensors ... {stem}.safetensors
    stem: str = MISSING
    epochs: int = _must(must="a positive integer (the trainer's last epoch)")  # its file: {stem}.safetensors
    lora_scale: float = "${lora_scale}"  # the top-level sweep axis
    train_dir: str | None = None  # the training images, to measure memorisation (None: skip)
    # The trainer's TensorBoard logs (kohya's --logging_dir): its loss per epoch is drawn beside
    # the held-out score (None: no training curve)
    train_logs: str | None = None
    # What trigger=off leaves out of every prompt; None: the LoRA header's trigger phrase, else
    # its caption tags (kohya's ss_tag_frequency), read from the final epoch's file for epoch=0.
    trigger_words: list[str] | None = None


@dataclass
class PromptConfig:
    id: str = _must(must="1-64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit")
    text: str = MISSING
    # train: a training caption's own phrases; heldout: what the captions lack. None: decided by
    # checkpoint.train_dir's captions when it is set (job/prompt_sets.py)
    split: str | None = None
    expectations: list[str] = field(default_factory=list)  # extra phrases in the prompt language


@dataclass
class PromptTemplateConfig:
    """Prompts made from one text with `{slot}`s: every combination of the slots' values, or a
    seeded sample of `limit` of them (job/prompt_sets.py expands them into `items`)."""

    id: str = _must(
        must="1-40 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit "
        "(the prefix of its prompts' ids)"
    )
    text: str = MISSING  # `{name}` marks a slot; `${...}` stays literal text, as in any prompt
    slots: dict[str, list[str]] = MISSING  # slot -> its values, in the order they expand
    # slot -> value -> extra expectations (phrases in the prompt language) its prompts carry
    expectations: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    limit: int | None = None  # None: every combination; N: a sample of N, the same every run
    seed: int = 0  # picks the sample
    split: str | None = None  # every prompt's split, as an item's (None: from the captions)


@dataclass
class PromptsConfig:
    name: str = MISSING
    cells: int = _must(CELLS, must="an integer >= 2 (cells per side of the art)")
    items: list[PromptConfig] = field(default_factory=list)
    templates: list[PromptTemplateConfig] = field(default_factory=list)  # expanded into items


@dataclass
class SamplerConfig:
    scheduler: str = "euler"  # A1111 / kohya names (generate.schedulers.SCHEDULERS)
    steps: int = _must(must="an integer > 0")
    guidance: float = "${guidance}"  # the top-level sweep axis
    width: int = _must(1024, must="a positive multiple of the model's latent size")
    height: int = _must(1024, must="a positive multiple of the model's latent size")
    seeds: list[int] = _must(must="a list of non-negative integers, e.g. [0, 1]")
    negative_prompt: str = ""
    # Images per pipeline call: each image depends only on its own seed (within one grey level),
    # but batch_size is part of the job's identity, so changing it re-runs jobs.
    batch_size: int = _must(1, must="an integer > 0")
    long_prompts: str = "chunk"  # chunk: 75-token chunks, as A1111 / ComfyUI; truncate: the first 77
    prompt_weighting: bool = False  # A1111's (word:1.2) / [word] syntax
    clip_skip: int | None = _must(
        None,
        must="null (the model's own layer) or an integer >= 1 "
        "(A1111's count: 2 = the penultimate layer, SDXL's own)",
    )


@dataclass
class TrackingConfig:
    uri: str = MISSING  # MLFLOW_TRACKING_URI wins over the group's default; tracking.uri=... over both
    experiment: str = "${oc.env:MLFLOW_EXPERIMENT_NAME,bespoke_exp}"
    artifact_location: str | None = None  # None: beside a sqlite store; a server's own choice
    registered_model: str | None = "${checkpoint.stem}"  # None: register nothing


@dataclass
class RegionConfig:
    boxes: str = MISSING  # "x=a-b y=c-d; ..."
    min_share: float = MISSING  # of the boxes' cells that must match (0: one cell is enough)


@dataclass
class MetricsConfig:
    cells: int = "${prompts.cells}"
    palette: Any = "auto"  # auto, train_dir, prompts, demo, a folder, or a list of names / #rrggbb
    tolerance: int = _must(1, must="an integer >= 0 (cells of slack)")
    pass_share: float = 0.75  # share of a box or region that must have the stated colour to pass
    near_copy: float = 0.9  # an image whose cells match a training image this closely is a near-copy
    weights: dict[str, float] = MISSING  # conf/metrics/default.yaml
    regions: dict[str, RegionConfig] = MISSING


@dataclass
class Thresholds:
    """Every numeric cut-off the diagnosis uses, in units of the ranked metric (0..1 score)."""

    poor: float = 0.5  # best combination below this: the LoRA is not working at any epoch or guidance
    min_effect: float = 0.01  # smallest paired difference worth acting on, even when significant
    # "Still improving" compares the last epoch with the one this many earlier.
    lookback: int = _must(2, must="an integer >= 1 (epochs)")
    gap_slope: float = 0.005  # train-minus-heldout gap growing faster than this per epoch ...
    gap_late: float = 0.05  # ... and at least this large at the last epoch
    near_copy_rate: float = 0.2  # share of an epoch's images that near-copy a training image
    guidance_spread: float = 0.05  # best-minus-worst guidance marginal above this: guidance matters
    axis_spread: float = 0.05  # the same for any further swept axis (lora_scale, ...)


@dataclass
class AnalysisConfig:
    """How a sweep is ranked and diagnosed (analysis.*). Changing these never invalidates jobs."""

    metric: str = "score"  # rank by this metric (direction from the metrics registry)
    n_boot: int = _must(2000, must=f"an integer >= {MIN_N_BOOT} (bootstrap resamples)")
    confidence: float = 0.95
    seed: int = 0  # of the bootstrap's draws: the same sweep always gets the same intervals
    # Fewer prompts: resample seeds within each prompt, and the intervals speak for these prompts only.
    min_prompts: int = 5
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass
class PathsConfig:
    root: str = "${bespoke_project_root:}"  # the folder holding conf/: mlruns/ lives here whatever the cwd
    demo: str = "${bespoke_demo_dir:}"  # the embedded demo's build (BESPOKE_EXP_DEMO_DIR overrides)


@dataclass
class BespokeConfig:
    """The whole config of a job; the sweep axes live at the top so the command line stays short."""

    model: ModelConfig = field(default_factory=ModelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # 0 is the base model without the LoRA (the baseline), at the same prompts and seeds.
    epoch: int = _must(
        "${checkpoint.epochs}", must="an integer (sweep with epoch=0,1,2,...,10; 0 is the base model)"
    )
    guidance: float = _must(7.5, must="a number")
    lora_scale: float = _must(
        1.0,
        must="a number > 0 (the LoRA strength; sweep with lora_scale=0.6,0.8,1.0; "
        "use epoch=0 for the base model without the LoRA)",
    )
    # false: every prompt without its trigger words (checkpoint.trigger_words), same ids and seeds.
    trigger: bool = _must(True, must="true or false (on/off; sweep with trigger=on,off)")
    # A job whose identical work already FINISHED in the experiment is reused; true runs it again.
    force: bool = False


def settings_from(cls: type, data: Any) -> Any:
    """A `cls` instance from plain data (a dict, a DictConfig, or None for the defaults), checked
    against its types: what a stage takes, from what a run recorded."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data or {}))


def register_schemas() -> None:
    """Make `bespoke_schema` (and each group's dataclass) known to Hydra; idempotent."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="bespoke_schema", node=BespokeConfig)


def must(key: str) -> str | None:
    """What the value at a dotted key must be, as the schema says it (None: it says nothing).
    A list's or a dict's entries are named by the key of the list (`prompts.items.id`)."""
    node: Any = BespokeConfig
    text = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return None
        text = next(f for f in dataclasses.fields(node) if f.name == part).metadata.get("must")
        node = typing.get_type_hints(node)[part]
        while typing.get_args(node) and not dataclasses.is_dataclass(node):  # list[X], dict[str, X]
            node = typing.get_args(node)[-1]
    return text
