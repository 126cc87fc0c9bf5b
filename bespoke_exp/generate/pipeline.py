"""The only module (with the demo builder) that touches diffusers: load a base pipeline
once per process, switch LoRA epochs on it, generate paired-seed images.

Generation takes a batch of (prompt, seed) items with one torch.Generator per image,
so an image depends only on its own seed, never on what it was batched with. Prompts are
encoded as the user's tools read them (generate/prompt_encoding.py, with the text side in
generate/prompt_chunks.py), and sampler names are mapped to diffusers schedulers
(`SCHEDULERS`).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from bespoke_exp.generate import prompt_chunks
from bespoke_exp.generate.prompt_encoding import prompt_chunk_count, prompt_conditioning, text_encoders
from bespoke_exp.interrupts import interrupts_deferred

log = logging.getLogger(__name__)

ADAPTER_NAME = "epoch_lora"


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler as A1111 and kohya name it: the diffusers scheduler and the flags that make it so
    (the table in diffusers' scheduler docs, "A1111/k-diffusion -> diffusers")."""

    scheduler: str  # diffusers class name
    karras: bool = False  # Karras sigma spacing (use_karras_sigmas=True)
    options: Mapping[str, object] = field(default_factory=dict)  # more from_config overrides
    needs: str | None = None  # an optional package the scheduler needs to run
    instead: str | None = None  # the closest sampler without that package


