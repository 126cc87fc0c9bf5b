"""Generation in batches gives the images one at a time gives."""

from __future__ import annotations

import numpy as np
import pytest

from bespoke_exp.generate import pipeline as pl
from tests.helpers import pixels, two_seeds


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return pl.load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="float32")


ITEMS, SETTINGS = two_seeds()


def test_batched_generation_equals_one_at_a_time(pipe):
    batched = pixels(pipe, ITEMS, SETTINGS)
    single = [picture for item in ITEMS for picture in pixels(pipe, [item], SETTINGS)]
    assert all(np.abs(b - s).max() <= 1 for b, s in zip(batched, single))
