"""What a user writes is data: prompt text, expectations and the negative prompt are taken as
written, never resolved (an `${oc.env:...}` in them is text, not a secret read from the environment)."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from bespoke_exp.config import compose_config, flatten, job_config
from tests.helpers import SECRET, user_prompts


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
