"""Palette metrics of the recovered art (`palette/*`) and the reference palette they
are measured against. Arrays in, numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.colors import PROTOTYPES, delta_e, parse_color
from bespoke_exp.pixelart.grid import recover_folder
from bespoke_exp.scoring.expectations import parse_prompt


def palette_metrics(grid_lab: np.ndarray, palette_lab: np.ndarray) -> dict[str, float]:
    """Every `palette/*` metric of one recovered grid (Lab) against a reference palette (Lab)."""
    d = delta_e(grid_lab[..., None, :], palette_lab)
    return {
        "palette/colors": count_colors(grid_lab),
        "palette/off_palette_rate": float((d.min(axis=-1) > 5.0).mean()),
        "palette/shade_flicker": shade_flicker(grid_lab),
    }


def load_palette(source: str | Sequence | np.ndarray | None = "demo", cells: int = CELLS) -> np.ndarray:
    """Reference palette as (K, 3) uint8 sRGB.

    Args:
        source: "demo" (the punk generator's colours), a folder of training images
            (colours of their recovered cells x cells grids, recursive), a sequence of colour
            names / "#rrggbb" strings / RGB triples, or an array.
    """
    if source is None or (isinstance(source, str) and source == "demo"):
        return np.array(list(PROTOTYPES.values()), dtype=np.uint8)
    if isinstance(source, (str, Path)):
        if not Path(source).is_dir():
            raise ValueError(f"palette {str(source)!r} is neither 'demo' nor a folder of images")
        return np.unique(recover_folder(source, cells).reshape(-1, 3), axis=0)
    try:
        out = [parse_color(item) if isinstance(item, str) else tuple(int(v) for v in item) for item in source]
    except ValueError as error:
        raise ValueError(f"palette entry: {error}") from None
    return np.array(out, dtype=np.uint8).reshape(-1, 3)


def prompt_palette(texts: Sequence[str], cells: int = CELLS) -> np.ndarray:
    """(K, 3) uint8: the colours the prompts name (background, features, skin tones), for a
    real run without training images: the art should use these and little else."""
    names = {
        e.color
        for text in texts
        for e in parse_prompt(text, cells).expectations
        if isinstance(getattr(e, "color", None), str) and e.color in PROTOTYPES
    }
    if not names:
        raise ValueError("the prompts name no colours; set metrics.palette to a list of colours or a folder")
    return np.array([PROTOTYPES[n] for n in sorted(names)], dtype=np.uint8)


def count_colors(lab: np.ndarray, threshold: float = 3.0, max_leaders: int = 48) -> float:
    """Clusters after merging colours within dE `threshold` (leader clustering by frequency).

    After `max_leaders` clusters (noise-like images), the rest are counted on a coarse
    Lab lattice instead: keeps the cost bounded; the count is then approximate.
    """
    flat = lab.reshape(-1, 3)
    keys, inverse, counts = np.unique(np.round(flat), axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(-counts)
    remaining = keys[order]
    clusters = 0
    while len(remaining) and clusters < max_leaders:
        d = delta_e(remaining[0], remaining)
        remaining = remaining[d > threshold]
        clusters += 1
    if len(remaining):
        clusters += len(np.unique(np.round(remaining / (2 * threshold)), axis=0))
    return float(clusters)


def shade_flicker(grid_lab: np.ndarray) -> float:
    d = np.concatenate(
        [
            delta_e(grid_lab[:, :-1], grid_lab[:, 1:]).ravel(),
            delta_e(grid_lab[:-1, :], grid_lab[1:, :]).ravel(),
        ]
    )
    return float(((d > 2.0) & (d < 4.0)).mean())
