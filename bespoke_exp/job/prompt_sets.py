"""Prompt sets beyond a list of items: templates with slots, and which prompts are in-set.

A prompt set (`conf/prompts/*.yaml`, typed by `PromptsConfig`) may hold `templates` beside its
`items`: a text with `{slot}`s, the values of each slot and, per value, extra expectations::

    templates:
      - id: colours                  # prefix of its prompts' ids: colours-female-blue-...
        text: "bespoke, pixel art portrait, {gender}, {background} background, {hair} hair"
        slots: {gender: [female, male], background: [blue, green], hair: [black, red]}
        expectations: {hair: {red: ["red hair starting at y=3 extending to y=17"]}}
        limit: 3                     # optional: a sample of 3 of the 8 combinations
        seed: 0

`expand_prompt_set(cfg)` turns them into ordinary `prompts.items`, once, where a job starts, so
every later reader (generation, scoring, params, identities, the analysis) sees items only. It
also marks each item whose `split` is unset: `train` when its text is one of the training
captions in `checkpoint.train_dir` (compared as a set of phrases, see `caption_phrases`),
`heldout` otherwise. `template_items` gives `job/validate.py` the same prompts to check.

Expansion is deterministic: every combination, last slot (in the text's order) varying
fastest; with `limit: N`, the N combinations whose sha256 of (seed, prompt text) is smallest,
kept in that order: the same sample on every machine and version, and a value added to a slot
can only displace draws with its own prompts, never reshuffle the others.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bespoke_exp.config.compose import ConfigError, literal_text
from bespoke_exp.config.schema import PromptConfig, must
from bespoke_exp.generate.prompt_chunks import parse_weights
from bespoke_exp.pixelart.grid import IMAGE_SUFFIXES

# `{name}`, never `${name}` (OmegaConf's interpolation, which prompt text keeps as text).
SLOT = re.compile(r"(?<!\$)\{([^{}]*)\}")
SLOT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# A template id prefixes its prompts' ids, which must fit job/validate.py's PROMPT_ID (64 chars).
TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", re.ASCII)
MAX_ID = 64
MAX_COMBINATIONS = 100_000  # each is drawn for a `limit` sample: more is a typo, not a prompt set
MAX_PROMPTS = 500  # in one set; each is drawn at every seed, epoch and guidance of a sweep
# A cell "(8,12)" is part of its phrase, not A1111 emphasis, and its comma splits nothing.
_CELL = re.compile(r"\\?\(\s*(\d+)\s*,\s*(\d+)\s*\\?\)")


def expand_prompt_set(cfg: DictConfig) -> DictConfig:
    """`cfg` (a copy) with its prompt templates expanded into `prompts.items` and the
    `templates` key removed (a set without templates keeps its params and identities as they
    were), and each item with no `split` marked from `checkpoint.train_dir`'s captions when
    that is set (a folder of images without captions leaves them unmarked, with a warning).
    Idempotent. Raises ConfigError naming each bad template and slot."""
    cfg = copy.deepcopy(cfg)
    items = cfg.prompts["items"]
    prompts, problems = expand_templates(_raw_templates(cfg), taken=[str(item.id) for item in items])
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    with read_write(cfg), open_dict(cfg):
        for item in _literal_items(prompts):
            items.append(item)
        if "templates" in cfg.prompts:
            with open_dict(cfg.prompts):  # a typed node deletes a key only when its own flag says so
                del cfg.prompts["templates"]
        unmarked = [item for item in items if not item.split]
        train_dir = OmegaConf.select(cfg, "checkpoint.train_dir")
        if train_dir and unmarked:
            try:
                captions = read_captions(Path(train_dir))
            except ValueError as error:
                # Images alone still measure memorisation: a run as before, said once.
                warnings.warn(
                    f"checkpoint.train_dir: {error}, so {len(unmarked)} prompts with no split are "
                    "neither in-set nor held-out; add the captions, or give each prompt a split",
                    stacklevel=2,
                )
                return cfg
            for item, split in zip(unmarked, mark_splits([str(item.text) for item in unmarked], captions)):
                item.split = split
    return cfg


def template_items(cfg: DictConfig, problems: list[str]) -> list:
    """The set's items, then the prompts its templates expand to (splits not yet marked), for
    checking; each template's problems are appended to `problems`."""
    items = list(cfg.prompts["items"])
    prompts, found = expand_templates(_raw_templates(cfg), taken=[str(item.id) for item in items])
    problems += found
    return items + prompts


