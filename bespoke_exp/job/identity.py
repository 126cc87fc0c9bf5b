"""A job's two identities, so work is redone only when its inputs changed.

- Generation identity: what decides the pixels: the config less where things are stored, how
  runs are tracked, analysed and scored; the device kind; and the versions of the libraries
  that compute the pixels. Together with the checkpoint's sha256 it finds earlier attempts at
  the same images, which can then be reused. The base model (epoch 0) has no checkpoint: its
  identity leaves the whole `checkpoint` group out (LoRA strength included), so one baseline
  serves every LoRA strength and every LoRA of that base. With trigger=off the texts actually
  generated count instead of the trigger words that made them.
- Scoring identity: what decides the scores: the metric settings, the prompts (their checks),
  how much of each prompt the text encoder read, the reference palette and training set
  actually used, and the scoring code itself (scoring/ and pixelart/), read as code: a changed
  comment or docstring keeps the identity, a changed statement invalidates old scores.
  Equal scoring identity too: the whole job can be reused.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from bespoke_exp.config import FINGERPRINT_EXCLUDES, job_fingerprint
from bespoke_exp.config.params import is_baseline

PACKAGE = Path(__file__).resolve().parents[1]
SCORING_CODE = ("scoring", "pixelart")  # the packages whose code decides a score
PIXEL_LIBRARIES = ("torch", "diffusers", "transformers", "peft")
TAG_GENERATION = "generation_identity"
TAG_SCORING = "scoring_identity"


def _digest(data: object) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def generation_identity(cfg: DictConfig, device_kind: str, texts: Mapping[str, str] | None = None) -> str:
    """Hash of everything but the checkpoint file that decides a job's images; `texts` (prompt
    id -> text generated) when they are not the prompts as written (trigger=off)."""
    # model.family only decides which LoRAs are refused and guidance_range what is warned about,
    # never a pixel. `trigger` and the words it leaves out count through `texts`, so a trigger-on
    # job keeps the identity it had before the trigger axis existed, and its earlier runs are
    # still reused.
    excluded = (
        *FINGERPRINT_EXCLUDES,
        "metrics",
        "checkpoint.train_dir",
        "checkpoint.train_logs",
        "model.family",
        "model.guidance_range",
        "trigger",
        "checkpoint.trigger_words",
        *(["checkpoint"] if is_baseline(cfg) else []),  # no LoRA file, no strength: none of it counts
    )
    config_part = job_fingerprint(cfg, exclude=excluded)
    versions = {name: _version(name) for name in PIXEL_LIBRARIES}
    data = {"config": config_part, "device": device_kind, "libraries": versions}
    if texts is not None:
        data["generated_texts"] = dict(texts)
    return _digest(data)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_hash(root: Path, packages: tuple[str, ...]) -> str:
    """Hash of the code of `packages` under `root`, read as Python: comments, docstrings and
    formatting don't count, every statement does."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(_code(path.read_text()).encode())
    return digest.hexdigest()[:16]


def _code(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _is_docstring(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


@functools.lru_cache(maxsize=1)
def scoring_code_hash() -> str:
    """The scoring code's hash (`code_hash` of scoring/ and pixelart/)."""
    return code_hash(PACKAGE, SCORING_CODE)


def scoring_identity(
    cfg: DictConfig,
    palette: np.ndarray,
    training: np.ndarray | None,
    read_chars: Mapping[str, int] | None = None,
) -> str:
    """Hash of what decides a job's scores, given the palette and training grids it uses and
    the characters of each truncated prompt the text encoder read (checks past them are unchecked)."""
    return _digest(
        {
            "metrics": OmegaConf.to_container(cfg.metrics, resolve=True),
            "prompts": OmegaConf.to_container(cfg.prompts, resolve=True),
            "read_chars": dict(read_chars or {}),
            "palette": hashlib.sha256(np.ascontiguousarray(palette).tobytes()).hexdigest(),
            "training": None if training is None else hashlib.sha256(training.tobytes()).hexdigest(),
            "code": scoring_code_hash(),
        }
    )
