"""SDXL prompt conditioning as the user's tools compute it (`sampler.long_prompts`,
`prompt_weighting`, `clip_skip`): the torch side of generate/prompt_chunks.py.

SDXL's two CLIP encoders read 77 tokens. In `chunk` mode a longer prompt is encoded in 75-token
chunks, each as its own BOS..EOS pass, and the chunks' embeddings are concatenated (A1111,
ComfyUI, kohya's max_token_length); the pooled embedding is the first chunk's. Every chunk is
padded exactly as diffusers' `encode_prompt` pads, so a prompt that fits in 77 tokens without
weighting gives its conditioning bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate import prompt_chunks


def text_encoders(pipe) -> list[tuple[object, object]]:
    """(tokenizer, text encoder) pairs in the order SDXL concatenates their embeddings."""
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None))]
    pairs.append((getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)))
    return [(tokenizer, encoder) for tokenizer, encoder in pairs if tokenizer is not None]


def _chunks(tokenizer, text: str, settings: SamplerConfig) -> list[tuple[list[int], list[float]]]:
    comma = tokenizer(",", add_special_tokens=False)["input_ids"]
    return prompt_chunks.chunk_tokens(
        prompt_chunks.tokenize(tokenizer, prompt_chunks.fragments(text, settings.prompt_weighting)),
        mode=settings.long_prompts,
        comma_id=comma[0] if len(comma) == 1 else None,
        size=int(tokenizer.model_max_length) - 2,
    )


def prompt_chunk_count(pipe, text: str, settings: SamplerConfig) -> int:
    """How many 77-token text-encoder passes `text` takes (always 1 in truncate mode)."""
    return max(len(_chunks(tokenizer, text, settings)) for tokenizer, _ in text_encoders(pipe))


def _chunk_ids(tokenizer, texts: Sequence[str], settings: SamplerConfig, n_chunks: int):
    """(ids, weights), each (len(texts), n_chunks, 77): BOS + tokens + EOS + padding per chunk,
    as `tokenizer(..., padding="max_length", truncation=True)` lays out one; a text with fewer
    chunks is padded with empty ones (BOS, EOS, padding), as A1111 pads."""
    length = int(tokenizer.model_max_length)
    ids, weights = [], []
    for text in texts:
        chunks = _chunks(tokenizer, text, settings)
        chunks += [([], [])] * (n_chunks - len(chunks))
        ids.append(
            [
                [tokenizer.bos_token_id, *c, tokenizer.eos_token_id]
                + [tokenizer.pad_token_id] * (length - 2 - len(c))
                for c, _ in chunks
            ]
        )
        weights.append([[1.0, *w, 1.0] + [1.0] * (length - 2 - len(w)) for _, w in chunks])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def _emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's emphasis: each token's embedding times its weight, then the whole rescaled to its
    old mean. Untouched (bit for bit) where every weight is 1. A1111 takes the mean over the batch;
    here over each prompt, so an image does not depend on what it was batched with."""
    if bool((weights == 1).all()):
        return z
    z32 = z.float()
    scaled = z32 * weights.to(z.device)[..., None]
    scaled = scaled * (z32.mean(dim=(1, 2), keepdim=True) / scaled.mean(dim=(1, 2), keepdim=True))
    return scaled.to(z.dtype)


def encode_prompts(
    pipe, texts: Sequence[str], settings: SamplerConfig, n_chunks: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (len(texts), 77 * n_chunks, dims), pooled (len(texts), dims)) of SDXL's two
    text encoders, read as `settings` says (long_prompts, prompt_weighting, clip_skip)."""
    embeds, pooled = [], None
    for tokenizer, encoder in text_encoders(pipe):
        layers = int(encoder.config.num_hidden_layers)
        if settings.clip_skip is not None and not 1 <= settings.clip_skip <= layers:
            raise ValueError(
                f"sampler.clip_skip={settings.clip_skip} is more layers than "
                f"{type(encoder).__name__} has ({layers})"
            )
        # diffusers reads hidden_states[-(clip_skip + 2)]; A1111's count N is hidden_states[-N].
        layer = -2 if settings.clip_skip is None else -settings.clip_skip
        ids, weights = _chunk_ids(tokenizer, texts, settings, n_chunks)
        chunks = []
        for i in range(n_chunks):
            out = encoder(ids[:, i].to(encoder.device), output_hidden_states=True)
            if pooled is None and i == 0 and out[0].ndim == 2:
                pooled = out[0]  # CLIP-G's projected EOS of the first chunk, as encode_prompt takes it
            chunks.append(_emphasis(out.hidden_states[layer], weights[:, i]))
        embeds.append(torch.cat(chunks, dim=1))
    return torch.cat(embeds, dim=-1), pooled


def prompt_conditioning(pipe, prompts: list[str], settings: SamplerConfig, n_chunks: int) -> dict:
    """The pipeline's text inputs for one call: embeddings for SDXL, prompt strings otherwise."""
    if getattr(pipe, "text_encoder_2", None) is None:  # not SDXL: diffusers encodes, as before
        if n_chunks > 1 or settings.prompt_weighting or settings.clip_skip is not None:
            raise ValueError(
                "sampler.long_prompts=chunk, prompt_weighting and clip_skip are SDXL's; for "
                f"{type(pipe).__name__} set sampler.long_prompts=truncate, prompt_weighting=false, "
                "clip_skip=null"
            )
        negative = [settings.negative_prompt] * len(prompts) if settings.negative_prompt else None
        return {"prompt": prompts, "negative_prompt": negative}
    embeds, pooled = encode_prompts(pipe, prompts, settings, n_chunks)
    conditioning = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    # An empty negative prompt passes nothing: SDXL then guides against zeroed text embeddings of
    # the same shape, its own unconditional input (force_zeros_for_empty_prompt).
    if settings.negative_prompt or not pipe.config.get("force_zeros_for_empty_prompt", False):
        negative, negative_pooled = encode_prompts(
            pipe, [settings.negative_prompt] * len(prompts), settings, n_chunks
        )
        conditioning |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
    return conditioning
