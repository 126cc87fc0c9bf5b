"""The colour table: every prototype is named as itself, and names survive small shifts."""

from __future__ import annotations

import numpy as np

from bespoke_exp.pixelart.colors import PROTOTYPES, delta_e, name_colors, to_lab


def test_each_prototype_is_named_as_itself_and_after_small_shifts() -> None:
    rgb = np.array(list(PROTOTYPES.values()), dtype=np.uint8)
    assert list(name_colors(to_lab(rgb))) == list(PROTOTYPES)
    rng = np.random.default_rng(0)
    shifted = np.clip(rgb.astype(int) + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    assert list(name_colors(to_lab(shifted))) == list(PROTOTYPES)


def test_ciede2000_matches_published_reference_pair() -> None:
    # Sharma, Wu & Dalal (2005) test data, pair 1: dE00 = 2.0425.
    assert (
        abs(float(delta_e(np.array([50.0, 2.6772, -79.7751]), np.array([50.0, 0.0, -82.7485]))) - 2.0425)
        < 1e-3
    )
