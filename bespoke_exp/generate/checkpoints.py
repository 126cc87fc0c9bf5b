"""LoRA epoch checkpoints on disk: which file is epoch N, and what a file is.

kohya's naming: epoch N is `{stem}-{N:06d}.safetensors`; the final epoch is the bare
`{stem}.safetensors`. This module is the one place that turns a checkpoint file into a
description: sha256, LoRA family (SDXL / SD1.x / FLUX) from the tensor keys, rank and alpha,
and the training settings kohya writes into the header (`ss_*`). `checkpoint_folder` does it
for a whole folder. It reads headers and a few scalars, never loads tensors into a model,
never imports diffusers.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from safetensors import safe_open

from bespoke_exp.generate.digests import file_sha256

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# Every LoRA format diffusers loads names its low-rank pair one of these ways (kohya, peft).
LORA_KEY_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")
FAMILY_LABELS = {"sdxl": "SDXL", "sd1": "SD1.x", "flux": "FLUX", "unknown": "unknown"}
BASE_FAMILIES = ("sdxl", "sd1", "flux")  # what `model.family` may say


class CheckpointError(ValueError):
    """A checkpoint folder, name or file is not usable; the message says which and why."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file as data. `epoch` is None where neither the name nor the header says."""

    path: Path
    epoch: int | None
    sha256: str
    size_bytes: int
    rank: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    family: str = "unknown"  # a key of FAMILY_LABELS
    family_evidence: str = ""
    alpha: float | None = None
    is_lora: bool = True

    @property
    def ss_epoch(self) -> int | None:
        """The epoch the header claims (kohya rewrites `ss_epoch` at every save)."""
        value = parse_value(self.metadata.get("ss_epoch", ""))
        return value if isinstance(value, int) else None

    @cached_property
    def training(self) -> dict[str, object]:  # read per setting when a folder is compared
        return training_settings(self.metadata)

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "epoch": self.epoch,
            "ss_epoch": self.ss_epoch,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "lora": self.is_lora,
            "family": self.family,
            "family_evidence": self.family_evidence,
            "rank": self.rank,
            "alpha": self.alpha,
            "training": self.training,
        }


def epoch_file_name(stem: str, epoch: int, final_epoch: int) -> str:
    """kohya's file name for `epoch` of a run whose last epoch is `final_epoch`."""
    return f"{stem}.safetensors" if epoch == final_epoch else f"{stem}-{epoch:06d}.safetensors"


_NUMBERED = re.compile(r"^(?P<stem>.+)-(?P<epoch>\d{6})$")


def kohya_name(path: Path) -> tuple[str, int | None]:
    """(stem, epoch) by kohya's naming, the inverse of `epoch_file_name`: `{stem}-{N:06d}` is
    epoch N; a bare `{stem}` is the final epoch, whose number the name doesn't carry (None)."""
    match = _NUMBERED.match(path.stem)
    return (match["stem"], int(match["epoch"])) if match else (path.stem, None)


def available_epochs(directory: Path, stem: str, final_epoch: int) -> dict[int, Path]:
    """Epochs that have a file in `directory`, following kohya's naming."""
    found: dict[int, Path] = {}
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        named, epoch = kohya_name(path)
        # epoch 0 is the base model (no LoRA file), never a `-000000` file.
        if path.suffix == ".safetensors" and named == stem and epoch and path.is_file():
            found[epoch] = path
    bare = directory / f"{stem}.safetensors"
    if bare.is_file():
        found.setdefault(final_epoch, bare)
    return dict(sorted(found.items()))


