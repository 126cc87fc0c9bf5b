"""A blank render is no picture: all black, one flat colour or a one-level wobble; a portrait is."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bespoke_exp.demo.punks import PunkSpec, render
from bespoke_exp.pixelart.blank import blank_reason


def test_a_blank_render_is_no_picture_but_a_flat_portrait_background_with_features_is() -> None:
    assert "all black" in blank_reason(Image.new("RGB", (64, 64)))
    assert "one flat colour (#ff8000)" in blank_reason(Image.new("RGB", (64, 64), (255, 128, 0)))
    rounding = np.full((64, 64, 3), 128, np.uint8) + np.random.default_rng(0).integers(
        0, 2, (64, 64, 3), np.uint8
    )
    assert blank_reason(rounding) is not None  # a one-level wobble is still no picture
    portrait = Image.fromarray(render(PunkSpec())).resize((240, 240), Image.NEAREST)
    assert blank_reason(portrait) is None
