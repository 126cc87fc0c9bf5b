"""Generation in batches gives the images one at a time gives."""

from __future__ import annotations

import numpy as np
import pytest

from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate import pipeline as pl
from bespoke_exp.generate.sampling import GenerationItem, generate


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return pl.load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="float32")


SETTINGS = SamplerConfig(
    scheduler="euler", steps=2, guidance=7.5, width=128, height=128, negative_prompt="", batch_size=2
)


ITEMS = [
    GenerationItem("p", "TOK bespoke, 24x24 pixel grid portrait, orange solid background", s) for s in (0, 1)
]


def _pixels(pipe) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for _, image in generate(pipe, ITEMS, SETTINGS)]


def test_batched_generation_equals_one_at_a_time(pipe):
    batched = _pixels(pipe)
    single = [
        np.asarray(image, dtype=np.int16) for item in ITEMS for _, image in generate(pipe, [item], SETTINGS)
    ]
    assert all(np.abs(b - s).max() <= 1 for b, s in zip(batched, single))
