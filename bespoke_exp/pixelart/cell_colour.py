"""Which colour each fitted cell holds, whatever kind of softness the picture has.

Two kinds of softness call for opposite estimators. Under an interpolating upscale
(bicubic, Lanczos) only the exact centre of a cell shows its colour: ramps from the
neighbours and their ringing reach into the core, and averaging the core pulls the
estimate towards them. Under texture inside hard cells the centre pixel is as noisy as
any, and only averaging the whole cell beats the texture down. VAE-decoded outputs show
both.

So the picture is modelled as the cells' colours spread by a separable footprint
(`footprint`), the candidate that best explains lines through the cells' centres
(`measure_footprint`). Each cell's colour is then a trimmed mean, over nearly its whole
area, of what each sample says once the neighbours' modelled share is taken out:
c + (pixel - model) / own share, the model clipped to black and white as the picture is
(`recover_cells`). Under a hard footprint that is a trimmed whole-cell mean; under an
interpolating one every sample points at the cell's own colour. A few Jacobi rounds let
the neighbours' estimates settle. Last, cells whose colours differ by no more than the
texture scatters them are pooled (`pool_palette`): pixel art repeats a few flat colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bespoke_exp.pixelart.fit import GridFit
from bespoke_exp.pixelart.footprint import CANDIDATES, HARD, Footprint, footprint_weights, line_residuals
from bespoke_exp.pixelart.lattice import extend, sample_lattice

# --- Samples for the metrics (`cell_samples`) ---
_TRIM = 0.3  # the metrics sample each cell's central 40%, away from blended edges ...
_SAMPLES = 7  # ... on a 7x7 lattice

# --- Cell colours (`recover_cells`) ---
_ESTIMATE_SAMPLES = 12  # samples per cell and axis (144 per cell) for the colour estimate
_ESTIMATE_MARGIN = 0.03  # share of the cell left out at each side: pixels a boundary may cut
_ESTIMATE_TRIM = 0.25  # share of a cell's samples dropped at each end (speckle, JPEG ringing)
_ROUNDS = 1  # Jacobi rounds: each refines the neighbours' modelled share ...
_FAR_ROUNDS = 2  # ... and this many under an interpolating footprint, which reaches far
_LINE_STEP = 2  # the footprint is measured on every other sample along the centre lines ...
_CENSORED_FITS = 3  # ... by least squares refitted twice at clipped samples (see line_residuals)
_MIN_CELL_PX = 4.0  # narrower cells carry no measurable softness: take them as hard
_MIN_OWN = 0.5  # samples where the cell's own share is less are left out
_CORE_OWN = 0.97  # the first estimate reads samples whose own share is within 3% of the cell's largest
_MAX_EXTRA = 6  # cells of the art's pitch modelled beyond its window, per side
# --- Palette pooling (`pool_palette`) ---
_POOL_REACH = 6.0  # pool cells this many typical nearest-colour distances apart ...
_POOL_MAX = 10.0  # ... but never farther apart than this (levels, any channel) ...
_POOL_TEXTURE = 4.0  # ... nor than this many times the texture's sd inside cells
_POOL_SHIFTS = 3  # mean-shift steps
_FIXED = 8  # colour distances are compared in 1/8 levels


def cell_samples(arr: np.ndarray, fit: GridFit, trim: float = _TRIM, k: int = _SAMPLES) -> np.ndarray:
    """(cells, cells, k*k, 3) uint8 samples from each cell's central region (row-major)."""
    xs = sample_lattice(fit.x[:-1], fit.x[1:], arr.shape[1], trim, k)
    ys = sample_lattice(fit.y[:-1], fit.y[1:], arr.shape[0], trim, k)
    s = arr[ys[:, None, :, None], xs[None, :, None, :]]  # (rows, cols, k, k, 3)
    return s.reshape(fit.cells, fit.cells, k * k, 3)


@dataclass(frozen=True)
class _Axis:
    """One axis's cells as the model sees them: the art's window plus the cells of its
    pitch that continue beyond it inside the frame (background or padding, whose ramps
    reach the art's border cells), and the same number of sample positions in each."""

    centres: np.ndarray
    widths: np.ndarray
    pos: np.ndarray  # (cells * k,) pixel indices, cell by cell
    first: int  # the art's first cell

    @property
    def cells(self) -> int:
        return len(self.centres)

    def weights(self, footprint: Footprint) -> np.ndarray:
        """(cells, samples) share of each sample's colour that each cell contributes."""
        return footprint_weights(self.centres, self.widths, self.pos, (footprint,))[0]


def _axis(bounds: np.ndarray, limit: int, k: int) -> _Axis:
    full, before = extend(bounds, limit, _MAX_EXTRA)
    lo, hi = np.clip(full[:-1], 0, limit), np.clip(full[1:], 0, limit)
    pos = sample_lattice(lo, hi, limit, _ESTIMATE_MARGIN, k).ravel()
    return _Axis((full[:-1] + full[1:]) / 2, np.maximum(np.diff(full), 1e-3), pos, before)


