"""Build the embedded demo once, atomically: a tiny SDXL-architecture pipeline saved with
`save_pretrained`, a kohya-layout training folder and ten kohya-format LoRA epochs.

The build happens in a temporary folder that is renamed into place only when complete,
so an interrupted build never looks finished.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bespoke_exp.config import DEMO_RECIPE, default_demo_dir
from bespoke_exp.demo.tiny_pipeline import build_tiny_pipeline
from bespoke_exp.demo.training import DemoTraining, train_lora_epochs, write_training_set

COMPLETE_MARKER = "BUILD_COMPLETE.json"


def ensure_demo(root: str | Path | None = None) -> Path:
    """Build the demo into `root` unless a complete build is already there.

    Returns the root, holding `pipeline/`, `checkpoints/` and `train/`.
    """
    root = Path(root) if root is not None else default_demo_dir()
    if (root / COMPLETE_MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        staging.chmod(0o755)
        _build(staging)
        try:
            staging.rename(root)
        except OSError:
            # Another process finished first (or a stale partial build is in the way).
            if not (root / COMPLETE_MARKER).is_file():
                shutil.rmtree(root, ignore_errors=True)
                staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _build(root: Path) -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    pipe = build_tiny_pipeline(root / "tokenizer_src")
    pipe.save_pretrained(root / "pipeline")
    shutil.rmtree(root / "tokenizer_src")
    training = DemoTraining()
    specs = write_training_set(root / "train", training)
    train_lora_epochs(root / "pipeline", specs, root / "checkpoints", training)
    (root / COMPLETE_MARKER).write_text(
        json.dumps({"recipe": DEMO_RECIPE, "seconds": round(time.perf_counter() - started, 1)}, indent=2)
    )
