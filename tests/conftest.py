"""Shared fixtures. The demo (tiny SDXL pipeline + ten kohya LoRA epochs) is built once
per test session, into a temporary folder, by the same `ensure_demo` users run."""

from __future__ import annotations

import os
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
    """The demo config shrunk for speed: two prompts, one seed, two steps, 128 px."""
    cfg = compose_config(
        [
            f"paths.demo={demo_dir}",
            f"tracking.uri={tracking_uri}",
            "tracking.experiment=tests",
            "epoch=3",
            "sampler.steps=2",
            "sampler.seeds=[0]",
            "sampler.width=128",
            "sampler.height=128",
        ]
    )
    with open_dict(cfg):
        cfg.prompts["items"] = cfg.prompts["items"][:2]
    return cfg
