"""Prompts as token counts: how long a prompt is, and how much of it a truncating text encoder
reads, from the pipeline's tokenizers (a loaded pipeline's own, else read from its folders)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bespoke_exp.generate import prompt_chunks
from bespoke_exp.generate.pipeline import ModelLoadError, loaded_pipeline, quiet_truncation
from bespoke_exp.generate.prompt_encoding import text_encoders


def count_prompt_tokens(pipe, prompt: str) -> tuple[int, int]:
    """(tokens in the prompt, tokens the text encoder reads), both counting BOS/EOS."""
    tokenizer = pipe.tokenizer
    with quiet_truncation():  # transformers warns of the length; the job reports it once itself
        return len(tokenizer(prompt, truncation=False).input_ids), int(tokenizer.model_max_length)


_TOKENIZERS: dict[str, list] = {}


def load_tokenizers(pretrained: str) -> list:
    """The tokenizers of the pipeline at `pretrained` (a loaded pipeline's own, else read from
    its tokenizer folders), without loading any model."""
    pipe = loaded_pipeline(pretrained)
    if pipe is not None:
        return [tokenizer for tokenizer, _ in text_encoders(pipe)]
    if pretrained not in _TOKENIZERS:
        from transformers import AutoTokenizer

        local = Path(pretrained).is_dir()
        found = []
        for folder in ("tokenizer", "tokenizer_2"):
            try:
                found.append(
                    AutoTokenizer.from_pretrained(pretrained, subfolder=folder, local_files_only=local)
                )
            except OSError:  # a pipeline with one text encoder
                continue
        if not found:
            raise ModelLoadError(f"model.pretrained={pretrained!r} has no tokenizer to read prompts with")
        _TOKENIZERS[pretrained] = found
    return _TOKENIZERS[pretrained]


def truncated_prompts(
    pretrained: str, prompts: Mapping[str, str], *, weighting: bool = False
) -> dict[str, tuple[int, int]]:
    """For each prompt (by id) longer than a truncating text encoder reads: (characters of the
    prompt it reads, tokens it reads, BOS/EOS included). Plain data for scoring, which must not
    load a tokenizer itself."""
    found = {}
    with quiet_truncation():
        for prompt_id, text in prompts.items():
            cuts = []
            fragments = prompt_chunks.fragments(text, weighting)
            for tokenizer in load_tokenizers(pretrained):
                tokens = prompt_chunks.tokenize(tokenizer, fragments, offsets=True)
                cut = prompt_chunks.read_chars(tokens, size=int(tokenizer.model_max_length) - 2)
                if cut is not None:
                    cuts.append((cut, int(tokenizer.model_max_length)))
            if cuts:
                found[prompt_id] = min(cuts)
    return found
