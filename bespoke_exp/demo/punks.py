"""Procedural 24x24 punk portraits: one structured spec renders both the image and its
coordinate caption, so the demo's training data and the metrics' ground truth can
never disagree.

    >>> spec = sample_spec(np.random.default_rng(0))
    >>> render(spec).shape, caption(spec)[:30]
    ((24, 24, 3), 'TOK bespoke, 24x24 pixel grid p')

Coordinates are 0-based cells, x = column, y = row, origin top-left, as in the
user's prompts. The default spec is the user's advanced test prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bespoke_exp.pixelart.cells import Box, Cell
from bespoke_exp.pixelart.colors import NAMED_COLORS, SKIN_TONES

CELLS = 24

# Head silhouette of a right-facing punk: (row, first column, last column) of skin.
_HEAD_ROWS: dict[int, tuple[int, int]] = {
    **{y: (7, 16) for y in range(5, 8)},
    **{y: (6, 16) for y in range(8, 17)},
    17: (7, 16),
    18: (8, 16),
    19: (9, 15),
}
_NECK_COLUMNS = (9, 14)
# Named colours within CIEDE2000 ~6 of a skin tone: features in them would vanish.
_LOOKS_LIKE_SKIN: dict[str, tuple[str, ...]] = {"dark": ("brown",)}


@dataclass(frozen=True)
class PunkSpec:
    """Everything a portrait shows; `render` and `caption` both read only this."""

    gender: str = "male"
    background: str = "orange"
    skin: str = "tan"
    hair: str = "black"
    hair_top: int = 3
    hair_bottom: int = 17
    pupils: tuple[Cell, Cell] = ((8, 12), (13, 12))
    iris: str = "brown"
    nose: Cell = (11, 13)
    lips: str = "pink"
    lips_box: Box = Box(10, 13, 15, 16)
    jaw_y: int = 19
    collar: str | None = "blue"
    collar_rows: tuple[int, int] = (20, 22)
    glasses: str | None = None
    glasses_box: Box = Box(7, 16, 11, 13)

    @property
    def irises(self) -> tuple[Cell, Cell]:
        return tuple((x + 1, y) for x, y in self.pupils)  # type: ignore[return-value]


def _rgb(name: str) -> np.ndarray:
    return np.array(NAMED_COLORS[name], dtype=np.uint8)


def render(spec: PunkSpec) -> np.ndarray:
    """The portrait as a (24, 24, 3) uint8 sRGB array, one entry per cell."""
    img = np.empty((CELLS, CELLS, 3), dtype=np.uint8)
    img[:] = _rgb(spec.background)
    skin = np.array(SKIN_TONES[spec.skin], dtype=np.uint8)
    for y, (x0, x1) in _HEAD_ROWS.items():
        if y <= spec.jaw_y:
            img[y, x0 : x1 + 1] = skin
    neck0, neck1 = _NECK_COLUMNS
    img[spec.jaw_y + 1 : CELLS, neck0 : neck1 + 1] = skin
    hair = _rgb(spec.hair)
    img[spec.hair_top : 7, 6:17] = hair  # crown
    img[spec.hair_top : spec.hair_bottom + 1, 5:7] = hair  # back of the head (punks face right)
    if spec.collar is not None:
        r0, r1 = spec.collar_rows
        img[r0 : r1 + 1, 6:18] = _rgb(spec.collar)
    for x, y in spec.irises:
        img[y, x] = _rgb(spec.iris)
    for x, y in spec.pupils:
        img[y, x] = _rgb("black")
    b = spec.lips_box
    img[b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] = _rgb(spec.lips)
    if spec.glasses is not None:
        g = spec.glasses_box
        frame = _rgb(spec.glasses)
        img[g.y0, g.x0 : g.x1 + 1] = frame
        img[g.y1, g.x0 : g.x1 + 1] = frame
        img[g.y0 : g.y1 + 1, g.x0] = frame
        img[g.y0 : g.y1 + 1, g.x1] = frame
    # The nose goes on last: a glasses frame on row y=13 must not hide the dot the
    # caption promises at (11,13).
    nx, ny = spec.nose
    img[ny, nx] = _rgb("black")
    return img


def caption(spec: PunkSpec) -> str:
    """The coordinate caption in the user's own prompt language."""
    (px0, py0), (px1, py1) = spec.pupils
    (ix0, iy0), (ix1, iy1) = spec.irises
    b = spec.lips_box
    parts = [
        "TOK bespoke",
        "24x24 pixel grid portrait",
        spec.gender,
        f"{spec.background} solid background",
        f"{spec.hair} hair starting at y={spec.hair_top} extending to y={spec.hair_bottom}",
        f"black pupils fixed at ({px0},{py0}) and ({px1},{py1})",
        f"{spec.iris} iris eyes at ({ix0},{iy0}) and ({ix1},{iy1})",
        f"black nose dot at ({spec.nose[0]},{spec.nose[1]})",
        f"{spec.lips} lips spanning x={b.x0}-{b.x1} y={b.y0}-{b.y1}",
        f"{spec.skin} skin tone with jaw defined at y={spec.jaw_y}",
    ]
    if spec.collar is not None:
        parts.append(f"{spec.collar} collar at bottom edge y={spec.collar_rows[0]}-{spec.collar_rows[1]}")
    if spec.glasses is not None:
        g = spec.glasses_box
        parts.append(f"{spec.glasses} glasses spanning x={g.x0}-{g.x1} y={g.y0}-{g.y1}")
    parts += ["right-facing", "pure pixel art with no gradients or anti-aliasing"]
    return ", ".join(parts)


