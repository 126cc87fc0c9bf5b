"""The only module (with the demo builder) that touches diffusers: load a base pipeline
once per process, switch LoRA epochs on it, generate paired-seed images.

Generation takes a batch of (prompt, seed) items with one torch.Generator per image,
so an image depends only on its own seed, never on what it was batched with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger(__name__)

ADAPTER_NAME = "epoch_lora"
SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GenerationItem:
    prompt_id: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class SamplerSettings:
    scheduler: str
    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str
    batch_size: int


# The GPU this worker process pinned (see pin_worker_device); None: torch's current device.
_PINNED_CUDA: str | None = None


def worker_gpu_index(job_num: int, visible_gpus: int) -> int | None:
    """Which of the visible GPUs a launcher worker takes: job number modulo the count, so
    `hydra/launcher=joblib hydra.launcher.n_jobs=4` spreads its first four jobs over four GPUs.
    None with one GPU or none: SLURM (via submitit) already narrowed CUDA_VISIBLE_DEVICES to the
    job's own GPU, so there is nothing to choose."""
    if visible_gpus <= 1:
        return None
    return job_num % visible_gpus


def pin_worker_device(job_num: int) -> str | None:
    """Pin this process to one GPU, chosen from its first job's number, and keep it for every
    later job: the cached base pipeline lives on that device, and moving it would reload it.
    Returns the pinned device, or None when there is no choice to make."""
    global _PINNED_CUDA
    if _PINNED_CUDA is None and torch.cuda.is_available():
        index = worker_gpu_index(job_num, torch.cuda.device_count())
        if index is not None:
            # set_device too, so `torch.Generator(device="cuda")` lands on the pipeline's GPU.
            torch.cuda.set_device(index)
            _PINNED_CUDA = f"cuda:{index}"
            log.info("worker process pinned to %s (job %d)", _PINNED_CUDA, job_num)
    return _PINNED_CUDA


def resolve_device(name: str) -> str:
    """`auto` picks cuda, then mps, then cpu; `auto` and `cuda` mean the pinned GPU in a worker
    that pinned one. An explicit `cuda:N` is left alone."""
    if name == "cuda" and _PINNED_CUDA is not None:
        return _PINNED_CUDA
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return _PINNED_CUDA or "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere, unless the config names one."""
    if name in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"model.dtype={name!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


class ModelLoadError(RuntimeError):
    """The base model can't be loaded; every job of the sweep would fail the same way."""


class LoraLoadError(RuntimeError):
    """A LoRA file can't be applied to the base model; the message names the file."""


_PIPELINES: dict[tuple, object] = {}


def load_pipeline(
    pretrained: str, *, device: str = "auto", dtype: str | None = None, variant: str | None = None
):
    """The base pipeline, loaded once per process and shared by every job after it.

    `pretrained` is a hub id or a local folder saved with `save_pretrained`.
    """
    from diffusers import DiffusionPipeline

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    key = (pretrained, device, torch_dtype, variant)
    if key not in _PIPELINES:
        _PIPELINES.clear()  # one base model in memory at a time
        local = Path(pretrained).is_dir()
        log.info("loading base pipeline %s on %s (%s)", pretrained, device, torch_dtype)
        try:
            pipe = DiffusionPipeline.from_pretrained(
                pretrained,
                torch_dtype=torch_dtype,
                variant=variant,
                use_safetensors=True,
                local_files_only=local,
            )
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(
                f"model.pretrained={pretrained!r} could not be loaded: {first_line}"
            ) from error
        if not hasattr(pipe, "load_lora_weights"):
            raise ModelLoadError(f"model {pretrained!r} ({type(pipe).__name__}) cannot load LoRA weights")
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        _PIPELINES[key] = (pipe, dict(pipe.scheduler.config))
    return _PIPELINES[key][0]


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler, always starting from the model's own scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"sampler.scheduler={name!r} is not one of {', '.join(SCHEDULERS)}")
    base_config = next(cfg for p, cfg in _PIPELINES.values() if p is pipe)
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(base_config)


@contextmanager
def lora_applied(pipe, checkpoint: Path | None, scale: float = 1.0) -> Iterator[None]:
    """Load a kohya/diffusers LoRA file as an adapter for the duration of the block.

    The adapter is removed afterwards (never fused), so the cached base pipeline is
    exactly the base again for the next job. `checkpoint=None` means the base model.
    """
    if checkpoint is None:
        yield
        return
    try:  # a load that fails half-way must not leave a half-applied adapter behind
        try:
            pipe.load_lora_weights(
                str(checkpoint.parent), weight_name=checkpoint.name, adapter_name=ADAPTER_NAME
            )
            pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LoraLoadError(
                f"{checkpoint} could not be applied to the base model ({type(pipe).__name__}): {first_line}"
            ) from error
        yield
    finally:
        pipe.unload_lora_weights()


def count_prompt_tokens(pipe, prompt: str) -> tuple[int, int]:
    """(tokens in the prompt, tokens the text encoder reads), both counting BOS/EOS."""
    tokenizer = pipe.tokenizer
    return len(tokenizer(prompt, truncation=False).input_ids), int(tokenizer.model_max_length)


@contextmanager
def quiet_truncation() -> Iterator[None]:
    # diffusers warns on every call, with the whole padded batch; the job reports it once.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])


def generate(
    pipe, items: Sequence[GenerationItem], settings: SamplerSettings
) -> Iterator[tuple[GenerationItem, Image.Image]]:
    """Yield (item, image) in order, `settings.batch_size` images per pipeline call."""
    device = pipe.device.type
    for start in range(0, len(items), settings.batch_size):
        batch = items[start : start + settings.batch_size]
        generators = [torch.Generator(device=device).manual_seed(item.seed) for item in batch]
        with torch.inference_mode(), quiet_truncation():
            images = pipe(
                prompt=[item.prompt for item in batch],
                negative_prompt=[settings.negative_prompt] * len(batch),
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                width=settings.width,
                height=settings.height,
                generator=generators,
                output_type="pil",
            ).images
        yield from zip(batch, images)
