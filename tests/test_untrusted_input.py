"""What a user writes is data: prompt text is never resolved, ids are safe names, and values no
model or analysis can use are refused before any work, each with one line naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from bespoke_exp import tracking
from bespoke_exp.config import CONF_DIR, compose_config, flatten, job_config, literal_text
from bespoke_exp.sweep.callback import sweep_problems, user_search_path
from bespoke_exp.sweep.context import expand_jobs
from bespoke_exp.sweep.job import run_job
from bespoke_exp.sweep.validate import config_problems

SECRET = "s3cr3t-token-value"


@pytest.fixture()
def secret_env(monkeypatch) -> str:
    monkeypatch.setenv("BESPOKE_TEST_TOKEN", SECRET)
    return "${oc.env:BESPOKE_TEST_TOKEN}"


def user_prompts(folder: Path, items: list[dict], name: str = "mine") -> Path:
    """A user's own config folder (for --config-dir / hydra.searchpath) holding prompts/<name>.yaml."""
    (folder / "prompts").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / f"{name}.yaml").write_text(
        OmegaConf.to_yaml({"name": name, "cells": 24, "items": items})
    )
    return folder


def test_prompt_text_expectations_and_negative_prompt_are_taken_as_written(tmp_path, secret_env) -> None:
    raw = {
        "id": "leaky",
        "split": "heldout",
        "text": f"bespoke, pixel art portrait, {secret_env}, and \\${{x}} as written",
        "expectations": [f"{secret_env} background"],
    }
    folder = user_prompts(tmp_path / "conf", [raw])
    cfg = compose_config(
        ["prompts=mine", f"sampler.negative_prompt=blurry {secret_env}"], [f"file://{folder}"]
    )
    text = job_config(cfg)
    assert text["prompts"]["items"][0]["text"] == raw["text"]
    assert text["prompts"]["items"][0]["expectations"] == raw["expectations"]
    assert text["sampler"]["negative_prompt"] == f"blurry {secret_env}"
    assert SECRET not in json.dumps(flatten(text)) + OmegaConf.to_yaml(text)


def test_a_job_logs_the_literal_prompt_and_never_the_secret_it_names(small_cfg, tmp_path, secret_env) -> None:
    with open_dict(small_cfg):
        small_cfg.prompts["items"] = small_cfg.prompts["items"][:1]
        small_cfg.prompts["items"][0]["text"] = f"{small_cfg.prompts['items'][0]['text']}, {secret_env}"
    literal_text(small_cfg)  # what every composition does: the CLI, the sweep callback, compose_config
    result = run_job(small_cfg, output_dir=tmp_path / "job")
    run = tracking.connect(small_cfg.tracking.uri, "tests").client.get_run(result.run_id)
    logged = json.dumps(run.data.params) + json.dumps(run.data.tags)
    logged += (tmp_path / "job" / "config.yaml").read_text()
    assert SECRET not in logged
    assert secret_env in run.data.params["prompts.items.basic.text"]


@pytest.mark.parametrize(
    "prompt_id",
    ["../escape", "a/b", "p1!?*", "caf\u00e9", "smile\U0001f600", "x" * 260, "", ".hidden", "has space"],
)
def test_an_unsafe_prompt_id_is_refused_naming_it_and_the_allowed_form(prompt_id: str) -> None:
    cfg = compose_config(["prompts=seed_tests"])
    with open_dict(cfg):
        cfg.prompts["items"][0]["id"] = prompt_id
    problems = config_problems(cfg)
    shown = repr(prompt_id if len(prompt_id) <= 80 else f"{prompt_id[:80]}...")
    assert f"prompts item id {shown} must be 1-64 ASCII letters, digits" in "\n".join(problems), problems


def test_safe_prompt_ids_pass() -> None:
    cfg = compose_config(["prompts=seed_tests"])
    with open_dict(cfg):
        for item, prompt_id in zip(cfg.prompts["items"], ["a", "p-1.v2_final", "X" * 64]):
            item["id"] = prompt_id
    assert not [p for p in config_problems(cfg) if "prompts item id" in p]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.width=8", "sampler.width=8 is too small for 24 cells"),
        ("sampler.height=128", "sampler.height=128 is too small for 24 cells"),
        ("sampler.width=196", "sampler.width=196 must be a positive multiple of 8"),
        ("analysis.confidence=1.5", "analysis.confidence=1.5 must be a number in [0.5, 1)"),
        ("analysis.n_boot=0", "analysis.n_boot=0 must be an integer >= 100"),
        ("analysis.metric=nosuch", "analysis.metric='nosuch' is not a metric"),
        ("+analysis.thresholds.nope=1", "analysis.thresholds.nope: no such threshold"),
        ("analysis.thresholds.lookback=0.5", "analysis.thresholds.lookback=0.5 must be an integer >= 1"),
        ("metrics.pass_share=nan", "metrics.pass_share=nan must be a number in (0, 1]"),
        ("metrics.tolerance=-5", "metrics.tolerance=-5 must be an integer >= 0"),
        ("prompts.cells=0", "prompts.cells=0 must be an integer >= 2"),
    ],
)
def test_values_no_model_or_analysis_can_use_are_refused(override: str, message: str) -> None:
    problems = config_problems(compose_config([override]))
    assert any(message in p for p in problems), problems


def test_the_smallest_image_holds_one_latent_per_cell() -> None:
    assert not [p for p in config_problems(compose_config(["sampler.width=192"])) if "sampler.width" in p]


def test_all_zero_metric_weights_are_refused() -> None:
    cfg = compose_config()
    with open_dict(cfg):
        cfg.metrics.weights = {key: 0 for key in cfg.metrics.weights}
    assert any("no metric has a weight > 0" in p for p in config_problems(cfg))


def test_a_split_the_analysis_does_not_know_is_refused() -> None:
    cfg = compose_config(["prompts=seed_tests"])
    with open_dict(cfg):
        cfg.prompts["items"][0]["split"] = "validation"
    assert any("prompts item 'basic': split='validation' must be train" in p for p in config_problems(cfg))


def test_a_multirun_composes_its_jobs_with_the_users_hydra_searchpath(tmp_path) -> None:
    folder = user_prompts(tmp_path / "conf", [{"id": "p1", "split": "heldout", "text": "bespoke, punk"}])
    searchpath = f"hydra.searchpath=[file://{folder}]"
    jobs = expand_jobs(["prompts=mine", "epoch=1,2"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", overrides=[searchpath, "prompts=mine"], return_hydra_config=True)
        search_path = user_search_path(config)
        problems = sweep_problems(config, jobs, search_path)
    assert search_path == [f"file://{folder}"]
    assert problems == []


def test_an_unsafe_id_in_a_users_prompt_set_stops_the_sweep_before_any_run(tmp_path) -> None:
    folder = user_prompts(tmp_path / "conf", [{"id": "../../outside", "text": "bespoke, punk"}])
    jobs = expand_jobs(["prompts=mine", "epoch=1,2"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [f"hydra.searchpath=[file://{folder}]", "prompts=mine"]
        config = compose("config", overrides=overrides, return_hydra_config=True)
        problems = sweep_problems(config, jobs, user_search_path(config))
    assert problems == [
        "prompts item id '../../outside' must be 1-64 ASCII letters, digits, '_', '-' or '.', starting "
        "with a letter or digit (it names files and MLflow metrics)"
    ]
