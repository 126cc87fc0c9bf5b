"""The demo's base model, trained from scratch: a tiny SDXL-architecture pipeline that has
seen thousands of punk portraits, but only soft, off-grid renders with loose captions.

So it draws punks roughly (blurred edges, cells of the wrong size, out of place) and
ignores what its captions never named (eyes, lips, collar, glasses, coordinates), as
SDXL does before a pixel-art LoRA teaches it the style.

It is trained in two phases, as SD 2.x and the v-prediction SDXL finetunes were made:
epsilon prediction on SDXL's own noise schedule, then v-prediction on the same schedule
rescaled to zero terminal SNR (Lin et al., "Common Diffusion Noise Schedules and Sample
Steps are Flawed"). The second phase is what makes the prompt decide the colours: at SDXL's
last training step 7% of the image still shows through the noise, and at 24x24 latents a
region's mean colour is readable from it, so the epsilon model learnt to take colours from
the starting noise and drew the same colours for every prompt at a given seed.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from bespoke_exp.demo import punks
from bespoke_exp.demo.tiny_pipeline import build_tiny_pipeline
from bespoke_exp.pixelart.colors import NAMED_COLORS

RESOLUTION = 192  # 8 px per cell: one SDXL latent (1/8 of the image) per cell of the art


@dataclass(frozen=True)
class Phase:
    """One denoiser training phase: AdamW with linear warmup, then cosine decay to 10%."""

    steps: int
    batch_size: int
    learning_rate: float
    warmup: int


@dataclass(frozen=True)
class BaseTraining:
    """The base model's pre-training; `smoke` is the same code on a few steps."""

    images: int = 4096
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_crop: int = 64
    vae_learning_rate: float = 1e-3
    steps: int = 2200
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup: int = 200
    caption_dropout: float = 0.1  # zeroed text embeddings: SDXL's unconditional input
    seed: int = 0
    # Phase two: v-prediction with zero terminal SNR, continuing from phase one's weights.
    vpred_steps: int = 400
    vpred_batch_size: int = 32
    vpred_learning_rate: float = 3e-4
    vpred_warmup: int = 50

    @property
    def epsilon_phase(self) -> Phase:
        return Phase(self.steps, self.batch_size, self.learning_rate, self.warmup)

    @property
    def vpred_phase(self) -> Phase:
        return Phase(self.vpred_steps, self.vpred_batch_size, self.vpred_learning_rate, self.vpred_warmup)

    @classmethod
    def smoke(cls) -> BaseTraining:
        return cls(
            images=8,
            vae_steps=2,
            vae_batch=2,
            steps=2,
            batch_size=2,
            warmup=1,
            vpred_steps=2,
            vpred_batch_size=2,
            vpred_warmup=1,
        )


def rough_render(spec: punks.PunkSpec, rng: np.random.Generator, size: int = RESOLUTION) -> np.ndarray:
    """The portrait as the base model knows it: resampled smoothly to a random cell size
    (6.4 to 8.6 px), shifted sideways, sitting on the bottom edge, and blurred."""
    extent = int(round(size * rng.uniform(0.8, 1.08)))
    art = Image.fromarray(punks.render(spec)).resize((extent, extent), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), NAMED_COLORS[spec.background])
    slack = size - extent
    left = int(rng.integers(min(0, slack), max(0, slack) + 1))
    canvas.paste(art, (left, slack))
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return np.asarray(canvas)


def crisp_render(spec: punks.PunkSpec, size: int = RESOLUTION) -> np.ndarray:
    """The portrait as the pixel-art LoRA's training images show it: nearest-neighbour."""
    return np.asarray(Image.fromarray(punks.render(spec)).resize((size, size), Image.NEAREST))


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC images as one NCHW float batch in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_base_pipeline(
    out_dir: Path,
    schedule: BaseTraining,
    device: str = "cpu",
    log=print,
    epsilon_base: Path | None = None,
) -> Path:
    """Train the VAE, then the UNet and both text encoders in two phases; save with
    `save_pretrained`. `epsilon_base`: a pipeline saved after phase one of this same
    schedule, to run phase two only."""
    torch.manual_seed(schedule.seed)
    rng = np.random.default_rng(schedule.seed)
    specs = [punks.sample_spec(rng) for _ in range(schedule.images)]
    rough = [rough_render(spec, rng) for spec in specs]
    captions = [punks.base_caption(s) for s in specs]
    if epsilon_base is None:
        with tempfile.TemporaryDirectory() as tokenizer_dir:
            pipe = build_tiny_pipeline(Path(tokenizer_dir))
        pipe.to(device)
        _train_vae(pipe.vae, rough, [crisp_render(spec) for spec in specs], schedule, device, log)
        latents = _encode(pipe.vae, rough, device)
        _train_denoiser(pipe, latents, captions, schedule.epsilon_phase, schedule, device, log)
    else:
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline.from_pretrained(epsilon_base, local_files_only=True).to(device)
        latents = _encode(pipe.vae, rough, device)
    pipe.scheduler = type(pipe.scheduler).from_config(
        pipe.scheduler.config,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",  # zero-SNR models must start sampling at the last step
        steps_offset=0,
    )
    _train_denoiser(pipe, latents, captions, schedule.vpred_phase, schedule, device, log)
    pipe.to("cpu")
    pipe.save_pretrained(out_dir)
    for config in out_dir.rglob("*.json"):  # where it was loaded from: a path on this machine
        settings = json.loads(config.read_text())
        if settings.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return out_dir


