"""Plain builders the tests share (fixtures live in conftest.py): commands, stores, sweeps,
LoRA files, config folders and a tiny random-weight pipeline, each written once."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bespoke_exp.config import ConfigError, compose_config

# Heavy imports (torch, the validation's colour science) stay inside the helpers that need them:
# subprocesses import this module to build stores, and must start quickly.

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "bespoke_exp"
# The demo's kohya file names: STEM-000001.safetensors ... STEM.safetensors (the last epoch).
STEM = "Bespoke_Punks_24x24_Pixel_Art"
SECRET = "s3cr3t-token-value"  # an environment variable's value that must never be logged


def sqlite_uri(folder: Path) -> str:
    """The tracking URI of a SQLite store under `folder`, where the sweep command puts one."""
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


# --- config ------------------------------------------------------------------------------


def problems_with(*overrides: str) -> list[str]:
    """What refusing `overrides` says: composing's one line for a value of the wrong type or a key
    that does not exist, else every problem `config_problems` finds in the composed config."""
    from bespoke_exp.job.validate import config_problems

    try:
        cfg = compose_config(list(overrides))
    except ConfigError as error:
        return [str(error)]
    return config_problems(cfg)


def user_prompts(folder: Path, items: list[dict], name: str = "mine") -> Path:
    """A user's own config folder (for --config-dir / hydra.searchpath) holding prompts/<name>.yaml."""
    (folder / "prompts").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / f"{name}.yaml").write_text(
        OmegaConf.to_yaml({"name": name, "cells": 24, "items": items})
    )
    return folder


# --- the sweep command -------------------------------------------------------------------


def small_sweep_command(demo_dir: Path, *overrides: str, multirun: bool = True) -> list[str]:
    """`python -m bespoke_exp` on the test demo, shrunk for speed (2 steps, 192 px: one latent per cell)."""
    return [
        sys.executable, "-m", "bespoke_exp", *(["-m"] if multirun else []), f"paths.demo={demo_dir}",
        "prompts=seed_tests", "sampler.steps=2", "sampler.width=192", "sampler.height=192", *overrides,
    ]  # fmt: skip


def my_lora_folder(folder: Path, names: list[str]) -> list[str]:
    """Empty files `names` in `folder`, and the overrides that make it the checkpoint folder of a
    kohya run `My_Lora` of 8 epochs (`epoch=all` reads the epochs from the file names)."""
    for name in names:
        (folder / name).write_bytes(b"")
    return ["checkpoint=folder", f"checkpoint.dir={folder}", "checkpoint.stem=My_Lora", "checkpoint.epochs=8"]


# --- sweeps in a store, without generating -----------------------------------------------


def one_job_sweep(
    tracker,
    lora: Path,
    *,
    sha: str,
    score: float = 0.6,
    sweep_id: str = "s-1",
    metric: str = "score",
    poor: float = 0.5,
    **recorded,
):
    """A `Sweep` over one real job run in the store whose checkpoint is `lora`, recorded with
    `sha`, two images scoring `score` on `metric` (poor below `poor`, in its direction), and its
    recommendation; `recorded` sets prompt_set / scoring_identity."""
    import pandas as pd

    from bespoke_exp import analysis, tracking
    from bespoke_exp.config.schema import AnalysisConfig, Thresholds

    parent = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    job = tracking.start_run(tracker, "epoch=01 guidance=5", parent_run_id=parent)
    job_row = {"run_id": job, "epoch": 1, "guidance": 5.0, "checkpoint": str(lora)}
    images = pd.DataFrame(
        [{**job_row, "prompt_id": "p", "split": "", "seed": s, metric: score} for s in (0, 1)]
    )
    runs = pd.DataFrame([{**job_row, "checkpoint_sha256": sha}])
    sweep = analysis.Sweep(
        tracker,
        parent,
        sweep_id,
        runs,
        images,
        final_epoch=10,
        epochs=[1],
        guidances=[5.0],
        cells=24,
        sweep_dir=None,
        **recorded,
    )
    settings = AnalysisConfig(metric=metric, n_boot=100, thresholds=Thresholds(poor=poor))
    return sweep, analysis.recommend(sweep, settings)


