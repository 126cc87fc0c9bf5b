"""The base pipeline, loaded once per process, with LoRA epochs switched on it: devices and
dtypes, a model that is not on this machine refused in seconds, a sampler set from the model's
own scheduler config, and diffusers' notes the user can't act on kept quiet. With the sampler
table (schedulers.py) and the demo builder, the only code that imports diffusers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from bespoke_exp.generate.schedulers import build_scheduler
from bespoke_exp.interrupts import interrupts_deferred

log = logging.getLogger(__name__)

ADAPTER_NAME = "epoch_lora"


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler, always starting from the model's own scheduler config."""
    base_config = next(cfg for p, cfg in _PIPELINES.values() if p is pipe)
    pipe.scheduler = build_scheduler(name, base_config)


def loaded_pipeline(pretrained: str):
    """The pipeline already loaded from `pretrained` in this process, or None."""
    return next((pipe for (path, *_), (pipe, _) in _PIPELINES.items() if path == pretrained), None)


# The LoRA file whose adapter each cached pipeline holds (id(pipe) -> path, size, mtime).
_ADAPTER_FILES: dict[int, tuple[str, int, int]] = {}


@contextmanager
def lora_applied(pipe, checkpoint: Path | None, scale: float = 1.0) -> Iterator[None]:
    """Draw with a kohya/diffusers LoRA file applied as an adapter for the duration of the block.

    Outside the block the pipeline draws as the base model: the adapter is disabled, never
    fused, and unloaded when another file is applied. Kept loaded, it makes the next block with
    the same file (the jobs of one epoch, which the basic sweeper runs one after another) a
    strength setting instead of a load. `checkpoint=None` means the base model, with no adapter.
    """
    if checkpoint is None:
        unload_lora(pipe)  # the base model's job draws from the base weights alone
    elif _ADAPTER_FILES.get(id(pipe)) != (wanted := _file_key(checkpoint)):
        unload_lora(pipe)
        try:  # a load that fails half-way must not leave a half-applied adapter behind
            # A kill inside the loader's native code would surface here as a LoraLoadError.
            with interrupts_deferred(), quiet_loading():
                pipe.load_lora_weights(
                    str(checkpoint.parent), weight_name=checkpoint.name, adapter_name=ADAPTER_NAME
                )
        except Exception as error:
            unload_lora(pipe)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LoraLoadError(
                f"{checkpoint} could not be applied to the base model ({type(pipe).__name__}): {first_line}"
            ) from error
        _ADAPTER_FILES[id(pipe)] = wanted
    try:
        if checkpoint is not None:
            pipe.enable_lora()
            pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])
        yield
    except BaseException:
        unload_lora(pipe)  # whatever state a failure left, the next job starts from the base
        raise
    finally:
        if id(pipe) in _ADAPTER_FILES:
            pipe.disable_lora()


def _file_key(path: Path) -> tuple[str, int, int]:
    """A file as loaded: the same path rewritten (a trainer still saving) is another file."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def unload_lora(pipe) -> None:
    """Remove the adapter from `pipe`: its weights are the base's again, bit for bit."""
    pipe.unload_lora_weights()
    _ADAPTER_FILES.pop(id(pipe), None)


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
