"""The embedded demo: a tiny SDXL-architecture pipeline and ten kohya-format LoRA epoch
checkpoints trained on procedural punks, built locally so the whole harness runs
offline before anyone downloads 7 GB.

    python -m bespoke_exp.demo            # build (or reuse) the demo, print where it lives

Built once per recipe version and reused; the build happens in a temporary folder
that is renamed into place only when complete, so an interrupted build never looks
finished. The images the demo model makes are not art: the model is tiny and barely
trained. Everything around it (loading, LoRA switching, tracking) is the real path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bespoke_exp import punks

# Bump when anything below changes what gets built; old builds are left untouched.
RECIPE_VERSION = "v1"
LORA_STEM = "Bespoke_Punks_24x24_Pixel_Art"
COMPLETE_MARKER = "BUILD_COMPLETE.json"


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


def default_demo_dir() -> Path:
    """Where the demo lives unless `BESPOKE_EXP_DEMO_DIR` says otherwise."""
    override = os.environ.get("BESPOKE_EXP_DEMO_DIR")
    if override:
        return Path(override).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return (cache / "bespoke_exp" / f"demo-{RECIPE_VERSION}").resolve()


def ensure_demo(root: str | Path | None = None) -> Path:
    """Build the demo into `root` unless a complete build is already there.

    Returns the root, holding `pipeline/`, `checkpoints/` and `train/`.
    """
    root = Path(root) if root is not None else default_demo_dir()
    if (root / COMPLETE_MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        staging.chmod(0o755)
        _build(staging)
        try:
            staging.rename(root)
        except OSError:
            # Another process finished first (or a stale partial build is in the way).
            if not (root / COMPLETE_MARKER).is_file():
                shutil.rmtree(root, ignore_errors=True)
                staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _build(root: Path) -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    pipe = build_tiny_pipeline(root / "tokenizer_src")
    pipe.save_pretrained(root / "pipeline")
    shutil.rmtree(root / "tokenizer_src")
    training = DemoTraining()
    specs = write_training_set(root / "train", training)
    train_lora_epochs(root / "pipeline", specs, root / "checkpoints", training)
    (root / COMPLETE_MARKER).write_text(
        json.dumps(
            {"recipe": RECIPE_VERSION, "seconds": round(time.perf_counter() - started, 1)}, indent=2
        )
    )


# ----------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte gets a printable stand-in character."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _corpus_words() -> list[str]:
    """Every word the demo's captions and the shipped prompt sets use, in a stable order."""
    rng = np.random.default_rng(0)
    texts = [punks.caption(punks.sample_spec(rng)) for _ in range(400)]
    texts.append(punks.caption(punks.PunkSpec()))
    texts.append(
        "24x24 pixel art male female glasses spanning solid background right-facing profile "
        "brown hair blue eyes light skin tone symbolic punk style vibrant low quality blurry "
        "photo realistic gradient smooth"
    )
    words: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()):
            words.setdefault(word, None)
    return list(words)