def _raw_templates(cfg: DictConfig) -> list[dict]:
    """The templates as written: their text is data, so `${...}` in it is never resolved."""
    templates = cfg.prompts.get("templates")
    return OmegaConf.to_container(templates, resolve=False) if templates else []


def _literal_items(prompts: list[PromptConfig]) -> list[DictConfig]:
    """Config nodes of `prompts` whose strings resolve to exactly the text they hold, as
    `literal_text` makes every composed item's."""
    data = OmegaConf.create({"prompts": {"items": [OmegaConf.structured(p) for p in prompts]}})
    return list(literal_text(data).prompts["items"])


def expand_templates(
    templates: Sequence[Mapping], taken: Iterable[str] = ()
) -> tuple[list[PromptConfig], list[str]]:
    """The prompts `templates` (plain data, as in the YAML) expand to, in order, and one line per
    problem, naming the template and the slot. `taken`: ids already used (the set's items)."""
    prompts: list[PromptConfig] = []
    problems: list[str] = []
    seen_ids = set(taken)
    seen_templates: set[str] = set()
    counts: dict[str, int] = {}
    for index, template in enumerate(templates):
        name = template.get("id")
        where = f"prompts template {name!r}" if isinstance(name, str) else f"prompts template #{index}"
        if not isinstance(name, str) or not TEMPLATE_ID.fullmatch(name):
            problems.append(f"{where}: id must be {must('prompts.templates.id')}")
            continue
        if name in seen_templates:
            problems.append(f"{where}: another template has this id; template ids must be unique")
            continue
        seen_templates.add(name)
        found, template_problems = _expand(template, where)
        problems += template_problems
        for prompt in found:
            if prompt.id in seen_ids:
                problems.append(f"{where}: expands to the id {prompt.id!r}, which another prompt has")
            seen_ids.add(prompt.id)
        prompts += found
        counts[name] = len(found)
    if len(prompts) > MAX_PROMPTS:
        each = ", ".join(f"{name}: {count}" for name, count in counts.items())
        problems.append(
            f"prompts templates expand to {len(prompts)} prompts ({each}), more than {MAX_PROMPTS}; "
            "give them a smaller `limit`"
        )
    return prompts, problems


def _expand(template: Mapping, where: str) -> tuple[list[PromptConfig], list[str]]:
    """One template's prompts, or its problems (then no prompts)."""
    text, slots = template.get("text"), template.get("slots")
    if not isinstance(text, str) or text == "???" or not text.strip():
        return [], [f"{where}: text is not set; write the prompt with {{slot}}s in it"]
    if not isinstance(slots, Mapping):
        return [], [f"{where}: slots is not set; give each {{slot}} of the text its values"]
    order = list(dict.fromkeys(SLOT.findall(text)))  # the slots, in the order the text names them
    problems = [
        f"{where}: slot {{{slot}}} in the text is not in slots (it lists {', '.join(slots) or 'none'})"
        for slot in order
        if slot not in slots
    ]
    problems += _slot_problems(slots, order, where) + _expectation_problems(template, slots, where)
    limit = template.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        problems.append(f"{where}: limit={limit!r} must be an integer >= 1 (or null: every combination)")
    if problems:
        return [], problems
    combinations = math.prod(len(slots[slot]) for slot in order)
    if combinations > MAX_COMBINATIONS:
        sizes = " x ".join(f"{len(slots[slot])} {slot}" for slot in order)
        return [], [f"{where}: {sizes} make {combinations} combinations, more than {MAX_COMBINATIONS}"]
    implied = template.get("expectations") or {}
    prompts = []
    for values in itertools.product(*(slots[slot] for slot in order)):
        chosen = dict(zip(order, values))
        prompts.append(
            PromptConfig(
                id=_prompt_id(template["id"], chosen, slots),
                text=SLOT.sub(lambda m: chosen[m[1]], text),
                split=template.get("split"),
                expectations=[e for s in order for e in (implied.get(s) or {}).get(chosen[s], [])],
            )
        )
    if limit is not None and limit < len(prompts):
        seed = template.get("seed", 0)
        drawn = sorted(range(len(prompts)), key=lambda i: _draw(seed, prompts[i].text))[:limit]
        prompts = [prompts[i] for i in sorted(drawn)]
    return prompts, []


