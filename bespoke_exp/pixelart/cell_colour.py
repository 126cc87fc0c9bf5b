"""Which colour each fitted cell holds: samples over each cell's central part, for the
metrics' per-cell statistics (`cell_samples`), and the recovered colour itself, a robust
average over the cell's own core that sees past ramps, ringing, speckle and slow drift
(`recover_cells`).
"""

from __future__ import annotations

import numpy as np

from bespoke_exp.pixelart.fit import GridFit
from bespoke_exp.pixelart.lattice import sample_lattice

# --- Samples for the metrics (`cell_samples`) ---
_TRIM = 0.3  # sample each cell's central 40%, away from blended edges ...
_SAMPLES = 7  # ... on a 7x7 lattice

# --- Recovered colours (`recover_cells`) ---
_CORE_TRIM = 0.2  # recovered colours average each cell's central 60% ...
_CORE_SAMPLES = 11  # ... over 11x11 samples, per channel the mean of the middle half


def cell_samples(arr: np.ndarray, fit: GridFit, trim: float = _TRIM, k: int = _SAMPLES) -> np.ndarray:
    """(cells, cells, k*k, 3) uint8 samples from each cell's central region (row-major)."""
    xs = sample_lattice(fit.x[:-1], fit.x[1:], arr.shape[1], trim, k)
    ys = sample_lattice(fit.y[:-1], fit.y[1:], arr.shape[0], trim, k)
    s = arr[ys[:, None, :, None], xs[None, :, None, :]]  # (rows, cols, k, k, 3)
    return s.reshape(fit.cells, fit.cells, k * k, 3)


def recover_cells(arr: np.ndarray, fit: GridFit) -> np.ndarray:
    """(cells, cells, 3) uint8 cell colours: each cell's own core, robustly averaged.

    An 11x11 lattice over the central 60% of the cell, per channel the mean of the
    middle half of its values (interquartile mean): the sorted tails drop impulse noise,
    ramps and ringing at the core's rim and blended pixels of a misplaced boundary, and
    averaging the rest halves the noise a median leaves. Slow drift and linear shading
    are symmetric about the centre and average out.
    """
    s = cell_samples(arr, fit, trim=_CORE_TRIM, k=_CORE_SAMPLES)
    s = np.sort(s.transpose(0, 1, 3, 2), axis=-1)  # (rows, cols, 3, samples)
    q = s.shape[-1] // 4
    mid = s[..., q : s.shape[-1] - q] if q else s
    return np.round(mid.mean(axis=-1)).astype(np.uint8)
