"""Build the embedded demo once, atomically: the shipped tiny SDXL-architecture pipeline
(`save_pretrained` layout), its ten kohya-format LoRA epochs, their training's TensorBoard
log (kohya's `--logging_dir` layout) and the kohya-layout training folder they were trained on.

The weights are trained by `train_demo` (`python -m bespoke_exp.demo --train`) and
shipped in `bespoke_exp/demo/weights/`, because training them takes longer than a first
run may. A build copies them, so two builds give byte-identical checkpoints. It happens
in a temporary folder that is renamed into place only when complete, so an interrupted
build never looks finished.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from bespoke_exp.config import DEMO_RECIPE, default_demo_dir
from bespoke_exp.demo.base_training import BaseTraining, train_base_pipeline
from bespoke_exp.demo.training import DemoTraining, train_lora_epochs, write_training_set

COMPLETE_MARKER = "BUILD_COMPLETE.json"
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


def ensure_demo(root: str | Path | None = None) -> Path:
    """Build the demo into `root` unless a complete build is already there.

    Returns the root, holding `pipeline/`, `checkpoints/`, `logs/` and `train/`.
    """
    root = Path(root) if root is not None else default_demo_dir()
    if (root / COMPLETE_MARKER).is_file():
        _add_logs(root)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        staging.chmod(0o755)
        _assemble(staging)
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


def _assemble(root: Path) -> None:
    started = time.perf_counter()
    for part in ("pipeline", "checkpoints", "logs"):
        if not (SHIPPED_WEIGHTS / part).is_dir():
            raise FileNotFoundError(
                f"{SHIPPED_WEIGHTS / part} is missing: reinstall bespoke_exp, or train the demo with "
                "`python -m bespoke_exp.demo --train --out DIR` and set BESPOKE_EXP_DEMO_DIR=DIR"
            )
        shutil.copytree(SHIPPED_WEIGHTS / part, root / part)
    write_training_set(root / "train", DemoTraining())
    _mark_complete(root, started)


def _add_logs(root: Path) -> None:
    """A build from before the demo shipped its training log gets it, copied beside and
    renamed into place, so an interrupted copy never looks complete."""
    if (root / "logs").is_dir() or not (SHIPPED_WEIGHTS / "logs").is_dir():
        return
    staging = Path(tempfile.mkdtemp(prefix=".logs.copying-", dir=root))
    try:
        shutil.copytree(SHIPPED_WEIGHTS / "logs", staging / "logs")
        try:
            (staging / "logs").rename(root / "logs")
        except OSError:  # another process put it there first
            if not (root / "logs").is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_demo(
    root: Path,
    base: BaseTraining = BaseTraining(),
    lora: DemoTraining = DemoTraining(),
    device: str = "cpu",
    log=print,
    epsilon_base: Path | None = None,
) -> Path:
    """Train the whole demo from nothing into `root` (which must not exist): base
    pipeline, training folder, ten LoRA epochs and their TensorBoard log. Same layout as a
    build. `epsilon_base`: start the base from this pipeline, saved after its epsilon phase."""
    started = time.perf_counter()
    root.mkdir(parents=True)
    train_base_pipeline(root / "pipeline", base, device, log, epsilon_base)
    write_training_set(root / "train", lora)
    train_lora_epochs(
        root / "pipeline", root / "train", root / "checkpoints", lora, device, log, root / "logs"
    )
    _mark_complete(root, started)
    return root


def _mark_complete(root: Path, started: float) -> None:
    (root / COMPLETE_MARKER).write_text(
        json.dumps({"recipe": DEMO_RECIPE, "seconds": round(time.perf_counter() - started, 1)}, indent=2)
    )
