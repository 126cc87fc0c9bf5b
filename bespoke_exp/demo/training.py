"""The demo LoRA's training run: a kohya-layout training folder of procedural punks and a
real peft training loop that saves a kohya-format checkpoint after every epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bespoke_exp.config import DEMO_RECIPE
from bespoke_exp.demo import punks

LORA_STEM = "Bespoke_Punks_24x24_Pixel_Art"
_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass(frozen=True)
class DemoTraining:
    """The demo LoRA's training run; every value here is written to `ss_*` metadata."""

    epochs: int = 10
    images: int = 16  # small so the whole demo builds in well under a minute on 2 cores
    batch_size: int = 4
    resolution: int = 256
    rank: int = 4
    alpha: int = 4
    learning_rate: float = 2e-3
    seed: int = 1234


def write_training_set(folder: Path, training: DemoTraining) -> list[punks.PunkSpec]:
    """kohya-style folder: `<n>_<trigger>/NNNN.png` (true 24x24) + `NNNN.txt` caption."""
    images_dir = folder / "1_bespoke"
    images_dir.mkdir(parents=True)
    rng = np.random.default_rng(training.seed)
    specs = [punks.PunkSpec()] + [punks.sample_spec(rng) for _ in range(training.images - 1)]
    for index, spec in enumerate(specs):
        Image.fromarray(punks.render(spec)).save(images_dir / f"{index:04d}.png")
        (images_dir / f"{index:04d}.txt").write_text(punks.caption(spec) + "\n")
    return specs


def _training_pixels(specs: list[punks.PunkSpec], resolution: int) -> torch.Tensor:
    """Nearest-neighbour upscales in [-1, 1], NCHW: the look the LoRA is meant to learn."""
    arrays = [
        np.asarray(Image.fromarray(punks.render(s)).resize((resolution, resolution), Image.NEAREST))
        for s in specs
    ]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def train_lora_epochs(
    pipeline_dir: Path,
    specs: list[punks.PunkSpec],
    out_dir: Path,
    training: DemoTraining,
) -> list[Path]:
    """Train one LoRA (UNet attention + both text encoders) and save a kohya-format
    checkpoint after every epoch, named as kohya names them."""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline

    torch.manual_seed(training.seed)
    pipe = StableDiffusionXLPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    optimizer = torch.optim.AdamW(_add_lora_adapters(pipe, training), lr=training.learning_rate)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():  # kohya's cache_latents: encode the training set once
        pixels = _training_pixels(specs, training.resolution)
        latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
    captions = [punks.caption(s) for s in specs]

    out_dir.mkdir(parents=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    step, saved = 0, []
    batches_per_epoch = len(specs) // training.batch_size
    generator = torch.Generator().manual_seed(training.seed)
    for epoch in range(1, training.epochs + 1):
        order = torch.randperm(len(specs), generator=generator)
        for b in range(batches_per_epoch):
            idx = order[b * training.batch_size : (b + 1) * training.batch_size]
            loss = _denoising_loss(
                pipe, noise_scheduler, latents[idx], [captions[i] for i in idx], training, generator
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        name = LORA_STEM if epoch == training.epochs else f"{LORA_STEM}-{epoch:06d}"
        metadata = _kohya_metadata(training, epoch, step, batches_per_epoch, len(specs), started)
        saved.append(_save_kohya(pipe, out_dir / f"{name}.safetensors", metadata))
    return saved


def _add_lora_adapters(pipe, training: DemoTraining) -> list[torch.nn.Parameter]:
    """Freeze the base and inject LoRA layers; returns the trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)

    def config(targets: list[str]) -> LoraConfig:
        return LoraConfig(
            r=training.rank, lora_alpha=training.alpha, init_lora_weights="gaussian", target_modules=targets
        )

    # peft directly rather than transformers' add_adapter, which demands a newer peft.
    inject_adapter_in_model(config(_UNET_TARGETS), pipe.unet)
    inject_adapter_in_model(config(_TEXT_TARGETS), pipe.text_encoder)
    inject_adapter_in_model(config(_TEXT_TARGETS), pipe.text_encoder_2)
    return [
        p
        for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
        for p in m.parameters()
        if p.requires_grad
    ]


def _denoising_loss(
    pipe,
    noise_scheduler,
    latents: torch.Tensor,
    captions: list[str],
    training: DemoTraining,
    generator: torch.Generator,
) -> torch.Tensor:
    """SDXL's epsilon-prediction loss on one batch of cached latents."""
    from bespoke_exp.generate.pipeline import quiet_truncation

    with quiet_truncation():  # captions run past 77 tokens, as the user's do
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            captions, device="cpu", do_classifier_free_guidance=False
        )
    size = training.resolution
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).repeat(len(captions), 1)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (len(captions),), generator=generator
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = pipe.unet(
        noisy,
        timesteps,
        encoder_hidden_states=prompt_embeds,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
    ).sample
    return torch.nn.functional.mse_loss(prediction, noise)


def _save_kohya(pipe, path: Path, metadata: dict[str, str]) -> Path:
    """The adapters' current weights under kohya key names, as kohya's trainer saves them."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    peft_state = {
        f"{prefix}.{k}": v
        for prefix, module in (
            ("unet", pipe.unet),
            ("text_encoder", pipe.text_encoder),
            ("text_encoder_2", pipe.text_encoder_2),
        )
        for k, v in get_peft_model_state_dict(module).items()
    }
    kohya_state = {
        k: v.detach().clone().contiguous() for k, v in convert_state_dict_to_kohya(peft_state).items()
    }
    save_file(kohya_state, path, metadata=metadata)
    return path


def _kohya_metadata(
    training: DemoTraining, epoch: int, steps: int, batches: int, images: int, started: str
) -> dict[str, str]:
    """The `ss_*` keys kohya's train_network writes, with this training's true values."""
    return {
        "ss_output_name": LORA_STEM,
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(training.epochs),
        "ss_steps": str(steps),
        "ss_max_train_steps": str(batches * training.epochs),
        "ss_num_batches_per_epoch": str(batches),
        "ss_num_train_images": str(images),
        "ss_batch_size_per_device": str(training.batch_size),
        "ss_total_batch_size": str(training.batch_size),
        "ss_network_module": "peft.LoraConfig (saved with kohya key names)",
        "ss_network_dim": str(training.rank),
        "ss_network_alpha": str(training.alpha),
        "ss_learning_rate": str(training.learning_rate),
        "ss_unet_lr": str(training.learning_rate),
        "ss_text_encoder_lr": str(training.learning_rate),
        "ss_optimizer": "torch.optim.AdamW",
        "ss_lr_scheduler": "constant",
        "ss_resolution": f"({training.resolution}, {training.resolution})",
        "ss_seed": str(training.seed),
        "ss_cache_latents": "True",
        "ss_mixed_precision": "no",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": f"bespoke_exp demo pipeline {DEMO_RECIPE} (tiny SDXL architecture)",
        "ss_training_started_at": started,
        "ss_training_comment": "bespoke_exp demo LoRA trained on procedural 24x24 punks",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": "Bespoke Punks 24x24 Pixel Art (demo)",
        "modelspec.trigger_phrase": "bespoke",
    }
