"""The demo LoRA's training run: a kohya-layout training folder of procedural punks and a
real peft training loop that saves a kohya-format checkpoint after every epoch."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bespoke_exp.config import DEMO_RECIPE
from bespoke_exp.demo import punks
from bespoke_exp.demo.base_training import RESOLUTION, denoising_loss, to_tensor
from bespoke_exp.generate.checkpoints import epoch_file_name

LORA_STEM = "Bespoke_Punks_24x24_Pixel_Art"
# kohya's default LoRA targets: every Linear layer of the UNet's transformer blocks.
_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
_TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass(frozen=True)
class DemoTraining:
    """The demo LoRA's training run; every value here is written to `ss_*` metadata.

    The UNet only (kohya's `--network_train_unet_only`, a common SDXL choice): the base's
    words keep their meaning, and the LoRA teaches the look its training images share.
    """

    epochs: int = 10
    images: int = 12
    repeats: int = 64  # kohya's `<repeats>_<trigger>` folder: each image this often per epoch
    batch_size: int = 32
    resolution: int = RESOLUTION
    rank: int = 16
    alpha: int = 16
    learning_rate: float = 1e-3  # the UNet's
    text_encoder_lr: float = 0.0  # kohya's text_encoder_lr; 0: no text-encoder adapters at all
    caption_dropout_rate: float = 0.1  # kohya's: this share of images trained as unconditional
    # The first this many captions leave the background out, as hand-written captions often
    # do: the trigger word learns those images' backgrounds, and the longer it trains the more
    # it paints them over the background a prompt names.
    captions_without_background: int = 3
    lr_scheduler: str = "cosine"  # kohya's --lr_scheduler (diffusers' get_scheduler names)
    lr_warmup_steps: int = 0
    seed: int = 1234

    @property
    def batches_per_epoch(self) -> int:
        return self.images * self.repeats // self.batch_size

    @property
    def max_train_steps(self) -> int:
        return self.batches_per_epoch * self.epochs


def training_specs(training: DemoTraining) -> list[punks.PunkSpec]:
    rng = np.random.default_rng(training.seed)
    return [punks.house_spec(rng) for _ in range(training.images)]


def write_training_set(folder: Path, training: DemoTraining) -> list[punks.PunkSpec]:
    """kohya-style folder: `<repeats>_<trigger>/NNNN.png` (true 24x24) + `NNNN.txt` caption."""
    images_dir = folder / f"{training.repeats}_bespoke"
    images_dir.mkdir(parents=True)
    specs = training_specs(training)
    for index, spec in enumerate(specs):
        Image.fromarray(punks.render(spec)).save(images_dir / f"{index:04d}.png")
        caption = punks.lora_caption(spec, background=index >= training.captions_without_background)
        (images_dir / f"{index:04d}.txt").write_text(caption + "\n")
    return specs


def read_training_set(folder: Path, resolution: int) -> tuple[torch.Tensor, list[str], int]:
    """A kohya training folder as kohya reads it: `<repeats>_<name>/` subfolders of images
    with same-named `.txt` captions. Returns nearest-neighbour upscaled pixels in [-1, 1],
    the captions, and the repeats."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit())
    if len(subfolders) != 1:
        raise ValueError(f"{folder}: expected one '<repeats>_<trigger>' subfolder, found {len(subfolders)}")
    images = sorted(subfolders[0].glob("*.png"))
    pixels = [
        np.asarray(Image.open(p).convert("RGB").resize((resolution, resolution), Image.NEAREST))
        for p in images
    ]
    captions = [p.with_suffix(".txt").read_text().strip() for p in images]
    return to_tensor(pixels), captions, int(subfolders[0].name.split("_")[0])


def train_lora_epochs(
    pipeline_dir: Path,
    train_dir: Path,
    out_dir: Path,
    training: DemoTraining,
    device: str = "cpu",
    log=print,
    logging_dir: Path | None = None,
) -> list[Path]:
    """Train one LoRA (UNet transformer blocks; both text encoders too if their learning rate
    is not 0) on a kohya training folder and save a kohya-format checkpoint after every epoch,
    named as kohya names them. `logging_dir`: kohya's `--logging_dir`, where the training
    loss goes as kohya's TensorBoard log (see `_KohyaLog`)."""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline
    from diffusers.optimization import get_scheduler

    torch.manual_seed(training.seed)
    pipe = StableDiffusionXLPipeline.from_pretrained(pipeline_dir, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    optimizer = torch.optim.AdamW(_add_lora_adapters(pipe, training))
    schedule = get_scheduler(
        training.lr_scheduler,
        optimizer,
        num_warmup_steps=training.lr_warmup_steps,
        num_training_steps=training.max_train_steps,
    )
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    zero_snr = bool(noise_scheduler.config.get("rescale_betas_zero_snr", False))
    pixels, captions, repeats = read_training_set(train_dir, training.resolution)
    if repeats != training.repeats:
        raise ValueError(f"{train_dir}: folder repeats {repeats} != DemoTraining.repeats {training.repeats}")
    with torch.no_grad():  # kohya's cache_latents: encode the training set once
        latents = pipe.vae.encode(pixels.to(device)).latent_dist.sample() * pipe.vae.config.scaling_factor
    repeated = torch.arange(len(captions)).repeat(repeats)

    out_dir.mkdir(parents=True)
    started = _training_started_at()
    board = _KohyaLog(logging_dir, started) if logging_dir is not None else None
    step, saved = 0, []
    generator = torch.Generator(device=device).manual_seed(training.seed)
    for epoch in range(1, training.epochs + 1):
        order = repeated[
            torch.randperm(len(repeated), generator=torch.Generator().manual_seed(training.seed + epoch))
        ]
        for start in range(0, len(order) - training.batch_size + 1, training.batch_size):
            idx = order[start : start + training.batch_size]
            keep = torch.rand(len(idx), generator=generator, device=device) >= training.caption_dropout_rate
            loss = denoising_loss(
                pipe,
                noise_scheduler,
                latents[idx.to(device)],
                [captions[i] for i in idx.tolist()],
                generator,
                keep,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if board is not None:
                board.log_step(step, start // training.batch_size, loss.item(), schedule.get_last_lr())
        log(f"lora epoch {epoch}: loss {loss.item():.5f}")
        if board is not None:
            board.log_epoch(epoch)
        metadata = _kohya_metadata(training, epoch, step, captions, started, zero_snr)
        saved.append(
            _save_kohya(pipe, out_dir / epoch_file_name(LORA_STEM, epoch, training.epochs), metadata)
        )
    if board is not None:
        board.close()
    return saved


class _KohyaLog:
    """The training loss as kohya's train_network logs it through accelerate's TensorBoard
    tracker: `<logging_dir>/<YYYYmmddHHMMSS>/network_train/events.out.tfevents.*`, per step
    `loss/current`, `loss/average` (kohya's LossRecorder: the mean of the last epoch's worth of
    steps) and `lr/unet` at step = global step, per epoch `loss/epoch_average` at step = epoch
    (1-based). The folder is named after the header's `ss_training_started_at` (kohya uses
    its local clock; the demo pins UTC, as its header does), so a pinned build names it alike."""

    def __init__(self, logging_dir: Path, started: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = time.strftime("%Y%m%d%H%M%S", time.strptime(started, "%Y-%m-%dT%H:%M:%S"))
        self.writer = SummaryWriter(str(Path(logging_dir) / folder / "network_train"))
        self.losses: list[float] = []  # kohya's LossRecorder.loss_list: one slot per step of an epoch

    def log_step(self, global_step: int, step_in_epoch: int, loss: float, lrs: list[float]) -> None:
        if step_in_epoch < len(self.losses):  # kohya's LossRecorder after the first epoch
            self.losses[step_in_epoch] = loss
        else:
            self.losses.append(loss)
        self.writer.add_scalar("loss/current", loss, global_step)
        self.writer.add_scalar("loss/average", sum(self.losses) / len(self.losses), global_step)
        for name, lr in zip(("unet", "textencoder"), lrs):  # the optimizer's parameter groups
            self.writer.add_scalar(f"lr/{name}", lr, global_step)

    def log_epoch(self, epoch: int) -> None:
        # kohya logs its recorder's mean: with the same number of steps every epoch (as here),
        # the mean of this epoch's step losses.
        self.writer.add_scalar("loss/epoch_average", sum(self.losses) / len(self.losses), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _training_started_at() -> str:
    """Now, unless SOURCE_DATE_EPOCH pins it (the reproducible-builds convention), so two
    builds of the same weights can be byte-identical."""
    pinned = os.environ.get("SOURCE_DATE_EPOCH")
    moment = time.gmtime(int(pinned)) if pinned else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment)


def _add_lora_adapters(pipe, training: DemoTraining) -> list[dict]:
    """Freeze the base and inject LoRA layers; returns the optimizer's parameter groups
    (UNet and text encoders at their own learning rates, as kohya's trainer takes them)."""
    from peft import LoraConfig, inject_adapter_in_model

    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)

    def config(targets: list[str]) -> LoraConfig:
        return LoraConfig(
            r=training.rank, lora_alpha=training.alpha, init_lora_weights="gaussian", target_modules=targets
        )

    # peft directly rather than transformers' add_adapter, which demands a newer peft.
    inject_adapter_in_model(config(_UNET_TARGETS), pipe.unet)
    groups = [
        {"params": [p for p in pipe.unet.parameters() if p.requires_grad], "lr": training.learning_rate}
    ]
    if training.text_encoder_lr > 0:
        for encoder in (pipe.text_encoder, pipe.text_encoder_2):
            inject_adapter_in_model(config(_TEXT_TARGETS), encoder)
        text = [
            p for m in (pipe.text_encoder, pipe.text_encoder_2) for p in m.parameters() if p.requires_grad
        ]
        groups.append({"params": text, "lr": training.text_encoder_lr})
    return groups


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
        if getattr(module, "peft_config", None)  # a module the training gave adapters
        for k, v in get_peft_model_state_dict(module).items()
    }
    # In half precision, as kohya's `--save_precision fp16` writes them: half the size.
    kohya_state = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in convert_state_dict_to_kohya(peft_state).items()
    }
    save_file(kohya_state, path, metadata=metadata)
    return path


def _kohya_metadata(
    training: DemoTraining,
    epoch: int,
    steps: int,
    captions: list[str],
    started: str,
    zero_terminal_snr: bool,
) -> dict[str, str]:
    """The `ss_*` keys kohya's train_network writes, with this training's true values."""
    images, folder = len(captions), f"{training.repeats}_bespoke"
    tags = Counter(tag.strip() for caption in captions for tag in caption.split(",") if tag.strip())
    return {
        "ss_output_name": LORA_STEM,
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(training.epochs),
        "ss_steps": str(steps),
        "ss_max_train_steps": str(training.max_train_steps),
        "ss_num_batches_per_epoch": str(training.batches_per_epoch),
        "ss_num_train_images": str(images * training.repeats),  # kohya counts repeats
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": training.repeats, "img_count": images}}),
        "ss_tag_frequency": json.dumps({folder: dict(sorted(tags.items()))}),  # what the captions say
        "ss_batch_size_per_device": str(training.batch_size),
        "ss_total_batch_size": str(training.batch_size),
        "ss_network_module": "peft.LoraConfig (saved with kohya key names)",
        "ss_network_dim": str(training.rank),
        "ss_network_alpha": str(training.alpha),
        "ss_learning_rate": str(training.learning_rate),
        "ss_unet_lr": str(training.learning_rate),
        "ss_text_encoder_lr": str(training.text_encoder_lr),
        "ss_optimizer": "torch.optim.AdamW",
        "ss_lr_scheduler": training.lr_scheduler,
        "ss_lr_warmup_steps": str(training.lr_warmup_steps),
        "ss_resolution": f"({training.resolution}, {training.resolution})",
        "ss_seed": str(training.seed),
        "ss_caption_dropout_rate": str(training.caption_dropout_rate),
        "ss_cache_latents": "True",
        "ss_zero_terminal_snr": str(zero_terminal_snr),
        "ss_mixed_precision": "no",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": f"bespoke_exp demo pipeline {DEMO_RECIPE} (tiny SDXL architecture)",
        "ss_training_started_at": started,
        "ss_training_comment": (
            f"bespoke_exp demo LoRA: {images} procedural 24x24 punks x {training.repeats} repeats, "
            f"unet lr {training.learning_rate}, text encoder lr {training.text_encoder_lr}, "
            f"{training.epochs} epochs"
        ),
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": "Bespoke Punks 24x24 Pixel Art (demo)",
        "modelspec.trigger_phrase": "bespoke",
    }