def measure_footprint(arr: np.ndarray, fit: GridFit) -> Footprint:
    """The candidate footprint (`footprint.CANDIDATES`) that best explains the picture:
    least-squares residual of lines through the pixels nearest the cells' centres.

    Along a line through a row of cells the picture is a sum of footprints weighted by
    that row's colours, whatever the other axis does, so a 1-D fit per axis tells a ramp
    that belongs to the footprint from an edge that does not. Through the centres, an
    interpolating footprint across the line is exactly 1 for the line's own cells.
    """
    h, w = arr.shape[:2]
    ax, ay = _axis(fit.x, w, _ESTIMATE_SAMPLES), _axis(fit.y, h, _ESTIMATE_SAMPLES)
    return _measure(arr, ax, ay)


def _measure(arr: np.ndarray, ax: _Axis, ay: _Axis) -> Footprint:
    if min(np.median(ax.widths), np.median(ay.widths)) < _MIN_CELL_PX:
        return HARD
    h, w = arr.shape[:2]
    rows, cols = _centre_lines(ay.centres, h), _centre_lines(ax.centres, w)
    sx, sy = ax.pos[::_LINE_STEP], ay.pos[::_LINE_STEP]
    along_x = arr[rows[:, None], sx[None, :]].transpose(1, 0, 2).reshape(len(sx), -1).astype(float)
    along_y = arr[sy[:, None], cols[None, :]].reshape(len(sy), -1).astype(float)
    rss = line_residuals(along_x, ax.centres, ax.widths, sx, CANDIDATES, _CENSORED_FITS)
    rss += line_residuals(along_y, ay.centres, ay.widths, sy, CANDIDATES, _CENSORED_FITS)
    return CANDIDATES[int(np.argmin(rss))]


def _centre_lines(centres: np.ndarray, limit: int) -> np.ndarray:
    """Pixel lines through the cells' centres, the better-centred half of them: off the
    centre an interpolating footprint mixes in the neighbouring row (column) of cells,
    after the resampler's first pass clipped it, which no sum of footprints explains."""
    inside = centres[(centres >= 0.5) & (centres <= limit - 0.5)]
    lines = np.round(inside - 0.5)
    off = np.abs(lines + 0.5 - inside)
    keep = off <= np.median(off) if len(off) else off > 0
    return lines[keep].astype(int)


