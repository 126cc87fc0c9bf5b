"""Fit the art's cells x cells grid to a picture: `fit_grid` returns a `GridFit`, the
cell boundaries in image pixels, and what the metrics reuse of the fit's evidence.

1. Work on a box-reduced copy (~10 px per cell): averaging blocks suppresses speckle
   and JPEG noise while keeping every cell edge.
2. Per axis, edge profiles and a lattice of boundaries (`lattice`, gathered per axis in
   `AxisEvidence`): a rigid lattice where art smaller than the frame has its background
   run on to the edge; else the known-count fit, its boundaries moved to the strongest
   full-resolution edge nearby, unless equal cells filling the frame explain the
   picture as well (`_regular_explains`: soft pictures' broad edges let the fit drift
   where few edges pin it).
3. A lattice longer than `cells` is cut to the art's window by the portrait layout
   (`window.art_window`). A window whose figure runs into a cell the frame cuts is no
   partial frame: that axis is refitted with the known-count fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.footprint import CANDIDATES, line_residuals
from bespoke_exp.pixelart.lattice import (
    art_ends_inside,
    edge_profiles,
    extend,
    fit_axis,
    normalise,
    partial_lattice,
    refine,
)
from bespoke_exp.pixelart.window import art_window

_WORK_PX_PER_CELL = 10  # working resolution: enough to place edges, little enough to be fast
_STRIP_STEP = 4  # refining boundaries reads every 4th working row (column): plenty

# --- Regular or fitted lattice (`_axis_lattice`, `_regular_explains`) ---
_ON_REGULAR = 1.0  # a fitted boundary this close (working pixels) to the regular lattice is on it
_LINE_STEP = 12  # every 12th working row (column) is a line for the least-squares comparison ...
_LINE_PIXEL_STEP = 2  # ... sampled at every other working pixel (5 per cell)
_LINE_FOOTPRINTS = tuple(  # enough footprints to tell the lattices apart
    fp for fp in CANDIDATES if fp.name in ("hard", "blur0.08", "cubic1", "lanczos1")
)
_REGULAR_MARGIN = 1.05  # the regular lattice wins unless the fitted one explains 5% more
_LINE_EXTRA = 6  # cells modelled beyond a lattice that stops short of the frame border


@dataclass(frozen=True)
class GridFit:
    """Fitted cell boundaries in full-image pixel coordinates.

    x and y hold cells+1 increasing positions; cell (col, row) covers
    [x[col], x[col+1]) x [y[row], y[row+1]).
    """

    x: np.ndarray
    y: np.ndarray
    width: int
    height: int
    # Edge strength above the median per working-resolution boundary, and the
    # working pixel size in image pixels: kept so metrics can reuse the fit's evidence.
    x_edges: np.ndarray | None = None
    y_edges: np.ndarray | None = None
    work_scale: tuple[float, float] = (1.0, 1.0)
    # Cells of the art's pitch that fit across the frame (x, y), and the lattice index of
    # the art's first column and row: more than `cells` fit when the art covers part of
    # the frame and its background runs on to the edge.
    frame_cells: tuple[int, int] | None = None
    window_cell: tuple[int, int] = (0, 0)

    @property
    def window(self) -> tuple[float, float, float, float]:
        """The art's box (left, top, right, bottom) in image pixels."""
        return float(self.x[0]), float(self.y[0]), float(self.x[-1]), float(self.y[-1])

    @property
    def coverage(self) -> tuple[float, float]:
        """Share of the frame's width and height that the art covers."""
        return (
            float(self.x[-1] - self.x[0]) / max(self.width, 1),
            float(self.y[-1] - self.y[0]) / max(self.height, 1),
        )

    @property
    def cells(self) -> int:
        return len(self.x) - 1

    @property
    def cell_size(self) -> float:
        """Mean cell width in pixels."""
        return float((self.x[-1] - self.x[0] + self.y[-1] - self.y[0]) / (2 * self.cells))