def write_tokenizer(folder: Path) -> Path:
    """A small CLIP BPE tokenizer whose merges make each corpus word one token."""
    byte_chars = _bytes_to_unicode()
    alphabet = [byte_chars[b] for b in range(256)]
    vocab_tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: dict[tuple[str, str], None] = {}
    for word in _corpus_words():
        symbols = [byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        current = symbols[0]
        for symbol in symbols[1:]:
            merges.setdefault((current, symbol), None)
            current += symbol
    for left, right in merges:
        vocab_tokens.append(left + right)
    vocab: dict[str, int] = {}
    for token in vocab_tokens:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # must stay the highest id: CLIP pools at argmax(ids)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- pipeline


def build_tiny_pipeline(tokenizer_dir: Path):
    """SDXL's architecture at toy size (diffusers' own test recipe, with a 4-level VAE
    so latents are 1/8 of the image as in real SDXL)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    write_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        hidden_act="gelu",
        projection_dim=32,
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + pooled text (32)
        cross_attention_dim=64,  # both text encoders' hidden states, concatenated
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


# ----------------------------------------------------------------------------- training data


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


# ----------------------------------------------------------------------------- LoRA training


def train_lora_epochs(
    pipeline_dir: Path,
    specs: list[punks.PunkSpec],
    out_dir: Path,
    training: DemoTraining,
) -> list[Path]:
    """Train one LoRA (UNet attention + both text encoders) and save a kohya-format
    checkpoint after every epoch, named as kohya names them."""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from bespoke_exp.pipeline import quiet_truncation

    torch.manual_seed(training.seed)
    pipe = StableDiffusionXLPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
    unet_targets = ["to_q", "to_k", "to_v", "to_out.0"]
    text_targets = ["q_proj", "k_proj", "v_proj", "out_proj"]
    # peft directly rather than transformers' add_adapter, which demands a newer peft.
    inject_adapter_in_model(_lora_config(LoraConfig, training, unet_targets), pipe.unet)
    inject_adapter_in_model(_lora_config(LoraConfig, training, text_targets), pipe.text_encoder)
    inject_adapter_in_model(_lora_config(LoraConfig, training, text_targets), pipe.text_encoder_2)
    trainable = [
        p
        for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
        for p in m.parameters()
        if p.requires_grad
    ]
    optimizer = torch.optim.AdamW(trainable, lr=training.learning_rate)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    with torch.no_grad():  # kohya's cache_latents: encode the training set once
        pixels = _training_pixels(specs, training.resolution)
        latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
    captions = [punks.caption(s) for s in specs]
    size = training.resolution
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)

    out_dir.mkdir(parents=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    step = 0
    saved = []
    batches_per_epoch = len(specs) // training.batch_size
    generator = torch.Generator().manual_seed(training.seed)
    for epoch in range(1, training.epochs + 1):
        order = torch.randperm(len(specs), generator=generator)
        for b in range(batches_per_epoch):
            idx = order[b * training.batch_size : (b + 1) * training.batch_size]
            with quiet_truncation():  # captions run past 77 tokens, as the user's do
                prompt_embeds, _, pooled, _ = pipe.encode_prompt(
                    [captions[i] for i in idx], device="cpu", do_classifier_free_guidance=False
                )
            batch_latents = latents[idx]
            noise = torch.randn(batch_latents.shape, generator=generator)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=generator
            )
            noisy = noise_scheduler.add_noise(batch_latents, noise, timesteps)
            prediction = pipe.unet(
                noisy,
                timesteps,
                encoder_hidden_states=prompt_embeds,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.repeat(len(idx), 1)},
            ).sample
            loss = torch.nn.functional.mse_loss(prediction, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        peft_state = {
            **{f"unet.{k}": v for k, v in get_peft_model_state_dict(pipe.unet).items()},
            **{f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(pipe.text_encoder).items()},
            **{
                f"text_encoder_2.{k}": v
                for k, v in get_peft_model_state_dict(pipe.text_encoder_2).items()
            },
        }
        kohya_state = {
            k: v.detach().clone().contiguous() for k, v in convert_state_dict_to_kohya(peft_state).items()
        }
        name = LORA_STEM if epoch == training.epochs else f"{LORA_STEM}-{epoch:06d}"
        path = out_dir / f"{name}.safetensors"
        metadata = _kohya_metadata(training, epoch, step, batches_per_epoch, len(specs), started)
        save_file(kohya_state, path, metadata=metadata)
        saved.append(path)
    return saved


def _lora_config(config_cls, training: DemoTraining, targets: list[str]):
    return config_cls(
        r=training.rank,
        lora_alpha=training.alpha,
        init_lora_weights="gaussian",
        target_modules=targets,
    )


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
        "ss_sd_model_name": f"bespoke_exp demo pipeline {RECIPE_VERSION} (tiny SDXL architecture)",
        "ss_training_started_at": started,
        "ss_training_comment": "bespoke_exp demo LoRA trained on procedural 24x24 punks",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": "Bespoke Punks 24x24 Pixel Art (demo)",
        "modelspec.trigger_phrase": "bespoke",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="build here (default: user cache)")
    args = parser.parse_args(argv)
    root = ensure_demo(args.root)
    print(f"demo ready: {root}")
    print(json.loads((root / COMPLETE_MARKER).read_text()))


if __name__ == "__main__":
    main()