def resolve_checkpoint(directory: str | Path, stem: str, epoch: int, final_epoch: int) -> Path:
    """The file holding `epoch`, or a CheckpointError naming what was expected and found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint.dir {str(directory)!r} does not exist; point checkpoint.dir at the folder "
            f"holding {stem}-000001.safetensors ... {stem}.safetensors"
        )
    if not 1 <= epoch <= final_epoch:
        raise CheckpointError(f"epoch={epoch} is outside 1..{final_epoch} (checkpoint.epochs={final_epoch})")
    expected = directory / epoch_file_name(stem, epoch, final_epoch)
    if expected.is_file():
        return expected
    numbered = directory / f"{stem}-{epoch:06d}.safetensors"
    if numbered.is_file():
        return numbered
    for candidate in (expected, numbered):
        problem = _not_a_file(candidate)
        if problem:
            raise CheckpointError(
                f"epoch={epoch}: {candidate} {problem}; it must be the LoRA .safetensors file"
            )
    pickled = [p.name for p in directory.glob(f"{stem}*") if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise CheckpointError(
            f"{expected} is missing, but {', '.join(sorted(pickled))} exist: pickle-based "
            "checkpoints can run code when loaded and are refused; convert them to .safetensors"
        )
    existing = available_epochs(directory, stem, final_epoch)
    if existing:
        have = ", ".join(str(e) for e in existing)
        raise CheckpointError(f"epoch={epoch}: expected {expected}; epochs with a file: {have}")
    others = sorted(p.name for p in directory.glob("*.safetensors"))[:5]
    hint = f" (it holds {', '.join(others)}: is checkpoint.stem right?)" if others else " (it is empty)"
    raise CheckpointError(
        f"epoch={epoch}: expected {expected}; no file named {stem}*.safetensors in {directory}{hint}"
    )


def _not_a_file(path: Path) -> str | None:
    """What is at `path` instead of a file, or None when nothing is there at all."""
    if path.is_dir():
        return "is a folder"
    if path.is_symlink():
        target = os.readlink(path)
        return f"is a symbolic link to {target}, which leads to no file (missing, or a loop of links)"
    if os.path.lexists(path):
        return "is not a regular file"
    return None


# --- what a file is: family, rank, alpha, training settings ---------------------------------

# Rules that tell LoRA families apart from tensor keys (kohya and diffusers names), first match
# wins. FLUX LoRAs target a transformer (double/single blocks; kohya's FLUX files also have
# lora_te1_ for CLIP-L, so FLUX goes first). SDXL has two text encoders and a UNet whose deep
# attentions stack up to 10 transformer blocks and whose top level has none; SD1.x has one text
# encoder, one transformer block per attention and attention on every level but the deepest.
_FAMILY_RULES = (
    (
        "flux",
        re.compile(
            r"^(lora_transformer_|transformer\.|lora_te3_)|double_blocks|single_(transformer_)?blocks"
        ),
        "FLUX transformer keys",
    ),
    (
        "sdxl",
        re.compile(r"^(lora_te[12]_|text_encoder_2\.)"),
        "SDXL's two text encoders: lora_te1_/lora_te2_ keys",
    ),
    ("sd1", re.compile(r"^lora_te_"), "one text encoder: lora_te_ keys, no lora_te1_/lora_te2_"),
    (
        "sdxl",
        re.compile(
            r"transformer_blocks[._][1-9]|up_blocks[._]0[._]attentions|output_blocks[._][0-2][._]1[._]"
        ),
        "SDXL's UNet layout: deep transformer stacks, no top-level attention",
    ),
    (
        "sd1",
        re.compile(
            r"down_blocks[._]0[._]attentions|up_blocks[._]3[._]attentions"
            r"|input_blocks[._][12][._]1[._]|output_blocks[._](9|1[01])[._]1[._]"
        ),
        "SD1.x's UNet layout: attention in the top level",
    ),
)
# What the header claims (kohya's ss_base_model_version, modelspec.architecture), used only
# when the keys can't tell.
_CLAIMS = (
    ("sdxl", ("sdxl", "stable-diffusion-xl")),
    ("flux", ("flux",)),
    ("sd1", ("sd_v1", "stable-diffusion-v1")),
)


def lora_family(keys: Iterable[str], metadata: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(family, evidence): `sdxl`, `sd1`, `flux` or `unknown`, told from the tensor keys, else
    from what the header claims; `evidence` says which key or header value decided it."""
    keys = list(keys)
    for family, pattern, why in _FAMILY_RULES:
        match = next((key for key in keys if pattern.search(key)), None)
        if match is not None:
            return family, f"{why}, e.g. {match!r}"
    metadata = metadata or {}
    for name in ("ss_base_model_version", "modelspec.architecture"):
        claim = metadata.get(name, "").lower()
        for family, words in _CLAIMS:
            if claim.startswith(words):
                return family, f"the header's {name}={metadata[name]!r} (the keys don't tell)"
    return "unknown", "neither the tensor keys nor the header name a known family"


