"""A folder of LoRA checkpoints at a glance (`python -m bespoke_exp.checkpoints PATH`): each file
described by `checkpoints.read_checkpoint`, epochs by kohya naming, what looks wrong (gaps,
`ss_epoch` disagreeing with the name, mixed runs, duplicate files), and a table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bespoke_exp.generate.checkpoints import (
    FAMILY_LABELS,
    HEADLINE_SETTINGS,
    PER_EPOCH_SETTINGS,
    PICKLE_SUFFIXES,
    CheckpointError,
    CheckpointInfo,
    headline_settings,
    kohya_name,
    parse_value,
    read_checkpoint,
)


@dataclass(frozen=True)
class Inspection:
    """What `inspect_checkpoints` found: one CheckpointInfo per readable file, by stem and epoch."""

    path: Path
    checkpoints: list[CheckpointInfo]
    warnings: list[str]

    def shared_settings(self) -> dict[str, object]:
        """HEADLINE_SETTINGS (less the per-epoch ones) with one value across every file that has
        training metadata; a setting that differs between files is None (the warnings name it)."""
        rows = [headline_settings(i.training) for i in self.checkpoints if i.is_lora and i.training]
        keys = [k for k in HEADLINE_SETTINGS if k not in PER_EPOCH_SETTINGS and any(k in row for row in rows)]
        return {
            k: rows[0].get(k) if all(row.get(k) == rows[0].get(k) for row in rows) else None for k in keys
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "checkpoints": [info.to_dict() for info in self.checkpoints],
            "training": self.shared_settings(),
            "warnings": self.warnings,
        }


def inspect_checkpoints(path: str | Path) -> Inspection:
    """Describe a checkpoint file, or every .safetensors file in a folder, with warnings: gaps
    in the epoch sequence, `ss_epoch` disagreeing with the name, mixed ranks / bases / settings,
    duplicate content, files that aren't readable LoRAs. Raises CheckpointError when `path`
    does not exist or holds no readable .safetensors file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    pickled = [] if path.is_file() else sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if path.is_file() and path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a .safetensors file")
    if not files:
        also = f" ({len(pickled)} pickle-based files, not read: convert them)" if pickled else ""
        raise CheckpointError(f"{path} holds no .safetensors files{also}")
    infos, warnings = [], []
    for file in files:
        try:
            infos.append(read_checkpoint(file))
        except CheckpointError as error:
            warnings.append(str(error))
    if not infos:
        first = warnings[0]
        raise CheckpointError(first if len(files) == 1 else f"{len(files)} files, none readable: {first}")
    infos = _with_epochs(infos)
    warnings += [f"{i.path.name} holds no LoRA weights: not a LoRA file" for i in infos if not i.is_lora]
    loras = [i for i in infos if i.is_lora]
    warnings += (
        _epoch_warnings(loras, gaps=path.is_dir()) + _mixed_warnings(loras) + _duplicate_warnings(infos)
    )
    if pickled:
        warnings.append(f"pickle-based files not read (they can run code when loaded): {', '.join(pickled)}")
    return Inspection(path, infos, warnings)


def _num_epochs(info: CheckpointInfo) -> int | None:
    value = parse_value(info.metadata.get("ss_num_epochs", ""))
    return value if isinstance(value, int) else None