def make_sweep(
    uri: str, *, status: str = "FINISHED", jobs: int = 2, finished: int = 2, pid: int | None = None
) -> str:
    """A sweep in the store as the sweep command leaves it: a parent run with `jobs` jobs, of which
    `finished` FINISHED (per-image tables and all); the parent `status`, RUNNING by process `pid`.
    Experiment "reading"; returns the parent's run id."""
    from bespoke_exp import tracking

    tracker = tracking.connect(uri, "reading")
    tags = {tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "20261203-120000-abcd"}
    if pid is not None:
        tags[tracking.TAG_PID] = str(pid)
    parent = tracking.start_run(tracker, "sweep", params={"sweep.jobs": str(jobs)}, tags=tags)
    for epoch in range(1, finished + 1):
        job = tracking.start_run(
            tracker,
            f"epoch={epoch:02d} guidance=1.5",
            parent_run_id=parent,
            params={"checkpoint.epochs": "10", "prompts.name": "demo"},
            tags={tracking.TAG_ROLE: "job", "epoch": str(epoch), "guidance": "1.5"},
        )
        rows = [
            {"prompt_id": p, "split": "heldout", "seed": s, "score": 0.5 + 0.1 * epoch + 0.01 * s}
            for p in ("a", "b")
            for s in (0, 1)
        ]
        tracking.log_table(tracker, job, rows, "metrics/per_image.json")
        tracking.finish_run(tracker, job)
    if status != "RUNNING":
        tracking.finish_run(tracker, parent, status)
    return parent


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


# --- filesystems ---------------------------------------------------------------------------


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A small real filesystem of its own (read-only or full on demand), or a skip saying why."""
    folder = Path(tempfile.mkdtemp(prefix="bespoke-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root with CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


# --- LoRA files ----------------------------------------------------------------------------

# Module names as trainers write them (a `.lora_down.weight` etc. is added per module).
SDXL_KOHYA = [  # kohya sd-scripts on SDXL: SGM UNet names, two text encoders
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
]
SD1_KOHYA = [
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
]
FLUX_KOHYA = [  # kohya's FLUX LoRAs also train CLIP-L under lora_te1_
    "lora_unet_double_blocks_0_img_attn_qkv",
    "lora_unet_single_blocks_37_linear1",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
]


def write_lora(
    path: Path,
    modules: Sequence[str] | Mapping[str, tuple[int, int]] = SDXL_KOHYA,
    *,
    rank: int | Mapping[str, int] = 4,
    alpha: float | Mapping[str, float] | None = 2.0,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """A kohya-format LoRA file with small random tensors: per module `.lora_down.weight`
    (rank x in), `.lora_up.weight` (out x rank) and, unless `alpha` is None, `.alpha`.
    `modules` names the modules (8 features in and out), or maps each name to its
    (in_features, out_features); `rank` and `alpha` are one value, or one per module."""
    import torch
    from safetensors.torch import save_file

    sizes = modules if isinstance(modules, Mapping) else {module: (8, 8) for module in modules}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (features_in, features_out) in sizes.items():
        r = rank[module] if isinstance(rank, Mapping) else rank
        tensors[f"{module}.lora_down.weight"] = torch.randn(r, features_in, generator=generator)
        tensors[f"{module}.lora_up.weight"] = torch.randn(features_out, r, generator=generator)
        if alpha is not None:
            a = alpha[module] if isinstance(alpha, Mapping) else alpha
            tensors[f"{module}.alpha"] = torch.tensor(float(a))
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_not_a_lora(path: Path) -> Path:
    """A real safetensors file holding a base model's tensor and no LoRA weights."""
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, str(path))
    return path


def write_kohya_run(folder: Path) -> Path:
    """A kohya run of 5 epochs named Run, with epoch 3's file missing (`Run.safetensors` is epoch 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, 4):
        write_lora(folder / f"Run-{epoch:06d}.safetensors", metadata=kohya_metadata(epoch), seed=epoch)
    write_lora(folder / "Run.safetensors", metadata=kohya_metadata(5), seed=5)
    return folder


def kohya_metadata(epoch: int, num_epochs: int = 5, **changes: str) -> dict[str, str]:
    """The header kohya's train_network writes (all strings), for epoch `epoch`."""
    import json

    metadata = {
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(num_epochs),
        "ss_steps": str(25 * epoch),
        "ss_max_train_steps": str(25 * num_epochs),
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_resolution": "(1024, 1024)",
        "ss_learning_rate": "0.0001",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_total_batch_size": "2",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_num_train_images": "50",
        "ss_cache_latents": "True",
        "ss_seed": "42",
        "ss_training_finished_at": str(1_700_000_000 + epoch),
        "ss_dataset_dirs": json.dumps({"10_bespoke": {"n_repeats": 10, "img_count": 5}}),
        "ss_tag_frequency": json.dumps(
            {"10_bespoke": {"TOK bespoke": 5, "pixel art": 5, "black pupils": 2, "blue background": 1}}
        ),
    }
    return {**metadata, **{f"ss_{key}": value for key, value in changes.items()}}


