"""Colour names and colour science for the recovered art.

One table of colour names is shared by the punk generator (to paint) and the scoring
(to name what was painted): each name maps to an sRGB prototype, the generator paints
with these exact values, and a recovered cell is named by its nearest prototype in
CIELAB (D65) by CIEDE2000 (`skimage.color`).
"""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

RGB = tuple[int, int, int]

NAMED_COLORS: dict[str, RGB] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (200, 30, 30),
    "orange": (255, 128, 0),
    "yellow": (250, 215, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (120, 50, 170),
    "pink": (240, 120, 170),
    "brown": (110, 60, 25),
    "tan": (210, 160, 110),
}

# Skin tones named the way captions name them ("light skin tone", "tan skin tone").
SKIN_TONES: dict[str, RGB] = {
    "light": (245, 210, 180),
    "tan": NAMED_COLORS["tan"],
    "dark": (95, 60, 40),
}

# Words people use for the same colour; the prompt parser maps them onto NAMED_COLORS.
COLOR_ALIASES: dict[str, str] = {"grey": "gray", "violet": "purple", "beige": "tan"}

# Modifiers a prompt may put before a colour name, and what each asks of a cell's
# CIELAB colour (L* lightness 0-100, C* chroma): a (channel, op, threshold) rule.
COLOR_MODIFIERS: dict[str, tuple[str, str, float]] = {
    "light": ("L", ">=", 60.0),
    "pale": ("L", ">=", 60.0),
    "dark": ("L", "<=", 45.0),
    "deep": ("L", "<=", 45.0),
    "vibrant": ("C", ">=", 45.0),
    "bright": ("C", ">=", 45.0),
}


def skin_label(tone: str) -> str:
    """The prototype name of a skin tone: 'tan' is the named colour tan itself."""
    return tone if tone in NAMED_COLORS else f"{tone} skin"


# Every prototype a recovered cell can be named as (colour names and skin tones).
PROTOTYPES: dict[str, RGB] = {**NAMED_COLORS, **{skin_label(t): rgb for t, rgb in SKIN_TONES.items()}}


_PROTOTYPE_NAMES = list(PROTOTYPES)
_PROTOTYPE_LAB = rgb2lab(np.array(list(PROTOTYPES.values()), dtype=np.uint8)[None])[0]


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of uint8 sRGB values, any leading shape."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    flat = rgb.reshape(-1, 1, 3)
    return rgb2lab(flat).reshape(rgb.shape[:-1] + (3,))


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 with numpy broadcasting (skimage wants equal-rank inputs)."""
    a, b = np.broadcast_arrays(np.asarray(lab1, float), np.asarray(lab2, float))
    return deltaE_ciede2000(a, b)


def name_colors(lab: np.ndarray) -> np.ndarray:
    """Nearest prototype name (PROTOTYPES, CIEDE2000) for each Lab colour."""
    d = delta_e(lab[..., None, :], _PROTOTYPE_LAB)
    return np.array(_PROTOTYPE_NAMES, dtype=object)[np.argmin(d, axis=-1)]


def modifier_ok(lab: np.ndarray, modifier: str | None) -> np.ndarray:
    """Whether Lab colours satisfy a colour modifier (light, dark, vibrant...)."""
    if not modifier or modifier not in COLOR_MODIFIERS:
        return np.ones(lab.shape[:-1], bool)
    channel, op, threshold = COLOR_MODIFIERS[modifier]
    value = lab[..., 0] if channel == "L" else np.hypot(lab[..., 1], lab[..., 2])
    return value >= threshold if op == ">=" else value <= threshold


def parse_color(text: str) -> tuple[int, int, int]:
    """An sRGB triple from a colour name (PROTOTYPES) or `#rrggbb`."""
    if text.startswith("#") and len(text) == 7:
        return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if text in PROTOTYPES:
        return PROTOTYPES[text]
    raise ValueError(f"colour {text!r} is not a colour name ({', '.join(PROTOTYPES)}) or #rrggbb")