@dataclass(frozen=True)
class AxisEvidence:
    """What one axis's boundaries are fitted from.

    `profile` and `length` are the working image's edge strength and edge length per
    boundary (`lattice.edge_profiles`); `scale` is the working pixel's size in image
    pixels; `strip` is the full-resolution image subsampled across this axis's edges, for
    refining; `factor` is the box reduction (1: no reduction, nothing to refine); `axis`
    is the array axis the boundaries cross (1 for x, 0 for y); `lines` is (positions, m):
    working-image lines across the boundaries, at every other working pixel, for telling
    the regular lattice from the fitted one (`_regular_explains`).
    """

    profile: np.ndarray
    length: np.ndarray
    cells: int
    scale: float
    strip: np.ndarray
    factor: int
    axis: int
    lines: np.ndarray


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a PIL image or array (grey and RGBA are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        scale = 255.0 if arr.dtype.kind == "f" and arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(np.nan_to_num(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return arr


def fit_grid(
    image: Image.Image | np.ndarray, cells: int = CELLS, pixels: np.ndarray | None = None
) -> GridFit:
    """Fit cells x cells boundaries to an image (see module docstring). `pixels`: the
    image as `as_rgb_array` gives it, when the caller has it already (saves a copy)."""
    full = as_rgb_array(image) if pixels is None else pixels
    if isinstance(image, Image.Image) and image.mode == "RGB":
        pil = image
    else:
        pil = Image.fromarray(full)
    width, height = pil.size
    factor = max(1, min(width, height) // (cells * _WORK_PX_PER_CELL))
    work = np.asarray(pil.reduce(factor)) if factor > 1 else full
    gx, gy, lx, ly = edge_profiles(work)
    # The reduced image's last block may be partial, hence the exact scales.
    sx, sy = width / work.shape[1], height / work.shape[0]
    step = _STRIP_STEP * factor
    # Lines for the regular-or-fitted comparison: rows cross the x boundaries, columns
    # the y ones; each axis's lines side by side, (positions, lines x channels).
    signal = work.astype(np.float64)
    rows = signal[::_LINE_STEP, ::_LINE_PIXEL_STEP].transpose(1, 0, 2)
    cols = signal[::_LINE_PIXEL_STEP, ::_LINE_STEP]
    rows, cols = rows.reshape(rows.shape[0], -1), cols.reshape(cols.shape[0], -1)
    ax = AxisEvidence(gx, lx, cells, sx, full[::step, :], factor, 1, rows)
    ay = AxisEvidence(gy, ly, cells, sy, full[:, ::step], factor, 0, cols)
    lat_x, lat_y = _axis_lattice(ax), _axis_lattice(ay)
    cx, cy = art_window(work, lat_x / sx, lat_y / sy, cells)
    # No window of whole cells holds the figure: not a partial frame after all.
    if cx is None:
        lat_x, cx = _axis_lattice(ax, rigid=False), 0
    if cy is None:
        lat_y, cy = _axis_lattice(ay, rigid=False), 0
    return GridFit(
        x=lat_x[cx : cx + cells + 1],
        y=lat_y[cy : cy + cells + 1],
        width=width,
        height=height,
        x_edges=_above_median(gx),
        y_edges=_above_median(gy),
        work_scale=(sx, sy),
        frame_cells=(len(lat_x) - 1, len(lat_y) - 1),
        window_cell=(cx, cy),
    )


def _axis_lattice(ev: AxisEvidence, rigid: bool = True) -> np.ndarray:
    """One axis's boundaries in image pixels: the known-count fit, or equal cells filling
    the frame where they explain the picture as well, or (if `rigid`) where the art is
    smaller than the frame on a background running on to the edge, the whole lattice of
    the art's pitch across the frame (longer than cells+1; `art_window` picks the art's
    cells)."""
    reward = normalise(ev.profile)
    lines = partial_lattice(reward, ev.cells) if rigid else None
    if lines is None:
        lines = fit_axis(ev.profile, ev.cells, ev.length)
        regular = np.linspace(0.0, len(ev.profile) - 1, ev.cells + 1)
        # The fit found the regular lattice itself wherever an edge pins a boundary
        # (between identical cells a boundary may sit anywhere).
        on_grid = (np.abs(lines - regular) <= _ON_REGULAR) | (reward[lines] <= 0)
        # Art that ends inside the frame (a straight edge across it near a border) does
        # not fill it: equal cells across the frame cannot be its lattice.
        if not any(art_ends_inside(ev.length)) and (on_grid.all() or _regular_explains(ev, regular, lines)):
            # Exact and sub-pixel: snapping to the nearest full-resolution edge would
            # only add the noise of a soft picture's broad edges.
            return regular * ev.scale
    bounds = lines * ev.scale
    return refine(ev.strip, bounds, ev.factor, ev.axis) if ev.factor > 1 else bounds


def _regular_explains(ev: AxisEvidence, regular: np.ndarray, fitted: np.ndarray) -> bool:
    """Whether the regular lattice explains the working image's lines about as well as
    the known-count fit's boundaries, each under its best footprint.

    Broad edges (bicubic or Lanczos upscales, texture) leave the known-count fit free to
    wander by most of a cell wherever few edges pin it, and Lanczos ringing puts weak
    edges at cell centres; edge strength cannot tell such a fit from wandering widths,
    but re-rendering the lines from each lattice can.
    """
    n = len(ev.profile) - 1
    pos = np.arange(0, n, _LINE_PIXEL_STEP)

    def residual(bounds: np.ndarray) -> float:
        full, _ = extend(bounds, n, _LINE_EXTRA)
        centres, widths = (full[:-1] + full[1:]) / 2, np.maximum(np.diff(full), 1e-3)
        return float(line_residuals(ev.lines, centres, widths, pos, _LINE_FOOTPRINTS).min())

    return residual(regular) <= _REGULAR_MARGIN * residual(fitted.astype(float))


def _above_median(profile: np.ndarray) -> np.ndarray:
    """Edge strength above the median, unthresholded: metrics must see noise as well,
    or boundaries fitted onto the few strongest noise peaks would look aligned."""
    inner = profile[1:-1]
    return np.clip(profile - (np.median(inner) if inner.size else 0.0), 0, None)
