"""Values no model or analysis can use are refused before any work, each with one line naming the
key and what is allowed (`config_problems`): non-finite numbers, unknown names, unsafe prompt ids,
a device this machine lacks, a LoRA family no base model takes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from bespoke_exp.config import CONF_DIR, compose_config
from bespoke_exp.job.validate import config_problems
from tests.helpers import problems_with


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
        ("+analysis.thresholds.nope=1", "analysis.thresholds.nope: no such setting"),
        ("analysis.thresholds.lookback=0.5", "analysis.thresholds.lookback=0.5 must be an integer >= 1"),
        ("metrics.pass_share=nan", "metrics.pass_share=nan must be a number in (0, 1]"),
        ("metrics.tolerance=-5", "metrics.tolerance=-5 must be an integer >= 0"),
        ("prompts.cells=0", "prompts.cells=0 must be an integer >= 2"),
    ],
)
def test_values_no_model_or_analysis_can_use_are_refused(override: str, message: str) -> None:
    problems = problems_with(override)
    assert any(message in p for p in problems), problems


def test_the_smallest_image_holds_one_latent_per_cell() -> None:
    assert not [p for p in problems_with("sampler.width=192") if "sampler.width" in p]


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("guidance=nan", "guidance=nan must be a finite number"),
        ("guidance=inf", "guidance=inf must be a finite number"),
        ("checkpoint.lora_scale=nan", "checkpoint.lora_scale=nan must be a finite number"),
        ("guidance=abc", "guidance='abc' must be a number"),
        ("guidance=[1,2]", "guidance=[1, 2] must be a number"),
        ("sampler.steps=abc", "sampler.steps='abc' must be an integer > 0"),
        ("epoch=11", "epoch=11 is outside 1..10 (checkpoint.epochs=10)"),
        ("sampler.scheduler=dpm_fast", "sampler.scheduler='dpm_fast' is not one of euler"),
        ("model.dtype=float8", "model.dtype='float8' is not one of auto, float32"),
        ("+metrics.weights.nope=0.5", "metrics.weights.nope: no such metric"),
        (
            "metrics.palette=[notacolour]",
            "metrics.palette: palette entry: colour 'notacolour' is not a colour name",
        ),
        ("model.pretrained=/no/such/model", "model.pretrained=/no/such/model is not a folder"),
        ("model=local_sdxl", "model.pretrained is not set (???)"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(override: str, message: str) -> None:
    problems = problems_with(override)
    assert any(message in p for p in problems), problems


def test_a_cuda_device_on_a_machine_without_one_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: model.device=cuda is valid here")
    problems = problems_with("model.device=cuda")
    assert problems == ["model.device=cuda but torch sees no CUDA GPU on this machine; use model.device=cpu"]


def test_an_empty_prompt_text_is_refused(demo_dir) -> None:
    cfg = compose_config([f"paths.demo={demo_dir}", "prompts=seed_tests"])
    with open_dict(cfg):
        cfg.prompts["items"][0]["text"] = "  "
    assert "prompts item 'basic': text is empty; write the prompt to generate" in config_problems(cfg)


def test_every_model_config_takes_sdxl_loras_and_a_bad_family_is_refused():

    for model in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        assert compose_config([f"model={model}"]).model.family == "sdxl", model
    problems = problems_with("model.family=sd3")
    assert (
        "model.family='sd3' is not one of sdxl, sd1, flux (the LoRA family the base model takes)" in problems
    )


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("lora_scale=0", "lora_scale=0 must be a finite number > 0"),
        ("lora_scale=-0.5", "lora_scale=-0.5 must be a finite number > 0"),
        ("lora_scale=inf", "lora_scale=inf must be a finite number > 0"),
        ("lora_scale=strong", "lora_scale='strong' must be a number > 0"),
        ("checkpoint.lora_scale=nan", "checkpoint.lora_scale=nan must be a finite number > 0"),
    ],
)
def test_a_bad_lora_scale_is_one_line_naming_it(override, line) -> None:
    problems = [p for p in problems_with(override) if "lora_scale" in p]
    assert len(problems) == 1 and problems[0].startswith(line), problems
    assert "sweep with lora_scale=0.6,0.8,1.0" in problems[0]
