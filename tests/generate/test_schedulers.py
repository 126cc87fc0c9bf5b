"""Sampler names as A1111 / kohya users write them, each built from a model's own scheduler config
into the diffusers scheduler and flags diffusers' docs map it to. The pipeline is a random-weight
one of the demo's architecture with an SDXL-style scheduler (epsilon, "leading" timesteps); the
noise levels are checked on the demo's own config (v-prediction, zero terminal SNR, "trailing")."""

from __future__ import annotations

import importlib.util
import json

import diffusers
import numpy as np
import pytest

from bespoke_exp.config import compose_config
from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate import pipeline as pl
from bespoke_exp.generate.sampling import GenerationItem, generate
from bespoke_exp.generate.schedulers import SCHEDULERS, build_scheduler
from bespoke_exp.job.validate import config_problems
from bespoke_exp.pixelart.blank import blank_reason
from tests.helpers import problems_with

# name: (diffusers class, Karras sigmas, algorithm_type where the class has one), from the
# "A1111/k-diffusion -> diffusers" table of diffusers' scheduler docs: what each name must mean.
DOCS_TABLE = {
    "euler": ("EulerDiscreteScheduler", False, None),
    "euler_karras": ("EulerDiscreteScheduler", True, None),
    "euler_a": ("EulerAncestralDiscreteScheduler", False, None),
    "heun": ("HeunDiscreteScheduler", False, None),
    "heun_karras": ("HeunDiscreteScheduler", True, None),
    "dpm2": ("KDPM2DiscreteScheduler", False, None),
    "dpm2_karras": ("KDPM2DiscreteScheduler", True, None),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", False, None),
    "dpm2_a_karras": ("KDPM2AncestralDiscreteScheduler", True, None),
    "lms": ("LMSDiscreteScheduler", False, None),
    "lms_karras": ("LMSDiscreteScheduler", True, None),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", False, "dpmsolver++"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", True, "dpmsolver++"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", False, "sde-dpmsolver++"),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler", True, "sde-dpmsolver++"),
    "dpmpp_sde": ("DPMSolverSDEScheduler", False, None),
    "dpmpp_sde_karras": ("DPMSolverSDEScheduler", True, None),
    "ddim": ("DDIMScheduler", False, None),
    "unipc": ("UniPCMultistepScheduler", False, None),
    "deis": ("DEISMultistepScheduler", False, "deis"),
}
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None


def _runs_here(name: str) -> bool:
    return DOCS_TABLE[name][0] != "DPMSolverSDEScheduler" or HAS_TORCHSDE


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    pipe = pl.load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="float32")
    saved = pipe.scheduler
    yield pipe
    pipe.scheduler = saved  # the pipeline is cached for the session: leave it as found


def _scheduler_config(pipeline_dir) -> dict:
    return json.loads((pipeline_dir / "scheduler" / "scheduler_config.json").read_text())


