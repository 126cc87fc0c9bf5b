"""Is there a picture at all? A generation that diverged (NaN or infinite guidance or LoRA
scale, an fp16 overflow) comes back as one flat colour, usually black: that is a failed
generation, never a result to score."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bespoke_exp.pixelart.grid import as_rgb_array

# Less variation than this across the whole frame is no picture: a real 24x24 portrait has
# cells tens of levels apart, while a flat render only wobbles by rounding.
_FLAT_LEVELS = 2.0


def blank_reason(image: Image.Image | np.ndarray) -> str | None:
    """Why `image` is not a picture (one flat colour), or None when it is one."""
    arr = as_rgb_array(image)
    # One channel at a time: numpy reduces a strided channel many times faster than it
    # reduces an (H, W, 3) array over its first two axes (~1 ms against ~30 at 1024 px).
    spread = max(int(arr[..., c].max()) - int(arr[..., c].min()) for c in range(3))
    if spread > _FLAT_LEVELS:
        return None
    colour = "#{:02x}{:02x}{:02x}".format(*np.median(arr.reshape(-1, 3), axis=0).astype(int))
    kind = "all black" if colour == "#000000" else f"one flat colour ({colour})"
    return f"{kind}: the generation diverged (a NaN or infinite guidance or LoRA scale, or an fp16 overflow)"
