"""The trigger axis: with `trigger=off` every prompt is generated without its trigger words
(same prompt ids, same seeds), so each image pairs with its trigger-on twin and the difference
measures what the words call up. Scoring still reads the prompt as written: the trigger words
carry no expectations.

`remove_trigger_words` is the pure text step; `generated_prompts` decides, for one job, the
words (config, else the LoRA header) and the text each prompt is generated with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from bespoke_exp.generate import checkpoints

# A number in A1111's weighting syntax: (word:1.2), (word:.8), (word:-1)
_WEIGHT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"


def _pattern(word: str) -> re.Pattern[str]:
    """`word` (its spaces: any run of whitespace) as a whole word or phrase, case-insensitive, bare
    or in A1111's emphasis: (word), (word:1.2), [word]. A word inside another word ("bespokeness",
    "bespoke-style") is not it."""
    phrase = r"\s+".join(re.escape(part) for part in word.split())
    bare = rf"(?<![\w-]){phrase}(?![\w-])"
    return re.compile(rf"\(\s*{bare}\s*(?::\s*{_WEIGHT}\s*)?\)|\[\s*{bare}\s*\]|{bare}", re.IGNORECASE)


def remove_trigger_words(text: str, words: Iterable[str]) -> str:
    """`text` without any of `words`, and without the comma or space each left behind:
    "TOK bespoke, 24x24 pixel grid portrait" -> "24x24 pixel grid portrait" for words TOK and
    bespoke. A text holding none of them is returned unchanged, byte for byte."""
    # Longer phrases first, so "TOK bespoke" goes whole before "bespoke" could split it.
    patterns = [_pattern(w) for w in sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)]
    while True:
        found = [m for m in (p.search(text) for p in patterns) if m]
        if not found:
            return text
        first = min(found, key=lambda m: m.start())
        text = _cut(text, first.start(), first.end())


def _cut(text: str, start: int, end: int) -> str:
    """`text` less `text[start:end]`, joined back as a prompt is written: one comma between the
    phrases either side, a space between words, nothing dangling at either end or a bracket."""
    left, right = text[:start].rstrip(), text[end:].lstrip()
    if right.startswith(",") and (not left or left.endswith((",", "(", "["))):
        right = right[1:].lstrip()  # "a, WORD, b" / "WORD, b" / "(WORD, b:1.1)": its comma goes too
    elif left.endswith(",") and (not right or right.startswith((")", "]"))):
        left = left[:-1].rstrip()  # "a, WORD" at the end (of the text or a bracket)
    glued = not left or not right or left.endswith(("(", "[")) or right.startswith((",", ")", "]"))
    return left + ("" if glued else " ") + right


@dataclass(frozen=True)
class GeneratedPrompts:
    """What a job generates: each prompt's text by id, and with trigger=off the words left out,
    where they came from and which prompts held none of them."""

    texts: dict[str, str]
    trigger: bool = True
    words: list[str] = field(default_factory=list)
    source: str = ""  # checkpoint.trigger_words, or the header file they were read from
    unchanged: list[str] = field(default_factory=list)  # prompt ids holding no trigger word

    def params(self) -> dict[str, str]:
        """With trigger=off: the words left out and each prompt's text as generated, as params."""
        if self.trigger:
            return {}
        return {
            "trigger.words": json.dumps(self.words),
            "trigger.source": self.source,
            **{f"trigger.prompt.{pid}": text for pid, text in self.texts.items()},
        }


def generated_prompts(cfg: DictConfig, lora: Path | None) -> GeneratedPrompts:
    """Each prompt's text as the job generates it. With trigger=off the trigger words are
    `checkpoint.trigger_words`, else read from the header of `lora` (the job's LoRA file; None,
    the base model: the final epoch's); CheckpointError when neither names any."""
    texts = {p.id: str(p.text) for p in cfg.prompts["items"]}
    if cfg.trigger:
        return GeneratedPrompts(texts)
    configured = cfg.checkpoint.trigger_words
    if configured is not None:
        words, source = [str(w) for w in configured], "checkpoint.trigger_words"
    else:
        c = cfg.checkpoint
        header = lora or checkpoints.resolve_checkpoint(c.dir, c.stem, c.epochs, c.epochs)
        words, source = _header_words(header), f"the header of {header.name}"
    without = {pid: remove_trigger_words(text, words) for pid, text in texts.items()}
    unchanged = [pid for pid in texts if without[pid] == texts[pid]]
    return GeneratedPrompts(without, False, words, source, unchanged)


def _header_words(header: Path) -> list[str]:
    words = checkpoints.lora_trigger_words(checkpoints.read_metadata(header))
    if not words:
        raise checkpoints.CheckpointError(
            f"trigger=off: {header.name} names no trigger word (no modelspec.trigger_phrase, no tag in "
            "nearly every caption of ss_tag_frequency); say them: checkpoint.trigger_words=[TOK,bespoke]"
        )
    return words
