"""How one cell's colour spreads over the picture: the footprint, in cell units.

A picture of cells is modelled as sum_cells colour * fx(x) * fy(y), each footprint a
function of u = (position - cell centre) / cell width. Candidates cover the softening
that pixel-art pictures show: hard cells blurred by a Gaussian (nearest upscale, blur,
texture), the interpolating kernels of smooth upscales (bicubic and Lanczos, straight
from the art or from a nearest upscale of m pixels per cell) and bilinear ramps.
`cell_colour` picks the one that explains the picture best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_CUBIC_A = -0.5  # PIL's BICUBIC (Keys' kernel with a = -0.5, Catmull-Rom)
_LANCZOS_LOBES = 3  # PIL's LANCZOS
# Footprints are tabulated once and interpolated: evaluating erf or three sincs at every
# sample of every candidate would cost more than the whole colour estimate. A 1/256-cell
# step keeps the interpolation error under 0.1% of a colour step.
_TABLE_STEP = 1 / 256


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _cubic(u: np.ndarray) -> np.ndarray:
    x, a = np.abs(u), _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _lanczos(u: np.ndarray) -> np.ndarray:
    x = np.abs(u)
    return np.where(x < _LANCZOS_LOBES, np.sinc(x) * np.sinc(x / _LANCZOS_LOBES), 0.0)


def _linear(u: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(u), 0.0, None)


@dataclass(frozen=True)
class Footprint:
    """One candidate footprint. `blur`: Gaussian sigma (cell widths) over a hard cell;
    or `kernel` ("cubic", "lanczos", "linear") interpolating the art upscaled by nearest
    to `sub` pixels per cell. `reach`: |u| beyond which the footprint is zero."""

    name: str
    blur: float = 0.0
    kernel: str | None = None
    sub: int = 1

    @property
    def reach(self) -> float:
        if self.kernel is None:
            return 0.5 + 4.0 * self.blur
        support = {"cubic": 2.0, "lanczos": float(_LANCZOS_LOBES), "linear": 1.0}[self.kernel]
        return 0.5 + (support - 0.5) / self.sub

    @property
    def interpolating(self) -> bool:
        """Whether a cell shows its own colour undiluted only near its centre: the
        neighbours' ramps and ringing reach into its core."""
        return self.kernel is not None and self.sub <= 2

    def __call__(self, u: np.ndarray) -> np.ndarray:
        if self.kernel is None:
            if self.blur <= 0:
                return ((u >= -0.5) & (u < 0.5)).astype(float)
            c = 1.0 / (self.blur * np.sqrt(2.0))
            return 0.5 * (_erf((u + 0.5) * c) - _erf((u - 0.5) * c))
        f: Callable[[np.ndarray], np.ndarray] = {"cubic": _cubic, "lanczos": _lanczos, "linear": _linear}[
            self.kernel
        ]
        m = self.sub
        offsets = (np.arange(m) + 0.5) / m - 0.5  # the nearest upscale's pixels in the cell
        return sum(f(m * (u - o)) for o in offsets)


HARD = Footprint("hard")
CANDIDATES: tuple[Footprint, ...] = (
    HARD,
    *(Footprint(f"blur{s:g}", blur=s) for s in (0.04, 0.08, 0.15)),
    *(Footprint(f"cubic{m}", kernel="cubic", sub=m) for m in (1, 2, 4)),
    Footprint("lanczos1", kernel="lanczos"),
    Footprint("linear1", kernel="linear"),
)


@lru_cache(maxsize=8)
def _tables(footprints: tuple[Footprint, ...]) -> tuple[float, np.ndarray]:
    """Footprints tabulated on one grid, (reach, (F, steps)): one lookup serves them all."""
    reach = max(fp.reach for fp in footprints)
    u = np.arange(-reach, reach + _TABLE_STEP, _TABLE_STEP)
    return reach, np.stack([np.where(np.abs(u) < fp.reach, fp(u), 0.0) for fp in footprints])


def footprint_weights(
    centres: np.ndarray, widths: np.ndarray, pos: np.ndarray, footprints: tuple[Footprint, ...]
) -> np.ndarray:
    """(F, cells, positions): per footprint, the share of the colour at pixel index `pos`
    that each cell contributes. A position's shares sum to 1: at the frame border the
    footprint is renormalised over the cells inside, as PIL's resampling filters do."""
    reach, table = _tables(footprints)
    u = (pos[None, :] + 0.5 - centres[:, None]) / widths[:, None]
    x = np.clip((u + reach) / _TABLE_STEP, 0, table.shape[1] - 1.001)
    i = x.astype(int)
    f = x - i
    w = table[:, i] * (1 - f) + table[:, i + 1] * f
    w[:, np.abs(u) >= reach] = 0.0
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(np.abs(total) > 1e-9, total, 1.0)


def line_residuals(
    lines: np.ndarray,
    centres: np.ndarray,
    widths: np.ndarray,
    pos: np.ndarray,
    footprints: tuple[Footprint, ...],
    fits: int = 1,
) -> np.ndarray:
    """Per footprint, the squared residual of the least-squares fit of `lines`
    ((positions, m): m lines sampled at pixel indices `pos` across one axis's cells,
    colour channels included) by one colour per cell spread by that footprint.

    Along any line across a row of cells the picture is such a sum, whatever the other
    axis does, so this measures how well a footprint (and a lattice) explains the picture.
    A sample at black or white says only that the unclipped value lies beyond: where the
    fit goes beyond it the sample counts nothing, and each of `fits` - 1 further fits
    takes it at the previous fit's value (censored least squares, converging slowly:
    clipped ringing otherwise passes for a footprint with less of it).
    """
    w = footprint_weights(centres, widths, pos, footprints)  # (F, cells, P)
    wt = w.transpose(0, 2, 1)
    gram = w @ wt + 1e-6 * np.eye(w.shape[1])
    low, high = lines <= 0, lines >= 255

    def unclipped(fitted: np.ndarray) -> np.ndarray:  # the lines as the fit would have them
        return np.where(low, np.minimum(fitted, 0.0), np.where(high, np.maximum(fitted, 255.0), lines))

    fitted = wt @ np.linalg.solve(gram, w @ lines)  # (F, P, m)
    # Only a footprint with negative lobes rings past the limits: the others are refitted
    # for nothing.
    ring = [i for i, fp in enumerate(footprints) if fp.kernel in ("cubic", "lanczos")]
    for _ in range(fits - 1 if ring and (low.any() or high.any()) else 0):
        fitted[ring] = wt[ring] @ np.linalg.solve(gram[ring], w[ring] @ unclipped(fitted[ring]))
    residual = unclipped(fitted) - fitted
    return (residual * residual).sum(axis=(1, 2))