def parse_value(text: str) -> object:
    """A header value as data: kohya writes every value as a string (numbers, True/False, None,
    JSON tables for datasets and tags)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for cast in (int, float) if "_" not in text else ():  # int("1_0") is 10: such text stays text
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # a value nested deeper than Python recurses stays text
            pass
    return text


def trigger_words(metadata: Mapping[str, str], share: float = 0.9) -> list[str]:
    """The words that call the LoRA up: the header's `modelspec.trigger_phrase`, then the caption
    tags at least `share` of a dataset folder's images carry (kohya's `ss_tag_frequency`)."""
    words = [metadata.get("modelspec.trigger_phrase", "")]
    frequency = parse_value(metadata.get("ss_tag_frequency", ""))
    folders = parse_value(metadata.get("ss_dataset_dirs", ""))
    for folder, tags in (frequency if isinstance(frequency, dict) else {}).items():
        counts = {t: n for t, n in (tags if isinstance(tags, dict) else {}).items() if isinstance(n, int)}
        info = folders.get(folder) if isinstance(folders, dict) else None
        images = info.get("img_count") if isinstance(info, dict) else None
        # Without the folder's image count, its most frequent tag stands in for it.
        total = images if isinstance(images, int) and images > 0 else max(counts.values(), default=0)
        if total >= 2:  # with one caption every tag is in "every" caption
            common = [t for t, n in counts.items() if n >= share * total]
            words += sorted(common, key=lambda t: (-counts[t], t))[:5]
    return list(dict.fromkeys(w.strip() for w in words if w.strip()))


_KOHYA_FOLDER = re.compile(r"^\d+_(?P<concept>.+)$")  # `<repeats>_<concept>`, e.g. 10_bespoke


def lora_trigger_words(metadata: Mapping[str, str]) -> list[str]:
    """The words a prompt calls this LoRA up with, which trigger=off leaves out: the header's
    `modelspec.trigger_phrase` (comma-separated); else, of the caption tags nearly every image
    carries (`trigger_words`), those naming a kohya folder's concept (`10_bespoke` -> the tag
    "TOK bespoke"), else all of them. Empty when the header says none of this."""
    phrase = metadata.get("modelspec.trigger_phrase", "")
    if phrase.strip():
        return list(dict.fromkeys(w.strip() for w in phrase.split(",") if w.strip()))
    common = trigger_words(metadata)
    frequency = parse_value(metadata.get("ss_tag_frequency", ""))
    folders = frequency if isinstance(frequency, dict) else {}
    concepts = [m["concept"].strip() for m in map(_KOHYA_FOLDER.match, folders) if m and m["concept"].strip()]
    named = [
        tag
        for tag in common
        if any(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", tag, re.IGNORECASE) for c in concepts)
    ]
    return named or common


def read_metadata(path: Path) -> dict[str, str]:
    """The header's metadata alone (no hashing): what the base model's job reads its trigger
    words from. CheckpointError for a file that is not readable .safetensors."""
    return _read_header(path)[0]


def training_settings(metadata: Mapping[str, str]) -> dict[str, object]:
    """Every kohya `ss_*` header value, named without the prefix in kohya's own words (unet_lr,
    lr_scheduler, network_dim, ...) and parsed, plus `trigger_words`; empty for a file without
    training metadata. The whole record a retraining config can be written from."""
    settings = {k[3:]: parse_value(v) for k, v in sorted(metadata.items()) if k.startswith("ss_")}
    words = trigger_words(metadata)
    if words:
        settings["trigger_words"] = words
    return settings


# The settings `inspect` shows and every job logs as `train.*` params: what the seed run listed
# as unknown (base model, rank, resolution, learning rates, batch size, optimizer, scheduler) and
# how long it trained on how much. `steps` is per epoch; the rest is one value per training run.
HEADLINE_SETTINGS = (
    "sd_model_name",
    "base_model_version",
    "resolution",
    "network_module",
    "network_dim",
    "network_alpha",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "total_batch_size",
    "batch_size_per_device",
    "gradient_accumulation_steps",
    "optimizer",
    "lr_scheduler",
    "lr_warmup_steps",
    "mixed_precision",
    "seed",
    "num_epochs",
    "max_train_steps",
    "steps",
    "num_train_images",
    "trigger_words",
)
PER_EPOCH_SETTINGS = ("steps",)


def headline_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """The HEADLINE_SETTINGS present in `settings`, in that order."""
    return {key: settings[key] for key in HEADLINE_SETTINGS if key in settings}


def _read_header(path: Path) -> tuple[dict[str, str], list[str], int | None, float | None]:
    """(metadata, tensor keys, rank, alpha) from the header and the `.alpha` scalars: the most
    common rank (first dim of lora_down / lora_A) and alpha, since conv layers may differ."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys())
            downs = [k for k in keys if k.endswith(("lora_down.weight", "lora_A.weight"))]
            ranks = Counter(int(handle.get_slice(k).get_shape()[0]) for k in downs)
            scalars = [k for k in keys if k.endswith(".alpha") and len(handle.get_slice(k).get_shape()) <= 1]
            alphas = Counter(float(handle.get_tensor(k).reshape(-1)[0]) for k in scalars)
    except Exception as error:  # safetensors raises several types for a damaged header
        raise CheckpointError(
            f"{path} is not a readable .safetensors file ({error}); re-download or re-export it"
        ) from error
    rank = ranks.most_common(1)[0][0] if ranks else None
    alpha = alphas.most_common(1)[0][0] if alphas else None
    return metadata, keys, rank, alpha


