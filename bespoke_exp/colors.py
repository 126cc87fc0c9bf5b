"""The one table of colour names shared by the punk generator (to paint) and the
metrics (to name what was painted).

Each name maps to an sRGB prototype. The generator paints features with these exact
values, so a recovered cell can be named by its nearest prototype (in CIELAB, see
``bespoke_exp.metrics``) and compared with the word in the caption.
"""

from __future__ import annotations

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