def _slot_problems(slots: Mapping, order: list[str], where: str) -> list[str]:
    problems = []
    for slot, values in slots.items():
        if not SLOT_NAME.fullmatch(str(slot)):
            problems.append(f"{where}: slot {slot!r} must be a name of ASCII letters, digits and '_'")
        elif slot not in order:
            problems.append(f"{where}: slot {slot!r} is not in the text; write {{{slot}}} where it goes")
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: slot {slot!r} has no values; list them, e.g. {slot}: [a, b]")
            continue
        if any(not isinstance(v, str) or not v.strip() for v in values):
            problems.append(f"{where}: slot {slot!r} has an empty value; every value must be text")
            continue
        parts: dict[str, str] = {}
        for value in values:
            part = _id_part(slot, values, value)
            if part in parts:
                problems.append(
                    f"{where}: slot {slot!r} values {parts[part]!r} and {value!r} give the same id "
                    f"part {part!r}; its prompts' ids would collide"
                )
            parts[part] = value
    return problems


def _expectation_problems(template: Mapping, slots: Mapping, where: str) -> list[str]:
    implied = template.get("expectations") or {}
    if not isinstance(implied, Mapping):
        return [f"{where}: expectations must map slot -> value -> phrases"]
    problems = []
    for slot, by_value in implied.items():
        if slot not in slots:
            problems.append(f"{where}: expectations name slot {slot!r}, which is not in slots")
            continue
        for value in by_value or {}:
            if value not in (slots[slot] or []):
                problems.append(f"{where}: expectations name {value!r}, not a value of slot {slot!r}")
    return problems


def _id_part(slot: str, values: list[str], value: str) -> str:
    """A slot value in an id: lowercase ASCII letters and digits, other runs as '_'."""
    part = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    return part or f"{slot}{values.index(value)}"  # no ASCII in it: its place in the list


def _prompt_id(prefix: str, chosen: Mapping[str, str], slots: Mapping) -> str:
    """`<prefix>-<value>-<value>...`; past 64 characters, cut, with a hash of the whole."""
    full = "-".join([prefix, *(_id_part(slot, slots[slot], value) for slot, value in chosen.items())])
    if len(full) <= MAX_ID:
        return full
    return f"{full[: MAX_ID - 9]}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def _draw(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}\n{text}".encode()).hexdigest()


def caption_phrases(text: str) -> frozenset[str]:
    """A prompt or caption as the set of its comma-separated phrases, lowercased, whitespace
    collapsed, A1111 weighting removed (`(red hair:1.2)` is `red hair`); a cell `(8,12)` stays
    in its phrase. Trigger words are phrases like any other."""
    plain = "".join(f.text for f in parse_weights(_CELL.sub(r"<\1 \2>", text)))
    phrases = (" ".join(phrase.lower().split()) for phrase in plain.split(","))
    return frozenset(phrase for phrase in phrases if phrase)


def mark_splits(texts: Sequence[str], captions: Iterable[str]) -> list[str]:
    """`train` for each text whose phrases are exactly one caption's (any order, spacing, case
    or weighting), `heldout` for the rest: a combination no caption has is held-out."""
    seen = {caption_phrases(caption) for caption in captions}
    return ["train" if caption_phrases(text) in seen else "heldout" for text in texts]


def read_captions(train_dir: Path) -> list[str]:
    """The captions of a kohya training folder: the `.txt` beside each image, in it or any
    subfolder (`<repeats>_<name>/`), one caption per non-empty line, in path order. Raises
    ValueError naming the folder when it is not one or holds no captions."""
    folder = Path(train_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    captions = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = image.with_suffix(".txt")
        if caption.is_file():
            lines = caption.read_text(encoding="utf-8", errors="replace").splitlines()
            captions += [line.strip() for line in lines if line.strip()]
    if not captions:
        raise ValueError(f"{folder} holds no captions (a .txt file beside an image, as kohya reads them)")
    return captions