# --- a pipeline that is not the trained demo -----------------------------------------------


def save_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """A seeded random-weight pipeline of the demo's architecture (two CLIP text encoders, a
    text-time UNet, a 4-level VAE: diffusers' `get_dummy_components` recipe), written with
    `save_pretrained` so `load_pipeline` loads it as it loads any model folder. For tests that
    need a real pipeline's shapes, tokenizers and scheduler config, not the demo's training."""
    import torch

    from bespoke_exp.demo.tiny_pipeline import build_tiny_pipeline

    with torch.random.fork_rng():  # the global generator stays as the other tests left it
        torch.manual_seed(seed)
        build_tiny_pipeline(folder.parent / f"{folder.name}-tokenizer").save_pretrained(folder)
    return folder


def defect_portraits(defect: str, n: int, seed: int):
    """`n` random portraits with one defect class applied: (spec, true 24x24 art, picture, the
    rng that drew them, for claims about the same portrait). The same (defect, seed) gives the
    same portraits in every test."""
    import numpy as np

    from bespoke_exp.demo.defects import ALL_CLASSES, apply_defect
    from bespoke_exp.demo.punks import render, sample_spec

    rng = np.random.default_rng([seed, ALL_CLASSES.index(defect)])
    for _ in range(n):
        spec = sample_spec(rng)
        truth = render(spec)
        yield spec, truth, apply_defect(truth, defect, rng), rng


def claim_verdicts(image, phrases: list[str]) -> dict[str, bool]:
    """Each checked claim's verdict on `image`, as the job scores it (the shipped regions)."""
    from bespoke_exp.config import CONF_DIR
    from bespoke_exp.scoring.evaluate import evaluate

    regions = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "metrics" / "default.yaml").regions)
    ev = evaluate(image, ", ".join(phrases), regions=regions)
    return {c.name: c.passed for c in ev.checks if c.checked}


def two_seeds():
    """(items, settings): one short prompt at seeds 0 and 1, one batch of 2, 2 steps at 128 px:
    what the generation tests draw before and after a change to the pipeline."""
    from bespoke_exp.config.schema import SamplerConfig
    from bespoke_exp.generate.sampling import GenerationItem

    prompt = "TOK bespoke, 24x24 pixel grid portrait, orange solid background"
    settings = SamplerConfig(
        scheduler="euler", steps=2, guidance=7.5, width=128, height=128, negative_prompt="", batch_size=2
    )
    return [GenerationItem("p", prompt, seed) for seed in (0, 1)], settings


def pixels(pipe, items, settings) -> list:
    """The pictures `pipe` draws for `items`, as int16 arrays (differences don't wrap)."""
    import numpy as np

    from bespoke_exp.generate.sampling import generate

    return [np.asarray(image, dtype=np.int16) for _, image in generate(pipe, items, settings)]


# --- kohya sd-scripts ------------------------------------------------------------------------

