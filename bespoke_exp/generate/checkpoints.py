"""LoRA epoch checkpoints on disk: which file is epoch N, and what a file is.

kohya's naming: epoch N is `{stem}-{N:06d}.safetensors`; the final epoch is the bare
`{stem}.safetensors`. This module is the one place that turns a checkpoint file
into a description (sha256, kohya `ss_*` metadata, rank); it never loads tensors
into a model and never imports diffusers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# Every LoRA format diffusers loads names its low-rank pair one of these ways (kohya, peft).
LORA_KEY_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")


class CheckpointError(ValueError):
    """A checkpoint folder, name or file is not usable; the message says which and why."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int
    sha256: str
    size_bytes: int
    rank: int | None
    metadata: dict[str, str] = field(default_factory=dict)


def epoch_file_name(stem: str, epoch: int, final_epoch: int) -> str:
    """kohya's file name for `epoch` of a run whose last epoch is `final_epoch`."""
    return f"{stem}.safetensors" if epoch == final_epoch else f"{stem}-{epoch:06d}.safetensors"


def available_epochs(directory: Path, stem: str, final_epoch: int) -> dict[int, Path]:
    """Epochs that have a file in `directory`, following kohya's naming."""
    found: dict[int, Path] = {}
    if not directory.is_dir():
        return found
    pattern = re.compile(rf"^{re.escape(stem)}-(\d{{6}})\.safetensors$")
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
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


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, cached per process by (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def describe_checkpoint(path: Path, epoch: int) -> CheckpointInfo:
    """Read the header (not the tensors) and hash the file; a corrupt or non-safetensors
    file raises CheckpointError naming it."""
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based checkpoint, which can run code when loaded; convert it to .safetensors"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys())
            down_keys = [k for k in keys if k.endswith("lora_down.weight")]
            rank = int(handle.get_slice(down_keys[0]).get_shape()[0]) if down_keys else None
    except Exception as error:  # safetensors raises several types for a damaged header
        raise CheckpointError(
            f"{path} is not a readable .safetensors file ({error}); re-download or re-export it"
        ) from error
    if not any(marker in key for key in keys for marker in LORA_KEY_MARKERS):
        example = f" such as {keys[0]!r}" if keys else ""
        raise CheckpointError(
            f"{path} holds no LoRA weights ({len(keys)} tensors{example}, none named lora_down/lora_up or "
            "lora_A/lora_B): it is not a LoRA file; point checkpoint.dir at the trainer's LoRA outputs"
        )
    return CheckpointInfo(
        path=path,
        epoch=epoch,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        rank=rank,
        metadata=metadata,
    )
