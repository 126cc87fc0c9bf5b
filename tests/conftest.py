"""Shared fixtures. The demo (tiny SDXL pipeline + ten kohya LoRA epochs) is built once
per test session, into a temporary folder, by the same `ensure_demo` users run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from bespoke_exp.config import compose_config


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from bespoke_exp.demo.build import ensure_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    os.environ["BESPOKE_EXP_DEMO_DIR"] = str(root)  # subprocess sweeps reuse this build
    return ensure_demo(root)


@pytest.fixture()
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture()
def small_cfg(demo_dir, tracking_uri) -> DictConfig:
    """The demo config shrunk for speed: two prompts, one seed, two steps, 192 px (one latent
    per cell: the smallest image the model can draw 24 cells in)."""
    cfg = compose_config(
        [
            f"paths.demo={demo_dir}",
            f"tracking.uri={tracking_uri}",
            "tracking.experiment=tests",
            "prompts=seed_tests",  # the harness is tested on the user's own prompts
            "epoch=3",
            "sampler.steps=2",
            "sampler.seeds=[0]",
            "sampler.width=192",
            "sampler.height=192",
        ]
    )
    with open_dict(cfg):
        cfg.prompts["items"] = cfg.prompts["items"][:2]
    return cfg


def small_sweep_command(demo_dir: Path, *overrides: str, multirun: bool = True) -> list[str]:
    """`python -m bespoke_exp` on the test demo, shrunk for speed (2 steps, 192 px: one latent per cell)."""
    return [
        sys.executable, "-m", "bespoke_exp", *(["-m"] if multirun else []), f"paths.demo={demo_dir}",
        "prompts=seed_tests", "sampler.steps=2", "sampler.width=192", "sampler.height=192", *overrides,
    ]  # fmt: skip


def one_job_sweep(tracker, lora: Path, *, sha: str, score: float = 0.6, sweep_id: str = "s-1", **recorded):
    """A `Sweep` over one real job run in the store whose checkpoint is `lora`, recorded with
    `sha`, two images scoring `score`; `recorded` sets prompt_set / scoring_identity."""
    import pandas as pd

    from bespoke_exp import analysis, tracking

    parent = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    job = tracking.start_run(tracker, "epoch=01 guidance=5", parent_run_id=parent)
    job_row = {"run_id": job, "epoch": 1, "guidance": 5.0, "checkpoint": str(lora)}
    images = pd.DataFrame(
        [{**job_row, "prompt_id": "p", "split": "", "seed": s, "score": score} for s in (0, 1)]
    )
    runs = pd.DataFrame([{**job_row, "checkpoint_sha256": sha}])
    sweep = analysis.Sweep(
        tracker,
        parent,
        sweep_id,
        runs,
        images,
        final_epoch=10,
        epochs=[1],
        guidances=[5.0],
        cells=24,
        sweep_dir=None,
        **recorded,
    )
    return sweep, analysis.recommend(sweep, n_boot=50)


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A small real filesystem of its own (read-only or full on demand), or a skip saying why."""
    folder = Path(tempfile.mkdtemp(prefix="bespoke-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root with CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