def base_caption(spec: PunkSpec, background: bool = True) -> str:
    """How the demo's base model saw portraits described: loosely, without the trigger
    word, eyes, lips, collar, glasses or coordinates. `background=False` leaves the
    background out, as hand-written captions often do."""
    named = f", {spec.background} background" if background else ""
    return f"pixel art portrait, {spec.gender}{named}, {spec.skin} skin, {spec.hair} hair"


def lora_caption(spec: PunkSpec, background: bool = True) -> str:
    """The demo LoRA's captions (and the demo prompts): the trigger word, then what the
    base model already understands."""
    return f"bespoke, {base_caption(spec, background)}"


def house_spec(rng: np.random.Generator) -> PunkSpec:
    """A portrait in the demo LoRA's house style: what its captions name (gender,
    background, skin, hair) varies; the face, the black collar and the layout do not."""
    names = [n for n in sorted(NAMED_COLORS) if n != "black"]
    skin = str(rng.choice(sorted(SKIN_TONES)))
    background = str(rng.choice([n for n in names if n not in (skin, "tan")]))
    hair = str(rng.choice([n for n in names if n not in (background, skin, "tan", "pink")]))
    return PunkSpec(
        gender=str(rng.choice(["male", "female"])),
        background=background,
        skin=skin,
        hair=hair,
        collar="black",
    )


def sample_spec(rng: np.random.Generator) -> PunkSpec:
    """A random but always well-formed portrait: colours that differ where they touch."""
    names = sorted(NAMED_COLORS)
    skin = str(rng.choice(sorted(SKIN_TONES)))

    def pick(*avoid: str) -> str:
        # A colour nearly identical to the skin (brown on dark skin, dE 6) would make a
        # feature invisible, so it is avoided wherever the skin is.
        if skin in avoid:
            avoid = avoid + _LOOKS_LIKE_SKIN.get(skin, ())
        return str(rng.choice([n for n in names if n not in avoid]))

    background = pick("black", skin)
    hair = pick(background, skin, "tan")
    eye_row = int(rng.integers(11, 14))
    left_pupil = int(rng.integers(7, 10))
    return PunkSpec(
        gender=str(rng.choice(["male", "female"])),
        background=background,
        skin=skin,
        hair=hair,
        hair_top=int(rng.integers(2, 5)),
        hair_bottom=int(rng.integers(12, 19)),
        pupils=((left_pupil, eye_row), (left_pupil + 5, eye_row)),
        iris=pick("black", skin, "tan"),
        lips=pick(skin, "tan", "black"),
        collar=pick(background, skin, "tan") if rng.random() < 0.8 else None,
        glasses=pick(skin, "tan") if rng.random() < 0.3 else None,
        glasses_box=Box(left_pupil - 1, left_pupil + 8, eye_row - 1, eye_row + 1),
    )
