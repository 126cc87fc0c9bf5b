"""Paired-seed generation: a batch of (prompt, seed) items with one torch.Generator per image,
so an image depends only on its own seed, never on what it was batched with. Prompts are
encoded as the user's tools read them (generate/prompt_encoding.py, with the text side in
generate/prompt_chunks.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate.pipeline import quiet_truncation
from bespoke_exp.generate.prompt_encoding import prompt_chunk_count, prompt_conditioning


@dataclass(frozen=True)
class GenerationItem:
    prompt_id: str
    prompt: str
    seed: int


def _batches(
    pipe, items: Sequence[GenerationItem], settings: SamplerConfig
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
    pipe, items: Sequence[GenerationItem], settings: SamplerConfig
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