def _with_epochs(infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
    """Each file's epoch by kohya's naming. The bare file is the final epoch: the run's
    `ss_num_epochs`, else one past the numbered files beside it, else its own `ss_epoch`."""
    numbered: dict[str, list[int]] = {}
    for info in infos:
        stem, epoch = kohya_name(info.path)
        if epoch is not None:
            numbered.setdefault(stem, []).append(epoch)
    dated = []
    for info in infos:
        stem, epoch = kohya_name(info.path)
        if epoch is None:
            after = max(numbered[stem]) + 1 if stem in numbered else None
            epoch = next((e for e in (_num_epochs(info), after, info.ss_epoch) if e is not None), None)
        dated.append(replace(info, epoch=epoch))
    return sorted(dated, key=lambda i: (kohya_name(i.path)[0], i.epoch is None, i.epoch or 0, i.path.name))


def _epoch_warnings(infos: list[CheckpointInfo], gaps: bool) -> list[str]:
    """`ss_epoch` against the name, two files for one epoch and (with `gaps`, for a folder)
    epochs up to the run's last that have no file: a sweep can't cover those."""
    warnings = []
    by_stem: dict[str, list[CheckpointInfo]] = {}
    for info in infos:
        stem, numbered = kohya_name(info.path)
        by_stem.setdefault(stem, []).append(info)
        said = f"epoch {numbered} by its name" if numbered else f"the final epoch ({info.epoch})"
        if info.ss_epoch is not None and info.epoch is not None and info.ss_epoch != info.epoch:
            warnings.append(f"{info.path.name} is {said}, but its header says ss_epoch={info.ss_epoch}")
    for stem, group in by_stem.items():
        epochs = Counter(i.epoch for i in group if i.epoch is not None)
        last = max([*epochs, *(e for e in map(_num_epochs, group) if e is not None)], default=0)
        missing = [e for e in range(1, last + 1) if e not in epochs]
        if gaps and missing:
            warnings.append(f"{stem}: no file for epoch {_ranges(missing)} (of 1..{last})")
        for epoch, count in sorted(epochs.items()):
            if count > 1:
                names = ", ".join(i.path.name for i in group if i.epoch == epoch)
                warnings.append(f"{stem}: epoch {epoch} has {count} files: {names}")
    return warnings


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for index, number in enumerate(numbers):
        start = number if start is None else start
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(str(start) if start == number else f"{start}-{number}")
            start = None
    return ", ".join(parts)


# What must be one value across a folder's LoRAs: (label, how to read it from a file).
_MIX_CHECKS: tuple[tuple[str, Callable[[CheckpointInfo], object]], ...] = (
    ("family", lambda i: FAMILY_LABELS[i.family]),
    ("rank", lambda i: i.rank),
    ("alpha", lambda i: i.alpha),
)


def _mixed_warnings(infos: list[CheckpointInfo]) -> list[str]:
    """A folder that mixes families, ranks, base models or training settings: epochs of one run
    share all of them, so a mix means files from different runs (or a renamed file)."""
    warnings = [_mix(label, {i.path.name: read(i) for i in infos}) for label, read in _MIX_CHECKS]
    with_metadata = [i for i in infos if i.training]
    if with_metadata and len(with_metadata) < len(infos):
        bare = [i.path.name for i in infos if not i.training]
        warnings.append(f"no training metadata in {_names(bare)} (the other files have it)")
    for key in HEADLINE_SETTINGS:
        if key not in PER_EPOCH_SETTINGS:
            warnings.append(_mix(key, {i.path.name: i.training.get(key) for i in with_metadata}))
    return [w for w in warnings if w]


def _mix(label: str, values: dict[str, object]) -> str:
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(json.dumps(value, default=str), []).append(name)
    if len(groups) < 2:
        return ""
    ordered = sorted(groups.items(), key=lambda group: -len(group[1]))  # the odd ones out last
    parts = [f"{_show(json.loads(v))} ({_names(names)})" for v, names in ordered]
    return f"mixed {label} in one folder: {'; '.join(parts)}"


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} files"


def _duplicate_warnings(infos: list[CheckpointInfo]) -> list[str]:
    by_sha: dict[str, list[str]] = {}
    for info in infos:
        by_sha.setdefault(info.sha256, []).append(info.path.name)
    return [
        f"same content (sha256 {sha[:12]}): {', '.join(names)}"
        for sha, names in by_sha.items()
        if len(names) > 1
    ]


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _size(size_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size_bytes < 1000 or unit == "GB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1000
    return ""


def format_inspection(inspection: Inspection) -> str:
    """The human-readable report: one row per file, the shared training settings, warnings."""
    header = ("epoch", "file", "size", "sha256", "family", "rank", "alpha", "ss_epoch", "steps")
    rows = [
        (
            _show(i.epoch),
            i.path.name,
            _size(i.size_bytes),
            i.sha256[:12],
            FAMILY_LABELS[i.family] if i.is_lora else "not LoRA",
            _show(i.rank),
            _show(i.alpha),
            _show(i.ss_epoch),
            _show(i.training.get("steps")),
        )
        for i in inspection.checkpoints
    ]
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    total = sum(i.size_bytes for i in inspection.checkpoints)
    lines.insert(0, f"{inspection.path}: {len(rows)} file(s), {_size(total)}\n")
    settings = inspection.shared_settings()
    if settings:
        lines += ["", "training settings (from the header):"]
        width = max(len(k) for k in settings)
        lines += [
            f"  {k.ljust(width)}  {_show(v) if v is not None else 'mixed'}" for k, v in settings.items()
        ]
    else:
        lines += ["", "training settings: none in the header (not every trainer writes them)"]
    lines += ["", "warnings:", *(f"  - {w}" for w in inspection.warnings or ["none"])]
    return "\n".join(lines)
