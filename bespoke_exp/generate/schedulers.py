"""Sampler names as A1111 and kohya write them (`euler`, `dpmpp_2m_karras`, ...), each the
diffusers scheduler with the flags that name means, built on top of the model's own scheduler
config (the table in diffusers' scheduler docs, "A1111/k-diffusion -> diffusers")."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler as A1111 and kohya name it: the diffusers scheduler and the flags that make it so
    (the table in diffusers' scheduler docs, "A1111/k-diffusion -> diffusers")."""

    scheduler: str  # diffusers class name
    karras: bool = False  # Karras sigma spacing (use_karras_sigmas=True)
    options: Mapping[str, object] = field(default_factory=dict)  # more from_config overrides
    needs: str | None = None  # an optional package the scheduler needs to run
    instead: str | None = None  # the closest sampler without that package


_DPMPP = "DPMSolverMultistepScheduler"
_SDE = {"algorithm_type": "sde-dpmsolver++"}
# Names as the user's tools write them (A1111's "DPM++ 2M Karras" is dpmpp_2m_karras); `euler` first.
SCHEDULERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler_karras": SamplerSpec("EulerDiscreteScheduler", karras=True),
    "euler_a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "heun_karras": SamplerSpec("HeunDiscreteScheduler", karras=True),
    "dpm2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm2_karras": SamplerSpec("KDPM2DiscreteScheduler", karras=True),
    "dpm2_a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "dpm2_a_karras": SamplerSpec("KDPM2AncestralDiscreteScheduler", karras=True),
    "lms": SamplerSpec("LMSDiscreteScheduler"),
    "lms_karras": SamplerSpec("LMSDiscreteScheduler", karras=True),
    "dpmpp_2m": SamplerSpec(_DPMPP, options={"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": SamplerSpec(_DPMPP, karras=True, options={"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": SamplerSpec(_DPMPP, options=_SDE),
    "dpmpp_2m_sde_karras": SamplerSpec(_DPMPP, karras=True, options=_SDE),
    # DPM++ SDE (single-step, Brownian-tree noise) is its own sampler; diffusers runs it only with
    # torchsde. Never silently swapped for DPM++ 2M SDE: a sweep would compare two names that are
    # one sampler. Refused with the alternative named when torchsde is missing.
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", needs="torchsde", instead="dpmpp_2m_sde"),
    "dpmpp_sde_karras": SamplerSpec(
        "DPMSolverSDEScheduler", karras=True, needs="torchsde", instead="dpmpp_2m_sde_karras"
    ),
    "ddim": SamplerSpec("DDIMScheduler"),
    "unipc": SamplerSpec("UniPCMultistepScheduler"),
    "deis": SamplerSpec("DEISMultistepScheduler"),
}
# Set on every scheduler that takes them, so a model whose own scheduler config turns one on
# (some finetunes ship Karras sigmas) can't make `euler` mean Euler Karras.
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def scheduler_problem(name: object) -> str | None:
    """Why `sampler.scheduler=name` can't run here (one line), or None."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        return f"sampler.scheduler={name!r} is not one of {', '.join(SCHEDULERS)}"
    spec = SCHEDULERS[name]
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        return (
            f"sampler.scheduler={name} needs the {spec.needs} package, which is not installed "
            f"(pip install {spec.needs}); {spec.instead} is the closest sampler without it"
        )
    return None


def build_scheduler(name: str, base_config: Mapping[str, object]):
    """The scheduler `name` stands for, built from a model's scheduler config (its betas,
    timestep spacing and prediction type) with the name's own flags on top."""
    import diffusers

    problem = scheduler_problem(name)
    if problem:
        raise ValueError(problem)
    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.scheduler)
    accepted = inspect.signature(cls.__init__).parameters
    flags = {flag: False for flag in _SIGMA_FLAGS if flag in accepted}
    if spec.karras:
        flags["use_karras_sigmas"] = True
    return cls.from_config(dict(base_config), **flags, **spec.options)