_DPMPP = "DPMSolverMultistepScheduler"
_SDE = {"algorithm_type": "sde-dpmsolver++"}
# Names as the user's tools write them (A1111's "DPM++ 2M Karras" is dpmpp_2m_karras); `euler` first.
SCHEDULERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler_karras": SamplerSpec("EulerDiscreteScheduler", karras=True),
    "euler_a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "heun_karras": SamplerSpec("HeunDiscreteScheduler", karras=True),
    "dpm2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm2_karras": SamplerSpec("KDPM2DiscreteScheduler", karras=True),
    "dpm2_a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "dpm2_a_karras": SamplerSpec("KDPM2AncestralDiscreteScheduler", karras=True),
    "lms": SamplerSpec("LMSDiscreteScheduler"),
    "lms_karras": SamplerSpec("LMSDiscreteScheduler", karras=True),
    "dpmpp_2m": SamplerSpec(_DPMPP, options={"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": SamplerSpec(_DPMPP, karras=True, options={"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": SamplerSpec(_DPMPP, options=_SDE),
    "dpmpp_2m_sde_karras": SamplerSpec(_DPMPP, karras=True, options=_SDE),
    # DPM++ SDE (single-step, Brownian-tree noise) is its own sampler; diffusers runs it only with
    # torchsde. Never silently swapped for DPM++ 2M SDE: a sweep would compare two names that are
    # one sampler. Refused with the alternative named when torchsde is missing.
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", needs="torchsde", instead="dpmpp_2m_sde"),
    "dpmpp_sde_karras": SamplerSpec(
        "DPMSolverSDEScheduler", karras=True, needs="torchsde", instead="dpmpp_2m_sde_karras"
    ),
    "ddim": SamplerSpec("DDIMScheduler"),
    "unipc": SamplerSpec("UniPCMultistepScheduler"),
    "deis": SamplerSpec("DEISMultistepScheduler"),
}
# Set on every scheduler that takes them, so a model whose own scheduler config turns one on
# (some finetunes ship Karras sigmas) can't make `euler` mean Euler Karras.
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
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
    long_prompts: str = "chunk"  # chunk: 75-token chunks, as A1111/ComfyUI; truncate: the first 77 tokens
    prompt_weighting: bool = False  # A1111's (word:1.2) / [word] syntax; off: brackets are plain text
    clip_skip: int | None = None  # A1111's count (2 = penultimate layer, SDXL's own); None: the model's


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
HUB_PROBE_TIMEOUT_S = 2.0  # a reachable hub answers in well under a second
SD_LATENT_SCALE = 8  # pixels per latent of every SD 1.x / SDXL VAE


def latent_scale(pretrained: str) -> int:
    """Pixels per latent of the model's VAE (2 ** its downsampling steps), read from its
    `vae/config.json` without loading it: in a local folder or the Hugging Face cache; else SD's 8."""
    import json

    config = Path(pretrained).expanduser() / "vae" / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(pretrained, "vae/config.json")
        except Exception:  # not a hub id either: the loader will say so
            cached = None
        if not isinstance(cached, str):
            return SD_LATENT_SCALE
        config = Path(cached)
    try:
        levels = len(json.loads(config.read_text())["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return SD_LATENT_SCALE
    return 2 ** (levels - 1)


def _model_unavailable(pretrained: str) -> str | None:
    """Why `pretrained` can't load on this machine, found in at most HUB_PROBE_TIMEOUT_S instead
    of diffusers' own retries and timeouts; None when it may load: a local folder, a hub id
    whose model_index.json is in the local Hugging Face cache, or a hub that answers."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(pretrained).expanduser().is_dir():
        return None
    try:
        validate_repo_id(pretrained)
    except HFValidationError:
        return "it is not a folder on this machine, nor a hub id (owner/name)"
    if isinstance(try_to_load_from_cache(pretrained, "model_index.json"), str):
        return None
    missing = f"it is not a local folder, nor in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        return f"{missing}, and offline mode is on (HF_HUB_OFFLINE=1)"
    answered: list[bool] = []

    def probe() -> None:
        try:
            request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
            urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # an error page is an answer: the hub is there
        except Exception:
            return  # no network, no name resolution, refused, timed out
        answered.append(True)

    # A daemon thread: name resolution has no timeout of its own and must not hold up the exit.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S)  # returns as soon as the probe has its answer (or error)
    if not answered:
        return f"{missing}, and the hub ({constants.ENDPOINT}) can't be reached from this machine"
    return None


def load_pipeline(
    pretrained: str, *, device: str = "auto", dtype: str | None = None, variant: str | None = None
):
    """The base pipeline, loaded once per process and shared by every job after it.

    `pretrained` is a hub id or a local folder saved with `save_pretrained`. A hub id that is
    neither cached here nor downloadable fails in seconds, before diffusers is even imported.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    key = (pretrained, device, torch_dtype, variant)
    if key not in _PIPELINES:
        problem = _model_unavailable(pretrained)
        if problem:
            raise ModelLoadError(
                f"model.pretrained={pretrained!r} could not be loaded: {problem}. Fix: "
                "model.pretrained=/path/to/a/save_pretrained/folder (a copy of the pipeline on this "
                f"machine), or download it first where the hub can be reached (hf download {pretrained})"
            )
        from diffusers import DiffusionPipeline

        _PIPELINES.clear()  # one base model in memory at a time
        local = Path(pretrained).is_dir()
        log.info("loading base pipeline %s on %s (%s)", pretrained, device, torch_dtype)
        try:
            with quiet_loading():
                pipe = DiffusionPipeline.from_pretrained(
                    pretrained,
                    dtype=torch_dtype,
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


def scheduler_problem(name: object) -> str | None:
    """Why `sampler.scheduler=name` can't run here (one line), or None."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        return f"sampler.scheduler={name!r} is not one of {', '.join(SCHEDULERS)}"
    spec = SCHEDULERS[name]
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        return (
            f"sampler.scheduler={name} needs the {spec.needs} package, which is not installed "
            f"(pip install {spec.needs}); {spec.instead} is the closest sampler without it"
        )
    return None


def build_scheduler(name: str, base_config: Mapping[str, object]):
    """The scheduler `name` stands for, built from a model's scheduler config (its betas,
    timestep spacing and prediction type) with the name's own flags on top."""
    import diffusers

    problem = scheduler_problem(name)
    if problem:
        raise ValueError(problem)
    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.scheduler)
    accepted = inspect.signature(cls.__init__).parameters
    flags = {flag: False for flag in _SIGMA_FLAGS if flag in accepted}
    if spec.karras:
        flags["use_karras_sigmas"] = True
    return cls.from_config(dict(base_config), **flags, **spec.options)


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler, always starting from the model's own scheduler config."""
    base_config = next(cfg for p, cfg in _PIPELINES.values() if p is pipe)
    pipe.scheduler = build_scheduler(name, base_config)


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
            # A kill inside the loader's native code would surface here as a LoraLoadError.
            with interrupts_deferred(), quiet_loading():
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
    with quiet_truncation():  # transformers warns of the length; the job reports it once itself
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


@contextmanager
def quiet_loading() -> Iterator[None]:
    # diffusers' and transformers' per-component progress bars: one pair per LoRA switch would
    # bury the job's own progress lines. So would diffusers' note, twice per load, that a
    # UNet-only LoRA (kohya's --network_train_unet_only, common for SDXL) has no text-encoder
    # keys, and transformers' two notes that image processors no SDXL pipeline uses for text to
    # image fall back to PIL without torchvision. Other warnings and errors still surface.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    shown = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    loaders = [logging.getLogger(f"diffusers.loaders.{name}") for name in ("lora_base", "peft")]
    loaders.append(logging.getLogger("transformers.utils.import_utils"))
    for logger in loaders:
        logger.addFilter(_no_unactionable_note)
    try:
        yield
    finally:
        for logger in loaders:
            logger.removeFilter(_no_unactionable_note)
        if shown[0]:
            diffusers_logging.enable_progress_bar()
        if shown[1]:
            transformers_logging.enable_progress_bar()


_UNACTIONABLE = ("No LoRA keys associated to CLIPTextModel", "requires torchvision (not installed)")


def _no_unactionable_note(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(note in message for note in _UNACTIONABLE)


def _batches(
    pipe, items: Sequence[GenerationItem], settings: SamplerSettings
) -> list[tuple[list[GenerationItem], int]]:
    """Runs of consecutive items, at most batch_size long, whose prompts take one chunk count
    (the negative prompt's included): padded to a longer neighbour's length, a prompt would be
    conditioned differently than when it runs alone."""
    negative = prompt_chunk_count(pipe, settings.negative_prompt, settings) if settings.negative_prompt else 1
    counts: dict[str, int] = {}
    batches: list[tuple[list[GenerationItem], int]] = []
    for item in items:
        if item.prompt not in counts:
            counts[item.prompt] = max(negative, prompt_chunk_count(pipe, item.prompt, settings))
        n_chunks = counts[item.prompt]
        if not batches or batches[-1][1] != n_chunks or len(batches[-1][0]) == settings.batch_size:
            batches.append(([], n_chunks))
        batches[-1][0].append(item)
    return batches


def generate(
    pipe, items: Sequence[GenerationItem], settings: SamplerSettings
) -> Iterator[tuple[GenerationItem, Image.Image]]:
    """Yield (item, image) in order, at most `settings.batch_size` images per pipeline call."""
    device = pipe.device.type
    with quiet_truncation():
        batches = _batches(pipe, items, settings)
    for batch, n_chunks in batches:
        generators = [torch.Generator(device=device).manual_seed(item.seed) for item in batch]
        with torch.inference_mode(), quiet_truncation():
            images = pipe(
                **prompt_conditioning(pipe, [item.prompt for item in batch], settings, n_chunks),
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                width=settings.width,
                height=settings.height,
                generator=generators,
                output_type="pil",
            ).images
        yield from zip(batch, images)


_TOKENIZERS: dict[str, list] = {}


def load_tokenizers(pretrained: str) -> list:
    """The tokenizers of the pipeline at `pretrained` (a loaded pipeline's own, else read from
    its tokenizer folders), without loading any model."""
    for (path, *_), (pipe, _) in _PIPELINES.items():
        if path == pretrained:
            return [tokenizer for tokenizer, _ in text_encoders(pipe)]
    if pretrained not in _TOKENIZERS:
        from transformers import AutoTokenizer

        local = Path(pretrained).is_dir()
        found = []
        for folder in ("tokenizer", "tokenizer_2"):
            try:
                found.append(
                    AutoTokenizer.from_pretrained(pretrained, subfolder=folder, local_files_only=local)
                )
            except OSError:  # a pipeline with one text encoder
                continue
        if not found:
            raise ModelLoadError(f"model.pretrained={pretrained!r} has no tokenizer to read prompts with")
        _TOKENIZERS[pretrained] = found
    return _TOKENIZERS[pretrained]


def truncated_prompts(
    pretrained: str, prompts: Mapping[str, str], *, weighting: bool = False
) -> dict[str, tuple[int, int]]:
    """For each prompt (by id) longer than a truncating text encoder reads: (characters of the
    prompt it reads, tokens it reads, BOS/EOS included). Plain data for scoring, which must not
    load a tokenizer itself."""
    found = {}
    with quiet_truncation():
        for prompt_id, text in prompts.items():
            cuts = []
            fragments = prompt_chunks.fragments(text, weighting)
            for tokenizer in load_tokenizers(pretrained):
                tokens = prompt_chunks.tokenize(tokenizer, fragments, offsets=True)
                cut = prompt_chunks.read_chars(tokens, size=int(tokenizer.model_max_length) - 2)
                if cut is not None:
                    cuts.append((cut, int(tokenizer.model_max_length)))
            if cuts:
                found[prompt_id] = min(cuts)
    return found