@pytest.fixture(scope="module")
def own_config(tiny_pipeline_dir) -> dict:
    """The scheduler config the pipeline `pipe` was saved with."""
    return _scheduler_config(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def base_config(demo_dir) -> dict:
    """The demo's scheduler config: v-prediction, zero terminal SNR, "trailing" timesteps."""
    return _scheduler_config(demo_dir / "pipeline")


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_sampler_offered_means_what_the_docs_table_says(name):
    assert name in DOCS_TABLE, f"{name}: add the diffusers class and flags it stands for to DOCS_TABLE"


@pytest.mark.parametrize("model", ["sdxl-style", "demo"])
def test_the_default_sampler_draws_with_the_models_own_scheduler(own_config, base_config, model):
    base_config = own_config if model == "sdxl-style" else base_config
    default = build_scheduler(SamplerConfig().scheduler, base_config)
    assert type(default).__name__ == base_config["_class_name"]
    own = getattr(diffusers, base_config["_class_name"]).from_config(base_config)
    default.set_timesteps(10)
    own.set_timesteps(10)
    assert np.array_equal(default.sigmas.numpy(), own.sigmas.numpy())


@pytest.mark.parametrize("name", DOCS_TABLE)
def test_each_name_builds_its_scheduler_from_the_models_config(pipe, own_config, name):
    cls, karras, algorithm = DOCS_TABLE[name]
    if not _runs_here(name):
        instead = name.replace("dpmpp_sde", "dpmpp_2m_sde")
        with pytest.raises(
            ValueError, match=f"{name} needs the torchsde package.*; {instead} is the closest"
        ):
            pl.set_scheduler(pipe, name)
        return
    pl.set_scheduler(pipe, name)
    built = pipe.scheduler
    assert type(built).__name__ == cls
    assert built.config.get("use_karras_sigmas", False) is karras
    assert built.config.get("algorithm_type") == algorithm
    for key in ("beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing"):
        if key in built.config:  # the model's own noise schedule, whatever the sampler
            assert built.config[key] == own_config[key], key


@pytest.mark.parametrize("name", [n for n in DOCS_TABLE if _runs_here(n)])
def test_each_name_draws_a_picture(pipe, name):
    pl.set_scheduler(pipe, name)
    settings = SamplerConfig(
        scheduler=name, steps=2, guidance=7.5, width=64, height=64, negative_prompt="", batch_size=1
    )
    (_, image), *_ = generate(
        pipe, [GenerationItem("p", "bespoke, male, blue solid background", 0)], settings
    )
    assert blank_reason(image) is None


def _sigmas(name: str, base_config: dict) -> np.ndarray:
    """The distinct non-zero noise levels of a 10-step run, largest first (Heun and DPM2 visit
    most of them twice)."""
    scheduler = build_scheduler(name, base_config)
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas.numpy()
    return np.unique(sigmas[sigmas > 0])[::-1]


def _karras_misfit(sigmas: np.ndarray) -> float:
    """How far the levels are from Karras et al.'s schedule: evenly spaced in sigma^(1/7)."""
    steps = np.diff(sigmas ** (1 / 7))
    return float(np.ptp(steps) / abs(steps.mean()))


@pytest.mark.parametrize("name", [n for n in DOCS_TABLE if DOCS_TABLE[n][1] and _runs_here(n)])
def test_karras_names_really_use_karras_sigmas(base_config, name):
    karras, plain = _sigmas(name, base_config), _sigmas(name.removesuffix("_karras"), base_config)
    assert karras.shape == plain.shape and not np.allclose(karras, plain)
    assert _karras_misfit(karras) < 1e-3 < 0.1 < _karras_misfit(plain)


def test_a_model_config_that_turns_karras_on_does_not_change_what_a_name_means(base_config):
    karras_model = {**base_config, "use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}
    assert build_scheduler("euler", karras_model).config.use_karras_sigmas is False
    assert build_scheduler("dpmpp_2m", karras_model).config.algorithm_type == "dpmsolver++"
    assert np.allclose(_sigmas("euler", karras_model), _sigmas("euler", base_config))


def test_an_unknown_or_unavailable_name_is_refused_naming_the_alternatives(demo_dir):
    problems = problems_with(f"paths.demo={demo_dir}", "sampler.scheduler=dpm_fast")
    [problem] = [p for p in problems if p.startswith("sampler.scheduler='dpm_fast' is not one of ")]
    assert set(problem.split(" is not one of ")[1].split(", ")) == set(DOCS_TABLE)
    if not HAS_TORCHSDE:
        problems = config_problems(
            compose_config([f"paths.demo={demo_dir}", "sampler.scheduler=dpmpp_sde_karras"])
        )
        assert (
            "sampler.scheduler=dpmpp_sde_karras needs the torchsde package, which is not installed "
            "(pip install torchsde); dpmpp_2m_sde_karras is the closest sampler without it"
        ) in problems
