"""A prompt as the user's tools read it, as plain token lists: no torch, no diffusers.

    >>> [(f.text, round(f.weight, 3)) for f in parse_weights("a (red:1.2) cat, [blue] sky")]
    [('a ', 1.0), ('red', 1.2), (' cat, ', 1.0), ('blue', 0.909), (' sky', 1.0)]
    >>> tokens = tokenize(pipe.tokenizer, parse_weights(prompt), offsets=True)
    >>> chunk_tokens(tokens, mode="chunk", comma_id=comma)  # A1111's 75-token chunks
    >>> read_chars(tokens)  # how much of the prompt a truncating encoder reads

- Weighting is A1111's (`modules/prompt_parser.parse_prompt_attention`): `(text)` x1.1,
  `[text]` /1.1, `(text:1.3)` x1.3, nesting multiplies, `\\(` `\\)` `\\[` `\\]` are literal
  brackets. So an unescaped coordinate such as `(8,12)` is emphasis there, and here too once
  `sampler.prompt_weighting` is on.
- Chunking is A1111's: 75 tokens per chunk (BOS and EOS make 77); when a chunk fills up and
  its last comma is at most 20 tokens back, the words after that comma move to the next
  chunk, so a phrase is not cut in two.

`pipeline.py` turns the chunks into embeddings with the pipeline's text encoders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CHUNK = 75  # prompt tokens per text-encoder pass; BOS + 75 + EOS = CLIP's 77
COMMA_BACKTRACK = 20  # A1111's default `comma_padding_backtrack`
MODES = ("chunk", "truncate")

# A1111's tokens of its emphasis syntax, in its order: escapes, brackets, ":weight)", text, ":".
_ATTENTION = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_ROUND, _SQUARE = 1.1, 1 / 1.1


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text with one weight; `sources[k]` is where `text[k]` is in the prompt."""

    text: str
    weight: float
    sources: tuple[int, ...] = field(repr=False)


def fragments(prompt: str, weighting: bool) -> list[Fragment]:
    """The prompt as the encoder reads it: A1111-weighted pieces, or one plain fragment."""
    return parse_weights(prompt) if weighting else plain(prompt)


def plain(prompt: str) -> list[Fragment]:
    """The prompt as one unweighted fragment (prompt weighting off: brackets are text)."""
    return [Fragment(prompt, 1.0, tuple(range(len(prompt))))]


def parse_weights(prompt: str) -> list[Fragment]:
    """A1111's `parse_prompt_attention`, keeping where each character came from."""
    pieces: list[list] = []  # [text, weight, sources]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in _ATTENTION.finditer(prompt):
        text, weight = m.group(0), m.group(1)
        if text.startswith("\\"):  # an escaped bracket (or a lone backslash) is literal text
            pieces.append([text[1:], 1.0, list(range(m.start() + 1, m.end()))])
        elif text == "(":
            round_open.append(len(pieces))
        elif text == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif text == ")" and round_open:
            multiply(round_open.pop(), _ROUND)
        elif text == "]" and square_open:
            multiply(square_open.pop(), _SQUARE)
        else:  # text, or a bracket with nothing to close
            pieces.append([text, 1.0, list(range(m.start(), m.end()))])
    for start in round_open:  # unclosed brackets run to the end, as in A1111
        multiply(start, _ROUND)
    for start in square_open:
        multiply(start, _SQUARE)
    merged: list[list] = []
    for piece in pieces:  # A1111 tokenizes runs of equal weight as one text
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
            merged[-1][2] += piece[2]
        else:
            merged.append(piece)
    return [Fragment(t, w, tuple(s)) for t, w, s in merged] or plain("")


@dataclass(frozen=True)
class Tokens:
    """A prompt's tokens without BOS/EOS, each with its weight and, when asked for, the
    offset in the prompt where the token's text ends."""

    ids: list[int]
    weights: list[float]
    ends: list[int] | None = None


def tokenize(tokenizer, fragments: list[Fragment], *, offsets: bool = False) -> Tokens:
    """Each fragment tokenized on its own and the tokens concatenated, as A1111 does; with one
    unweighted fragment this is exactly the tokenization diffusers' `encode_prompt` uses."""
    ids: list[int] = []
    weights: list[float] = []
    ends: list[int] = []
    for fragment in fragments:
        encoded = tokenizer(
            fragment.text, add_special_tokens=False, truncation=False, return_offsets_mapping=offsets
        )
        ids += encoded["input_ids"]
        weights += [fragment.weight] * len(encoded["input_ids"])
        if offsets:
            ends += [fragment.sources[end - 1] + 1 for _, end in encoded["offset_mapping"]]
    return Tokens(ids, weights, ends if offsets else None)


def chunk_tokens(
    tokens: Tokens, *, mode: str, comma_id: int | None, size: int = CHUNK
) -> list[tuple[list[int], list[float]]]:
    """(ids, weights) of each chunk of at most `size` tokens. `truncate`: the first chunk only,
    as diffusers' tokenizer call truncates; `chunk`: every token, in A1111's chunks."""
    if mode not in MODES:
        raise ValueError(f"sampler.long_prompts={mode!r} must be one of {', '.join(MODES)}")
    if mode == "truncate":
        return [(tokens.ids[:size], tokens.weights[:size])]
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1
    # A1111's loop (sd_hijack_clip.tokenize_line), step for step: a full chunk whose last comma
    # is close moves the tokens after that comma on; a comma arriving at a full chunk opens the next.
    for token, weight in zip(tokens.ids, tokens.weights):
        if token == comma_id:
            last_comma = len(ids)
        elif len(ids) == size and last_comma >= 0 and size - last_comma <= COMMA_BACKTRACK:
            cut = last_comma + 1
            chunks.append((ids[:cut], weights[:cut]))
            ids, weights, last_comma = ids[cut:], weights[cut:], -1
        if len(ids) == size:
            chunks.append((ids, weights))
            ids, weights, last_comma = [], [], -1
        ids.append(token)
        weights.append(weight)
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def read_chars(tokens: Tokens, size: int = CHUNK) -> int | None:
    """How many leading characters of the prompt a text encoder that reads `size` tokens sees
    (up to the end of the last token it reads), or None when it sees every token."""
    if tokens.ends is None:
        raise ValueError("read_chars needs tokens made with offsets=True")
    if len(tokens.ids) <= size:
        return None
    return tokens.ends[size - 1]