def _train_vae(vae, rough: list[np.ndarray], crisp: list[np.ndarray], schedule, device: str, log) -> None:
    """Reconstruction on crops (the VAE is convolutional): rough and crisp renders alike,
    crisp crops on the 8 px lattice so a cell maps onto one latent."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=schedule.vae_learning_rate)
    generator = np.random.default_rng(schedule.seed + 1)
    crop = schedule.vae_crop
    for step in range(schedule.vae_steps):
        batch = []
        for _ in range(schedule.vae_batch):
            index = int(generator.integers(len(rough)))
            if generator.random() < 0.5:
                image, y, x = rough[index], *generator.integers(0, RESOLUTION - crop + 1, 2)
            else:
                image, y, x = crisp[index], *(8 * generator.integers(0, (RESOLUTION - crop) // 8 + 1, 2))
            batch.append(image[y : y + crop, x : x + crop])
        pixels = to_tensor(batch).to(device)
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(reconstruction, pixels) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == schedule.vae_steps - 1:
            log(f"vae step {step}: loss {loss.item():.5f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # unit-variance latents, as SDXL's scaling factor gives
        sample = to_tensor(rough[:64] + crisp[:64]).to(device)
        std = vae.encode(sample).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))


@torch.no_grad()
def _encode(vae, images: list[np.ndarray], device: str) -> torch.Tensor:
    """kohya's cache_latents: every training image encoded once."""
    generator = torch.Generator(device=device).manual_seed(0)
    chunks = []
    for start in range(0, len(images), 64):
        pixels = to_tensor(images[start : start + 64]).to(device)
        chunks.append(vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor)
    return torch.cat(chunks)


def _train_denoiser(
    pipe,
    latents: torch.Tensor,
    captions: list[str],
    phase: Phase,
    schedule: BaseTraining,
    device: str,
    log,
) -> None:
    """One training phase of the UNet and both text encoders against the pipeline's current
    noise schedule (`schedule` gives the seed and the caption dropout)."""
    from diffusers import DDPMScheduler

    modules = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    parameters = [p for m in modules for p in m.parameters()]
    for module in modules:
        module.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=phase.learning_rate, weight_decay=1e-2)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(phase.steps, phase.warmup))
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    generator = torch.Generator(device=device).manual_seed(schedule.seed + 2)
    for step in range(phase.steps):
        index = torch.randint(len(captions), (phase.batch_size,), generator=generator, device=device)
        keep = torch.rand(phase.batch_size, generator=generator, device=device) >= schedule.caption_dropout
        loss = denoising_loss(
            pipe, noise_scheduler, latents[index], [captions[i] for i in index.tolist()], generator, keep
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        lr_scheduler.step()
        if step % 100 == 0 or step == phase.steps - 1:
            log(f"base ({prediction}) step {step}: loss {loss.item():.5f}")
    for module in modules:
        module.eval().requires_grad_(False)


def _warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def denoising_loss(
    pipe,
    noise_scheduler,
    latents: torch.Tensor,
    captions: list[str],
    generator: torch.Generator,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDXL's denoising loss (epsilon or v target, as the noise schedule predicts) on one
    batch of cached latents; rows where `keep` is False get zeroed text embeddings (the
    unconditional input for guidance)."""
    from bespoke_exp.generate.pipeline import quiet_truncation

    device = latents.device
    with quiet_truncation():
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            captions, device=device, do_classifier_free_guidance=False
        )
    if keep is not None:
        prompt_embeds = prompt_embeds * keep[:, None, None]
        pooled = pooled * keep[:, None]
    size = latents.shape[-1] * 8
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32, device=device)
    noise = torch.randn(latents.shape, generator=generator, device=device)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (len(captions),), generator=generator, device=device
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = pipe.unet(
        noisy,
        timesteps,
        encoder_hidden_states=prompt_embeds,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.repeat(len(captions), 1)},
    ).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return torch.nn.functional.mse_loss(prediction, target)