def _trimmed(z: np.ndarray, valid: np.ndarray, trim: float) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed mean along the last axis over the first `valid` values of each row once
    sorted (NaN, the samples left out, sort last): the mean of the values ranked in the
    middle (1 - 2 trim); and the range of those values (the interquartile range at 0.25)."""
    z = np.sort(z, axis=-1)
    lo = np.broadcast_to(np.floor(valid * trim).astype(int), z.shape[:-1])
    hi = np.maximum(valid - lo, lo + 1)
    rank = np.arange(z.shape[-1])
    keep = (rank >= lo[..., None]) & (rank < hi[..., None])
    mean = np.where(keep, z, 0.0).sum(axis=-1) / (hi - lo)
    spread = np.take_along_axis(z, (hi - 1)[..., None], -1) - np.take_along_axis(z, lo[..., None], -1)
    return mean, spread[..., 0]


def recover_cells(arr: np.ndarray, fit: GridFit, footprint: Footprint | None = None) -> np.ndarray:
    """(cells, cells, 3) uint8 cell colours (see module docstring). `footprint` overrides
    the one measured from the picture."""
    h, w = arr.shape[:2]
    k = _ESTIMATE_SAMPLES
    ax, ay = _axis(fit.x, w, k), _axis(fit.y, h, k)
    if footprint is None:
        footprint = _measure(arr, ax, ay)
    samples = np.moveaxis(arr[ay.pos[:, None], ax.pos[None, :]], -1, 0).astype(np.float32)  # (3, Y, X)
    wx, wy = ax.weights(footprint).astype(np.float32), ay.weights(footprint).astype(np.float32)
    cx, cy = np.repeat(np.arange(ax.cells), k), np.repeat(np.arange(ay.cells), k)
    own = wy[cy, np.arange(len(cy))][:, None] * wx[cx, np.arange(len(cx))][None, :]  # (Y, X)

    def per_cell(a: np.ndarray) -> np.ndarray:  # (..., Y, X) -> (..., cells_y, cells_x, k*k)
        a = a.reshape(*a.shape[:-2], ay.cells, k, ax.cells, k).swapaxes(-3, -2)
        return a.reshape(*a.shape[:-2], k * k)

    # Where the cell's own share is small the neighbours' modelled share dominates, and
    # dividing by it would amplify every error: such samples are left out (NaN). A cell
    # none of whose samples qualify (a sliver at the frame border) keeps them all.
    usable = per_cell(own >= _MIN_OWN)
    usable |= ~usable.any(axis=-1, keepdims=True)
    valid = usable.sum(axis=-1)  # (cells_y, cells_x)
    own = per_cell(own).astype(np.float32)
    own_all = np.where(usable, own, np.inf)  # a sample left out shifts nothing ...
    own = np.where(usable, own, np.nan)  # ... or, for the trimmed mean, is no sample at all
    # A hard footprint reaches no neighbour: nothing to take out. An interpolating one
    # reaches far, and its neighbours' estimates take more rounds to settle.
    rounds = 0 if footprint.reach <= 0.5 else _FAR_ROUNDS if footprint.interpolating else _ROUNDS
    # The first estimate reads the samples as they are, where the cell's own share is
    # (nearly) its largest: all of a hard cell, only the centre of an interpolated one.
    # It is final for a hard footprint; else a plain mean will do to start the rounds.
    first = own >= _CORE_OWN * np.nanmax(own, axis=-1, keepdims=True)
    if rounds == 0:
        z = np.where(first, per_cell(samples), np.nan)
        colours, spread = _trimmed(z, first.sum(axis=-1), _ESTIMATE_TRIM)  # (3, cy, cx)
    else:
        colours = (per_cell(samples) * first).sum(axis=-1) / first.sum(axis=-1)
    black, white = samples <= 0, samples >= 255
    for i in range(rounds):
        # Overshoot past black or white is clipped, after each pass of a separable
        # resampler (PIL's goes across first): the model clips where the picture did, and
        # a sample at the limit where the model goes beyond it agrees with the model.
        residual = samples - wy.T @ np.clip(colours @ wx, 0.0, 255.0)  # (3, Y, X)
        np.minimum(residual, 0.0, out=residual, where=black)
        np.maximum(residual, 0.0, out=residual, where=white)
        if i < rounds - 1:  # settling the neighbours: a plain mean will do
            colours = colours + (per_cell(residual) / own_all).sum(axis=-1) / valid
        else:
            shift, spread = _trimmed(per_cell(residual) / own, valid, _ESTIMATE_TRIM)
            colours = colours + shift
    art = (slice(None), slice(ay.first, ay.first + fit.cells), slice(ax.first, ax.first + fit.cells))
    # Texture shows inside the cells too: how far their samples scatter (interquartile
    # range / 1.35: a standard deviation), typically, in the worst channel.
    texture = float(np.median(spread[art].reshape(3, -1), axis=1).max()) / 1.35
    pooled = pool_palette(colours[art], _POOL_TEXTURE * texture)
    return np.clip(np.round(np.moveaxis(pooled, 0, -1)), 0, 255).astype(np.uint8)


def pool_palette(colours: np.ndarray, most: float = _POOL_MAX) -> np.ndarray:
    """(3, rows, cols) cell colours moved to the mean of the cells of their palette colour:
    a cell's own pixels leave texture that varies smoothly across the frame in its
    estimate, but pixel art repeats a few flat colours, so the cells showing one palette
    colour average it away.

    Mean shift with a flat kernel: each colour moves, a few times, to the mean of all
    cells within `reach` levels (every channel) of where it has got to, so a cell the
    texture pushed off its colour's centre moves back to it. `reach` scales with the
    noise: _POOL_REACH times the median distance from a cell's colour to the nearest other
    cell's, at most `most` levels and _POOL_MAX. Crisp art repeats its colours exactly
    (distance 0) and shows no texture inside its cells (`recover_cells` sets `most` in
    proportion to that texture), so nothing moves there and near-duplicate shades stay
    visible to the palette metrics.
    """
    c = colours.reshape(3, -1).astype(np.float32)
    cells = _fixed(c)
    d = _distances(cells, cells)
    np.fill_diagonal(d, np.iinfo(d.dtype).max)
    nearest = float(np.median(d.min(axis=1))) / _FIXED
    reach = min(_POOL_REACH * nearest, most, _POOL_MAX) * _FIXED
    if not reach > 0:
        return colours
    np.fill_diagonal(d, 0)
    moved = c
    for _ in range(_POOL_SHIFTS):
        near = (d <= reach).astype(np.float32)  # (moved, cells)
        moved = (c @ near.T) / near.sum(axis=1)
        d = _distances(_fixed(moved), cells)
    return moved.reshape(colours.shape)


def _fixed(c: np.ndarray) -> np.ndarray:
    """Colours in 1/_FIXED levels as 16-bit integers: distances between them cost a
    fraction of the float ones."""
    return np.round(c * _FIXED).astype(np.int16)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) largest channel difference between colours a (3, n) and b (3, m) (`_fixed`)."""
    d = np.subtract.outer(a[0], b[0])
    np.abs(d, out=d)
    step = np.empty_like(d)
    for ca, cb in zip(a[1:], b[1:]):
        np.subtract.outer(ca, cb, out=step)
        np.abs(step, out=step)
        np.maximum(d, step, out=d)
    return d
