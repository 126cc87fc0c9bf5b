"""A small CLIP BPE tokenizer for the demo: every word of the demo's captions and prompt
sets is one token, so a tiny text encoder can learn them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bespoke_exp.demo import punks


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
    merges: dict[tuple[str, str], int] = {}
    for word in _corpus_words():
        symbols = [byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        # Join what the merges so far leave of this word, left to right. New merges rank
        # after every earlier one, so they never cut into an earlier word's chain.
        pieces = _apply_merges(symbols, merges)
        while len(pieces) > 1:
            merges.setdefault((pieces[0], pieces[1]), len(merges))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    vocab: dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # must stay the highest id: CLIP pools at argmax(ids)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _apply_merges(symbols: list[str], merges: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding as CLIP applies it: always the lowest-ranked adjacent pair first."""
    pieces = list(symbols)
    while len(pieces) > 1:
        ranked = [(merges.get(pair, len(merges)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(ranked)
        if rank == len(merges):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces
