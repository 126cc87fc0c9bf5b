"""A job's images: the config turned into generation items and sampler settings, the
base pipeline loaded (once per process) with the epoch's LoRA applied, and every
image saved as it comes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image

from bespoke_exp.generate import pipeline as pl
from bespoke_exp.pixelart.blank import blank_reason

ImageKey = tuple[str, int]  # (prompt id, seed)


class GenerationError(RuntimeError):
    """The pipeline ran but produced no picture (e.g. a blank image); the message says which."""


def generation_items(cfg: DictConfig) -> list[pl.GenerationItem]:
    """Every prompt x every seed, prompts in config order."""
    return [
        pl.GenerationItem(prompt_id=str(p.id), prompt=str(p.text), seed=int(seed))
        for p in cfg.prompts["items"]
        for seed in cfg.sampler.seeds
    ]


def sampler_settings(cfg: DictConfig) -> pl.SamplerSettings:
    s = cfg.sampler
    return pl.SamplerSettings(
        scheduler=str(s.scheduler),
        steps=int(s.steps),
        guidance=float(s.guidance),
        width=int(s.width),
        height=int(s.height),
        negative_prompt=str(s.negative_prompt),
        batch_size=int(s.batch_size),
        # A sampler config written before these keys existed reads prompts as SDXL users expect.
        long_prompts=str(s.get("long_prompts", "chunk")),
        prompt_weighting=bool(s.get("prompt_weighting", False)),
        clip_skip=None if s.get("clip_skip") is None else int(s.clip_skip),
    )


def _long_prompt_note(settings: pl.SamplerSettings, limit: int) -> str:
    if settings.long_prompts == "chunk":
        return f"encoded in chunks of {limit - 2} tokens (sampler.long_prompts=chunk)"
    return (
        f"the text encoders read the first {limit} (sampler.long_prompts=truncate); "
        "its checks past them are reported unchecked"
    )


def generate_images(
    cfg: DictConfig, checkpoint_path: Path, images_dir: Path, names: Mapping[ImageKey, str], prefix: str
) -> tuple[dict[ImageKey, Image.Image], dict[str, float], dict[str, str]]:
    """Images saved as they come; returns them with timings and prompt token counts."""
    items = generation_items(cfg)
    settings = sampler_settings(cfg)
    timings, token_counts = {}, {}
    started = time.perf_counter()
    pipe = pl.load_pipeline(
        str(cfg.model.pretrained),
        device=str(cfg.model.device),
        dtype=cfg.model.dtype,
        variant=cfg.model.variant,
    )
    timings["time/pipeline_load_s"] = time.perf_counter() - started
    pl.set_scheduler(pipe, settings.scheduler)
    for prompt in cfg.prompts["items"]:
        tokens, limit = pl.count_prompt_tokens(pipe, str(prompt.text))
        token_counts[f"prompt_tokens.{prompt.id}"] = str(tokens)
        if tokens > limit:
            note = _long_prompt_note(settings, limit)
            print(f"{prefix} note: prompt {prompt.id!r} is {tokens} tokens; {note}")
    generated = {}
    started = time.perf_counter()
    with pl.lora_applied(pipe, checkpoint_path, float(cfg.checkpoint.lora_scale)):
        for done, (item, image) in enumerate(pl.generate(pipe, items, settings), start=1):
            path = images_dir / names[(item.prompt_id, item.seed)]
            image.save(path)  # PNG: lossless, so metrics see exactly what the model made
            blank = blank_reason(image)
            if blank is not None:
                raise GenerationError(f"{path.name} is {blank}; nothing was scored")
            generated[(item.prompt_id, item.seed)] = image
            print(f"{prefix} image {done}/{len(items)} {path.name}", flush=True)
    timings["time/generate_s"] = time.perf_counter() - started
    timings["time/per_image_s"] = timings["time/generate_s"] / len(items)
    return generated, timings, token_counts
