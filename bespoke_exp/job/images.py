"""A job's images: every prompt x every seed, drawn by the base pipeline (loaded once per
process) with the epoch's LoRA applied (none for the base model, epoch 0), each saved as it
comes, and a blank one refused. Each prompt is drawn from the text the job generates (its
trigger words left out with trigger=off; see job/trigger.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate import pipeline
from bespoke_exp.generate.sampling import GenerationItem, generate
from bespoke_exp.generate.tokens import count_prompt_tokens
from bespoke_exp.pixelart.blank import blank_reason

ImageKey = tuple[str, int]  # (prompt id, seed)


class GenerationError(RuntimeError):
    """The pipeline ran but produced no picture (e.g. a blank image); the message says which."""


def generation_items(cfg: DictConfig, texts: Mapping[str, str] | None = None) -> list[GenerationItem]:
    """Every prompt x every seed, prompts in config order; `texts` (by prompt id) replaces what
    a prompt is generated from, its id and seeds staying the same."""
    return [
        GenerationItem(prompt_id=p.id, prompt=(texts or {}).get(p.id, p.text), seed=seed)
        for p in cfg.prompts["items"]
        for seed in cfg.sampler.seeds
    ]


def _long_prompt_note(sampler: SamplerConfig, limit: int) -> str:
    if sampler.long_prompts == "chunk":
        return f"encoded in chunks of {limit - 2} tokens (sampler.long_prompts=chunk)"
    return (
        f"the text encoders read the first {limit} (sampler.long_prompts=truncate); "
        "its checks past them are reported unchecked"
    )


def generate_images(
    cfg: DictConfig,
    checkpoint_path: Path | None,
    texts: Mapping[str, str],
    images_dir: Path,
    names: Mapping[ImageKey, str],
    prefix: str,
) -> tuple[dict[ImageKey, Image.Image], dict[str, float], dict[str, str]]:
    """Images of `texts` (prompt id -> text generated) saved as they come, with the LoRA file at
    `checkpoint_path` applied (None: the base model alone); returns them with timings and
    prompt token counts."""
    items = generation_items(cfg, texts)
    sampler: SamplerConfig = OmegaConf.to_object(cfg.sampler)
    timings, token_counts = {}, {}
    started = time.perf_counter()
    pipe = pipeline.load_pipeline(
        cfg.model.pretrained, device=cfg.model.device, dtype=cfg.model.dtype, variant=cfg.model.variant
    )
    timings["time/pipeline_load_s"] = time.perf_counter() - started
    pipeline.set_scheduler(pipe, sampler.scheduler)
    for prompt_id, text in texts.items():
        tokens, limit = count_prompt_tokens(pipe, text)
        token_counts[f"prompt_tokens.{prompt_id}"] = str(tokens)
        if tokens > limit:
            note = _long_prompt_note(sampler, limit)
            print(f"{prefix} note: prompt {prompt_id!r} is {tokens} tokens; {note}")
    generated = {}
    started = time.perf_counter()
    with pipeline.lora_applied(pipe, checkpoint_path, cfg.checkpoint.lora_scale):
        timings["time/lora_switch_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for done, (item, image) in enumerate(generate(pipe, items, sampler), start=1):
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
