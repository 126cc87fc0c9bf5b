"""Memorisation: how closely a generated image copies one of the training images.

>>> training = load_training_grids("train/", cells=24)
>>> training_match(recovered_grid, training)    # 1.0: a cell-for-cell copy
"""

from __future__ import annotations

import functools

import numpy as np

from bespoke_exp.pixelart.colors import delta_e, to_lab
from bespoke_exp.pixelart.grid import recover_folder


@functools.lru_cache(maxsize=4)
def load_training_grids(folder: str, cells: int) -> np.ndarray:
    """The recovered cells x cells art of every training image under `folder` (recursive),
    read once per process."""
    return recover_folder(folder, cells)


def training_match(grid: np.ndarray, training: np.ndarray, threshold: float = 10.0) -> float:
    """Share of cells within CIEDE2000 `threshold` of the same cell in the closest
    training grid: 1.0 means the image reproduces a training portrait cell for cell.

    Args:
        grid: cells x cells x 3 uint8, the recovered art of one generated image.
        training: N x cells x cells x 3 uint8, the recovered art of the training images.
    """
    if len(training) == 0:
        raise ValueError("training_match needs at least one training grid")
    distances = delta_e(to_lab(grid)[None], to_lab(training))
    return float((distances < threshold).mean(axis=(1, 2)).max())
