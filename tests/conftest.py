"""Shared fixtures (plain builders are in tests/helpers.py). The demo (tiny SDXL pipeline + ten
kohya LoRA epochs) is built once per test session, into a temporary folder, by the same
`ensure_demo` users run; a random-weight pipeline of the same architecture is saved once too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from bespoke_exp.config import compose_config
from tests.helpers import SECRET, save_tiny_pipeline, sqlite_uri


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from bespoke_exp.demo.build import ensure_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    os.environ["BESPOKE_EXP_DEMO_DIR"] = str(root)  # subprocess sweeps reuse this build
    return ensure_demo(root)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A random-weight pipeline of the demo's architecture, in `save_pretrained` layout."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture()
def tracking_uri(tmp_path) -> str:
    return sqlite_uri(tmp_path)


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


@pytest.fixture()
def secret_env(monkeypatch) -> str:
    """An `${oc.env:...}` reference to a variable holding SECRET, as a user might write one."""
    monkeypatch.setenv("BESPOKE_TEST_TOKEN", SECRET)
    return "${oc.env:BESPOKE_TEST_TOKEN}"