def read_checkpoint(path: Path, epoch: int | None = None, require_lora: bool = False) -> CheckpointInfo:
    """Describe any .safetensors file (a file that is not a LoRA gets `is_lora=False`, or a
    CheckpointError before it is hashed when `require_lora`). Rank and alpha come from
    `ss_network_dim`/`ss_network_alpha`, else from the tensors."""
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based checkpoint, which can run code when loaded; convert it to .safetensors"
        )
    metadata, keys, rank, alpha = _read_header(path)
    is_lora = any(marker in key for key in keys for marker in LORA_KEY_MARKERS)
    if require_lora and not is_lora:
        example = f" such as {keys[0]!r}" if keys else ""
        raise CheckpointError(
            f"{path} holds no LoRA weights ({len(keys)} tensors{example}, none named lora_down/lora_up or "
            "lora_A/lora_B): it is not a LoRA file; point checkpoint.dir at the trainer's LoRA outputs"
        )
    claimed_rank = parse_value(metadata.get("ss_network_dim", ""))
    claimed_alpha = parse_value(metadata.get("ss_network_alpha", ""))
    family, evidence = lora_family(keys, metadata)
    return CheckpointInfo(
        path=path,
        epoch=epoch,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        rank=claimed_rank if isinstance(claimed_rank, int) else rank,
        metadata=metadata,
        family=family,
        family_evidence=evidence,
        alpha=float(claimed_alpha) if isinstance(claimed_alpha, (int, float)) else alpha,
        is_lora=is_lora,
    )


def describe_checkpoint(path: Path, epoch: int) -> CheckpointInfo:
    """Read the header (not the tensors) and hash the file; a corrupt, non-safetensors or
    non-LoRA file raises CheckpointError naming it (a base model is refused unhashed)."""
    return read_checkpoint(path, epoch, require_lora=True)


def check_family(info: CheckpointInfo, expected: str, model: str) -> None:
    """Refuse a LoRA made for another base family (an SD1.x or FLUX LoRA on an SDXL base) before
    the base model loads; `model` names the config that expects `expected`. A LoRA whose
    family can't be told is let through: the loader is the judge then."""
    if info.family in ("unknown", expected):
        return
    want, have = FAMILY_LABELS.get(expected, expected), FAMILY_LABELS[info.family]
    raise CheckpointError(
        f"{info.path} is a LoRA for {have} ({info.family_evidence}), but {model} expects LoRAs for "
        f"{want} (model.family={expected}): point checkpoint.dir at {want} LoRA files, or use a "
        f"base model of the {have} family"
    )