# Every argument sdxl_train_network.py accepts (its argparse dests, which --config_file's keys
# must be), read from kohya-ss/sd-scripts at 48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16).
SD_SCRIPTS_ARGUMENTS = frozenset(
    [
        "adaptive_noise_scale",
        "alpha_mask",
        "async_upload",
        "base_weights",
        "base_weights_multiplier",
        "bucket_no_upscale",
        "bucket_reso_steps",
        "cache_info",
        "cache_latents",
        "cache_latents_to_disk",
        "cache_text_encoder_outputs",
        "cache_text_encoder_outputs_to_disk",
        "caption_dropout_every_n_epochs",
        "caption_dropout_rate",
        "caption_extension",
        "caption_extention",
        "caption_prefix",
        "caption_separator",
        "caption_suffix",
        "caption_tag_dropout_rate",
        "clip_skip",
        "color_aug",
        "conditioning_data_dir",
        "config_file",
        "console_log_file",
        "console_log_level",
        "console_log_simple",
        "cpu_offload_checkpointing",
        "dataset_class",
        "dataset_config",
        "dataset_repeats",
        "ddp_gradient_as_bucket_view",
        "ddp_static_graph",
        "ddp_timeout",
        "debiased_estimation_loss",
        "debug_dataset",
        "deepspeed",
        "dim_from_weights",
        "disable_mmap_load_safetensors",
        "dynamo_backend",
        "enable_bucket",
        "enable_wildcard",
        "face_crop_aug_range",
        "flip_aug",
        "fp16_master_weights_and_gradients",
        "fp8_base",
        "fp8_base_unet",
        "full_bf16",
        "full_fp16",
        "fused_backward_pass",
        "gradient_accumulation_steps",
        "gradient_checkpointing",
        "highvram",
        "huber_c",
        "huber_scale",
        "huber_schedule",
        "huggingface_path_in_repo",
        "huggingface_repo_id",
        "huggingface_repo_type",
        "huggingface_repo_visibility",
        "huggingface_token",
        "in_json",
        "initial_epoch",
        "initial_step",
        "ip_noise_gamma",
        "ip_noise_gamma_random_strength",
        "keep_tokens",
        "keep_tokens_separator",
        "learning_rate",
        "log_config",
        "log_prefix",
        "log_tracker_config",
        "log_tracker_name",
        "log_with",
        "logging_dir",
        "loss_type",
        "lowram",
        "lr_decay_steps",
        "lr_scheduler",
        "lr_scheduler_args",
        "lr_scheduler_min_lr_ratio",
        "lr_scheduler_num_cycles",
        "lr_scheduler_power",
        "lr_scheduler_timescale",
        "lr_scheduler_type",
        "lr_warmup_steps",
        "masked_loss",
        "max_bucket_reso",
        "max_data_loader_n_workers",
        "max_grad_norm",
        "max_timestep",
        "max_token_length",
        "max_train_epochs",
        "max_train_steps",
        "max_validation_steps",
        "mem_eff_attn",
        "metadata_author",
        "metadata_description",
        "metadata_is_negative_embedding",
        "metadata_license",
        "metadata_merged_from",
        "metadata_preprocessor",
        "metadata_tags",
        "metadata_thumbnail",
        "metadata_title",
        "metadata_trigger_phrase",
        "metadata_usage_hint",
        "min_bucket_reso",
        "min_snr_gamma",
        "min_timestep",
        "mixed_precision",
        "multires_noise_discount",
        "multires_noise_iterations",
        "network_alpha",
        "network_args",
        "network_dim",
        "network_dropout",
        "network_module",
        "network_train_text_encoder_only",
        "network_train_unet_only",
        "network_weights",
        "no_half_vae",
        "no_metadata",
        "noise_offset",
        "noise_offset_random_strength",
        "offload_optimizer_device",
        "offload_optimizer_nvme_path",
        "offload_param_device",
        "offload_param_nvme_path",
        "optimizer_args",
        "optimizer_type",
        "output_config",
        "output_dir",
        "output_name",
        "persistent_data_loader_workers",
        "pretrained_model_name_or_path",
        "prior_loss_weight",
        "random_crop",
        "reg_data_dir",
        "resize_interpolation",
        "resolution",
        "resume",
        "resume_from_huggingface",
        "sample_at_first",
        "sample_every_n_epochs",
        "sample_every_n_steps",
        "sample_prompts",
        "sample_sampler",
        "save_every_n_epochs",
        "save_every_n_steps",
        "save_last_n_epochs",
        "save_last_n_epochs_state",
        "save_last_n_steps",
        "save_last_n_steps_state",
        "save_model_as",
        "save_n_epoch_ratio",
        "save_precision",
        "save_state",
        "save_state_on_train_end",
        "save_state_to_huggingface",
        "scale_v_pred_loss_like_noise_pred",
        "scale_weight_norms",
        "sdpa",
        "secondary_separator",
        "seed",
        "shuffle_caption",
        "skip_cache_check",
        "skip_until_initial_step",
        "text_encoder_lr",
        "token_warmup_min",
        "token_warmup_step",
        "tokenizer_cache_dir",
        "torch_compile",
        "train_batch_size",
        "train_data_dir",
        "training_comment",
        "unet_lr",
        "use_8bit_adam",
        "use_lion_optimizer",
        "v2",
        "v_parameterization",
        "v_pred_like_loss",
        "vae",
        "vae_batch_size",
        "validate_every_n_epochs",
        "validate_every_n_steps",
        "validation_seed",
        "validation_split",
        "wandb_api_key",
        "wandb_run_name",
        "weighted_captions",
        "xformers",
        "zero3_init_flag",
        "zero3_save_16bit_model",
        "zero_stage",
        "zero_terminal_snr",
    ]
)
