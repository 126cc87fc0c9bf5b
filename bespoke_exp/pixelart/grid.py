"""Recover the true cells x cells grid from a generated picture.

    >>> grid = recover_grid(Image.open("sample.png"), cells=24)   # 24x24 RGB image
    >>> fit = fit_grid(Image.open("sample.png"), cells=24)        # boundaries, for metrics

Diffusion outputs are 1024 px for 24 cells (42.67 px per cell), with blurred edges,
JPEG blocking, speckle, colour drift, wandering cell widths and art that may cover
only part of the frame. The cell count is known; the art's own pitch and phase are
measured from the image:

1. Work on a box-reduced copy (~10 px per cell): averaging blocks suppresses speckle
   and JPEG noise while keeping every cell edge.
2. Per axis, an edge profile: summed absolute colour differences between neighbouring
   columns (rows), less its median so flat-area noise scores nothing.
3. A rigid lattice is searched first (`partial_lattice`): the pitch and phase whose
   lines carry the most edge strength, at pitches too fine for `cells` cells to fill
   the frame (half a cell or more to spare). It is kept when it puts a line on nearly
   every strong edge and the frame-filling pitch explains them clearly worse: art
   smaller than the frame, its background running on to the edge. Otherwise dynamic
   programming places cells+1 boundaries maximising edge strength minus a penalty on
   each gap's deviation from the expected width, for art spans of 80-100% of the frame
   at any offset (this follows wandering widths, and ends art drawn on a padding
   colour at its border).
4. Boundaries move to the strongest full-resolution edge within a working pixel.
5. A lattice longer than `cells` is cut to the art's window by the portrait layout
   (`art_window`): the figure inside, its body on the bottom row, its extent centred.
   A window whose figure runs into a cell the frame cuts is no partial frame: that axis
   is refitted with the known-count fit. GridFit reports the window (`window`,
   `coverage`, `frame_cells`, `window_cell`).
6. Each cell's colour is the interquartile mean of samples over its own core
   (`recover_cells`), robust to ramps, ringing, speckle and slow drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_WORK_PX_PER_CELL = 10  # working resolution: enough to place edges, little enough to be fast
_SPANS = np.linspace(0.80, 1.0, 7)  # candidate art spans (share of the frame); finer steps gained nothing
_GAP_BAND = 0.4  # a cell may be this much narrower (wider) than the span's expected width
_GAP_PENALTY = 0.5  # cost of a cell off by the whole band, in units of a strong edge
_BORDER_REWARD = 1.0  # the frame border counts as a strong edge unless art ends before it
_END_BONUS = 1.0  # extra weight of the outermost boundaries' edge strength
_NEAR_BORDER = 0.18  # art that does not fill the frame starts within this share of it
_LONG_EDGE = 0.75  # an edge crossing this share of the picture marks the art's border
_TRIM = 0.3  # sample each cell's central 40%, away from blended edges
_SAMPLES = 7  # 7x7 samples per cell for the metrics' per-cell statistics
_CORE_TRIM = 0.2  # recovered colours average each cell's central 60% ...
_CORE_SAMPLES = 11  # ... over 11x11 samples (see recover_cells)
_STRONG = 0.2  # normalised edge strength that counts as evidence of a cell boundary
_WHOLE = 0.6  # a lattice cell cut by the frame border counts if this share of it is inside
_COMB_STEP = 0.02  # pitch resolution of the rigid-lattice search (working pixels)
_COMB_MARGIN = 0.85  # the frame-filling pitch must explain under this share of the edges
_FIT_SHARE = 0.95  # share of the strong edges' strength a rigid lattice must put lines on
_MIN_HITS = 6  # lattice lines on strong edges needed before a partial frame is believed
_CUT = 0.9  # a lattice end cell narrower than this share of the pitch is cut by the frame
_FIGURE_STEP = 40  # a cell this far (max channel) from the frame's outer ring is figure
# Where the punk layout centres the figure's horizontal extent, in cells of 24: the hair
# behind the head reaches further left than the face does right (x=5..16 or 5..17).
_FIGURE_CENTRE = 10.75


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


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a PIL image or array (grey and RGBA are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        scale = 255.0 if arr.dtype.kind == "f" and arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(np.nan_to_num(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return arr


def edge_profiles(work: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edge strength and edge length at every column and row boundary of (H, W, 3).

    Entry c of the x profiles scores a boundary between columns c-1 and c (c = 0..W;
    the frame borders score 0). Strength: summed absolute colour differences. Length:
    share of rows where the difference stands clearly above the noise, which tells a
    straight edge crossing the whole picture (the border of art that does not fill the
    frame) from the many short edges inside it.
    """
    a = work.astype(np.int16)
    dx = np.abs(np.diff(a, axis=1)).sum(axis=2)  # (H, W-1)
    dy = np.abs(np.diff(a, axis=0)).sum(axis=2)  # (H-1, W)
    pad = np.zeros(1)

    def long_share(d: np.ndarray, axis: int) -> np.ndarray:
        if d.size == 0:  # a one-pixel-wide picture
            return np.zeros(d.shape[1 - axis])
        floor = 3.0 * np.median(d) + 30.0  # well above speckle, below any real colour step
        return (d > floor).mean(axis=axis)

    gx = np.concatenate([pad, dx.sum(axis=0, dtype=np.int64), pad])
    gy = np.concatenate([pad, dy.sum(axis=1, dtype=np.int64), pad])
    lx = np.concatenate([pad, long_share(dx, 0), pad])
    ly = np.concatenate([pad, long_share(dy, 1), pad])
    return gx, gy, lx, ly


def _normalise(profile: np.ndarray) -> np.ndarray:
    """Edge strength above the noise floor, scaled so the strongest edges score 1."""
    inner = profile[1:-1]
    if inner.size == 0:  # a one-pixel axis has no inner boundaries
        return np.zeros_like(profile, dtype=float)
    med = np.median(inner)
    mad = np.median(np.abs(inner - med))
    g = np.clip(profile - (med + 3.0 * 1.4826 * mad), 0, None)  # 3 sigma above flat-area noise
    top = np.sort(g)[-max(2, len(g) // 40) :].mean()  # level of the strongest few edges
    if top <= 0:
        return np.zeros_like(g)
    # Square root: a one-cell feature (a nose dot) is a 24th of a full-height edge but
    # still a real boundary, so compress the range rather than let big edges dominate.
    return np.sqrt(np.clip(g / top, 0, 1))


def fit_axis(profile: np.ndarray, cells: int, length: np.ndarray | None = None) -> np.ndarray:
    """Boundary positions (cells+1 ints in 0..len(profile)-1) maximising edge reward.

    Dynamic programme over positions, vectorised over candidate art spans. Reward:
    normalised edge strength at each boundary (double at the two outermost ones).
    Penalty: each cell's width deviating from the span's expected width. Best span wins.
    """
    n = len(profile) - 1  # pixels along this axis
    reward = _normalise(profile)
    reward[0] = reward[-1] = _BORDER_REWARD
    if length is not None:
        # A straight edge across the whole picture near a border is where art that
        # does not fill the frame ends: then the frame border is no boundary at all.
        near = max(2, int(_NEAR_BORDER * n))
        if length[1:near].max(initial=0) >= _LONG_EDGE:
            reward[0] = 0.0
        if length[n - near + 1 : n].max(initial=0) >= _LONG_EDGE:
            reward[-1] = 0.0
    widths = _SPANS * n / cells  # expected width per candidate span
    d_lo = max(1, int(np.floor(widths.min() * (1 - _GAP_BAND))))
    d_hi = max(d_lo, int(np.ceil(widths.max() * (1 + _GAP_BAND))))
    if cells * d_lo > n:  # image too small for the cells: split evenly
        return np.round(np.linspace(0, n, cells + 1)).astype(int)
    gaps = np.arange(d_lo, d_hi + 1)
    dev = (gaps[None, :] - widths[:, None]) / (widths[:, None] * _GAP_BAND)
    # Penalty per (span, width); widths outside a span's band are forbidden.
    pen = np.where(np.abs(dev) <= 1.0, _GAP_PENALTY * dev**2, np.inf)
    n_spans, n_pos = len(widths), n + 1
    # The art's first and last boundaries count extra: art ends somewhere visible (an
    # edge, or the frame), never in the middle of a flat area.
    score = np.broadcast_to((1 + _END_BONUS) * reward, (n_spans, n_pos)).copy()
    back = np.zeros((cells, n_spans, n_pos), dtype=np.int16)
    for i in range(cells):
        best = np.full((n_spans, n_pos), -np.inf)
        arg = back[i]
        for j, d in enumerate(gaps):
            if d >= n_pos:
                break
            cand = score[:, : n_pos - d] - pen[:, j : j + 1]
            view = best[:, d:]
            better = cand > view
            view[better] = cand[better]
            arg[:, d:][better] = d
        score = best + reward
    score += _END_BONUS * reward
    s, pos = np.unravel_index(int(np.argmax(score)), score.shape)
    if not np.isfinite(score[s, pos]):
        return np.round(np.linspace(0, n, cells + 1)).astype(int)
    out = [int(pos)]
    for i in range(cells - 1, -1, -1):
        pos -= int(back[i, s, pos])
        out.append(int(pos))
    return np.array(out[::-1])


def fit_grid(image: Image.Image | np.ndarray, cells: int = 24) -> GridFit:
    """Fit cells x cells boundaries to an image (see module docstring)."""
    if isinstance(image, Image.Image):
        pil = image if image.mode == "RGB" else image.convert("RGB")
    else:
        pil = Image.fromarray(as_rgb_array(image))
    width, height = pil.size
    factor = max(1, min(width, height) // (cells * _WORK_PX_PER_CELL))
    work = np.asarray(pil.reduce(factor)) if factor > 1 else np.asarray(pil)
    full = np.asarray(pil)  # a view for PIL images, no copy
    gx, gy, lx, ly = edge_profiles(work)
    # The reduced image's last block may be partial, hence the exact scales.
    sx, sy = width / work.shape[1], height / work.shape[0]
    x_args = (gx, lx, cells, sx, full[:: 4 * factor, :], factor, 1)  # every 4th working row is plenty
    y_args = (gy, ly, cells, sy, full[:, :: 4 * factor], factor, 0)
    lat_x, lat_y = _axis_lattice(*x_args), _axis_lattice(*y_args)
    cx, cy = art_window(work, lat_x / sx, lat_y / sy, cells)
    # No window of whole cells holds the figure: not a partial frame after all.
    if cx is None:
        lat_x, cx = _axis_lattice(*x_args, rigid=False), 0
    if cy is None:
        lat_y, cy = _axis_lattice(*y_args, rigid=False), 0
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


def _axis_lattice(
    profile: np.ndarray,
    length: np.ndarray,
    cells: int,
    scale: float,
    strip: np.ndarray,
    factor: int,
    axis: int,
    rigid: bool = True,
) -> np.ndarray:
    """One axis's boundaries in image pixels: the known-count fit, or (if `rigid`) where
    the art is smaller than the frame on a background running on to the edge, the whole
    lattice of the art's pitch across the frame (longer than cells+1; `art_window` picks
    the art's cells)."""
    lattice = partial_lattice(_normalise(profile), cells) if rigid else None
    bounds = (fit_axis(profile, cells, length) if lattice is None else lattice) * scale
    return _refine(strip, bounds, factor, axis) if factor > 1 else bounds


def partial_lattice(reward: np.ndarray, cells: int) -> np.ndarray | None:
    """Lines of a rigid lattice across the frame when the art's own pitch is too fine for
    `cells` cells to fill the frame, else None (working pixels). Cells the frame cuts to
    less than `_WHOLE` are left out: the art's window lies inside the frame.

    The known-count fit explains the edges of art that fills the frame, wandering widths
    included; on art that covers part of the frame it stretches the flat ends to reach the
    border, which miscounts the cells there. A rigid lattice (pitch and phase from the
    edges) is taken instead only when its pitch leaves room for half a cell or more,
    it puts a line on (nearly) every strong edge (not so under wandering widths), and the
    frame-filling pitch explains the edges clearly worse (enough edges to tell them apart).
    """
    n = len(reward) - 1
    full = n / cells
    pitch, phase, score = comb_fit(reward, _SPANS[0] * full, n / (cells + 0.5))
    if score <= 0 or comb_fit(reward, full, full)[2] > _COMB_MARGIN * score:
        return None
    # Every strong edge (a local maximum) must lie within a pixel of a line: a rigid
    # lattice laid over wandering widths misses some, however dense it is.
    r = reward[1:-1]
    edges = np.nonzero((r >= _STRONG) & (r >= reward[:-2]) & (r >= reward[2:]))[0] + 1
    if len(edges) < _MIN_HITS:
        return None
    pitch, phase = _fit_lines(edges, reward[edges], pitch, phase)
    k = np.arange(
        np.ceil((-(1 - _WHOLE) * pitch - phase) / pitch),
        np.floor((n + (1 - _WHOLE) * pitch - phase) / pitch) + 1,
    )
    lines = phase + pitch * k
    near = np.abs(edges[:, None] - lines[None, :]).min(axis=1) <= 1.0
    if len(lines) - 1 < cells or reward[edges][near].sum() < _FIT_SHARE * reward[edges].sum():
        return None
    return np.clip(lines, 0.0, n)


def _fit_lines(edges: np.ndarray, weight: np.ndarray, pitch: float, phase: float) -> tuple[float, float]:
    """Pitch and phase refined by weighted least squares over the edges near a line: the
    comb's 1-pixel bins leave up to a pixel of drift across the frame."""
    k = np.round((edges - phase) / pitch)
    near = np.abs(edges - phase - pitch * k) <= 1.5
    if len(np.unique(k[near])) < 2:
        return pitch, phase
    slope, intercept = np.polyfit(k[near], edges[near], 1, w=np.sqrt(weight[near]))
    return float(slope), float(intercept % slope)


def comb_fit(reward: np.ndarray, lo: float, hi: float) -> tuple[float, float, float]:
    """(pitch, phase, score) of the rigid lattice with pitch in [lo, hi] whose lines carry
    the most edge reward: the reward folded modulo each candidate pitch, in 1-pixel phase
    bins taken in pairs, round the circle (an edge blurred over two pixels counts whole)."""
    pos = np.nonzero(reward[1:-1] > 0)[0] + 1
    if len(pos) == 0 or hi < lo:
        return lo, 0.0, 0.0
    pitches = np.arange(lo, hi + 1e-9, _COMB_STEP) if hi > lo else np.array([lo])
    phases = np.mod(pos[None, :], pitches[:, None])  # (pitches, edges)
    nb = int(np.ceil(hi)) + 1
    rows = np.arange(len(pitches))[:, None]
    bins = (rows * nb + phases.astype(int)).ravel()
    w = np.broadcast_to(reward[pos], phases.shape).ravel()
    hist = np.bincount(bins, w, minlength=len(pitches) * nb).reshape(len(pitches), nb)
    # Bin floor(pitch) is the last one at each pitch: its pair wraps round to bin 0.
    nxt = np.arange(1, nb + 1)[None, :]
    nxt = np.where(nxt <= np.floor(pitches)[:, None], nxt, 0)
    pairs = hist + hist[rows, nxt]
    i, b = np.unravel_index(int(np.argmax(pairs)), pairs.shape)
    offset = np.mod(phases[i] - b, pitches[i])  # circular distance past the pair's start
    sel = offset < 2
    phase = (b + float(np.average(offset[sel], weights=reward[pos][sel]))) % pitches[i]
    return float(pitches[i]), float(phase), float(pairs[i, b])


def art_window(
    work: np.ndarray, lat_x: np.ndarray, lat_y: np.ndarray, cells: int
) -> tuple[int | None, int | None]:
    """Index of the art's first column and row in lattices (working pixels) that may
    hold more than `cells` cells.

    Where the art's background runs on to the frame edge nothing marks the art's border,
    so the portrait layout decides: the figure (cells unlike the frame's outer ring)
    must lie inside the window, its body reaches the bottom row, and its extent is
    centred as the punk layout centres it. Art on a padding colour of its own is all
    "figure", which pins the window exactly. None for an axis where the figure runs
    into a cell the frame cuts: art inside the frame has whole cells, so that lattice is
    not the art's (wandering widths can pass for a finer pitch over a figure).
    """
    if len(lat_x) - 1 <= cells and len(lat_y) - 1 <= cells:
        return 0, 0
    colours = _lattice_colours(work, lat_x, lat_y)
    outer = np.ones(colours.shape[:2], bool)
    outer[1:-1, 1:-1] = False
    background = np.median(colours[outer], axis=0)
    figure = np.abs(colours - background).max(axis=-1) > _FIGURE_STEP
    centre = _FIGURE_CENTRE * cells / 24
    return (
        _place(figure.any(axis=0), np.diff(lat_x), cells, centre),
        _place(figure.any(axis=1), np.diff(lat_y), cells, None),
    )


def _lattice_colours(work: np.ndarray, lat_x: np.ndarray, lat_y: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) median colour of a 3x3 lattice in each cell's core (working image)."""
    xs = sample_lattice(lat_x[:-1], lat_x[1:], work.shape[1], k=3)
    ys = sample_lattice(lat_y[:-1], lat_y[1:], work.shape[0], k=3)
    s = work[ys[:, None, :, None], xs[None, :, None, :]].astype(np.int16)
    return np.median(s.reshape(len(ys), len(xs), 9, 3), axis=2)


def _place(occupied: np.ndarray, widths: np.ndarray, cells: int, centre: float | None) -> int | None:
    """First index of the `cells`-long window over `occupied` (figure present per lattice
    column or row): fewest figure cells outside, then closest to the layout: the figure's
    extent centred on `centre`, or with centre None its lowest row on the bottom row.
    None if the figure occupies an end cell that the frame cuts (see art_window)."""
    k = len(occupied)
    if k <= cells:
        return 0
    cut = widths < _CUT * np.median(widths)
    if (occupied[[0, -1]] & cut[[0, -1]]).any():
        return None
    idx = np.nonzero(occupied)[0]
    starts = np.arange(k - cells + 1)
    if len(idx) == 0:
        return (k - cells) // 2
    inside = np.concatenate([[0], np.cumsum(occupied)])
    outside = len(idx) - (inside[starts + cells] - inside[starts])
    if centre is None:
        miss = np.abs(idx[-1] - (starts + cells - 1)).astype(float)
    else:
        miss = np.abs((idx[0] + idx[-1]) / 2 - starts - centre)
    return int(starts[np.lexsort((miss, outside))[0]])


def _above_median(profile: np.ndarray) -> np.ndarray:
    """Edge strength above the median, unthresholded: metrics must see noise as well,
    or boundaries fitted onto the few strongest noise peaks would look aligned."""
    inner = profile[1:-1]
    return np.clip(profile - (np.median(inner) if inner.size else 0.0), 0, None)


def edge_alignment(fit: GridFit, tolerance: int = 1) -> float:
    """Share of above-noise edge strength within `tolerance` working pixels of a
    fitted boundary (1.0 for perfect pixel art; low or 0 for noise and flat images)."""
    total = near = 0.0
    for edges, bounds, scale in (
        (fit.x_edges, fit.x, fit.work_scale[0]),
        (fit.y_edges, fit.y, fit.work_scale[1]),
    ):
        if edges is None:
            continue
        pos = np.arange(len(edges))
        b = np.round(np.asarray(bounds) / scale)
        dist = np.abs(pos[:, None] - b[None, :]).min(axis=1)
        total += float(edges.sum())
        near += float(edges[dist <= tolerance].sum())
    return near / total if total > 0 else 0.0  # no edge above the noise: no grid to speak of


def _refine(strip: np.ndarray, bounds: np.ndarray, reach: int, axis: int) -> np.ndarray:
    """Move each boundary to the strongest full-resolution edge within +-reach pixels.

    `strip` is the image subsampled across the edges (every factor-th row for x), so
    this costs a fraction of a full-resolution profile. A boundary with no edge nearby
    (flat area, frame border) stays where the fit put it.
    """
    a = strip.astype(np.int16)
    g = np.abs(np.diff(a, axis=axis)).sum(axis=(2, 1 - axis), dtype=np.int64).astype(float)
    g = np.concatenate([[0.0], g, [0.0]])  # g[c]: edge between pixels c-1 and c
    floor = np.median(g) * 1.5 + 1.0
    out = np.asarray(bounds, dtype=float).copy()
    n = len(g) - 1
    for i, b in enumerate(out):
        lo, hi = max(0, int(round(b)) - reach), min(n, int(round(b)) + reach)
        window = g[lo : hi + 1]
        if len(window) and window.max() > floor:
            out[i] = lo + int(np.argmax(window))
    out = np.maximum.accumulate(out)  # keep boundaries ordered
    return out


def sample_lattice(
    lo: np.ndarray, hi: np.ndarray, limit: int, trim: float = _TRIM, k: int = _SAMPLES
) -> np.ndarray:
    """(cells, k) integer pixel positions evenly spread over each cell's central part."""
    size = hi - lo
    start, stop = lo + trim * size, hi - trim * size
    frac = (np.arange(k) + 0.5) / k
    pos = start[:, None] + frac[None, :] * (stop - start)[:, None]
    return np.clip(np.floor(pos).astype(int), 0, limit - 1)


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


def recover_grid(image: Image.Image | np.ndarray, cells: int = 24) -> Image.Image:
    """The cells x cells RGB image the picture depicts.

    Args:
        image: the generated picture (PIL image or HxWx3 array), any size >= 1 px.
        cells: target cells per side (24 for punks).
    Returns:
        A cells x cells RGB PIL image, one pixel per cell.
    """
    if isinstance(image, Image.Image) and image.mode != "RGB":
        image = image.convert("RGB")
    arr = as_rgb_array(image)
    if arr.shape[0] == cells and arr.shape[1] == cells:
        return Image.fromarray(arr.copy())
    # Pass the PIL image itself to the fit when we have one: saves two full copies.
    return Image.fromarray(recover_cells(arr, fit_grid(image, cells)))


def cell_accuracy(recovered: np.ndarray, truth: np.ndarray, tolerance: int | None = None) -> float:
    """Share of cells recovered right.

    With no tolerance, right means the nearest colour in the true art's own palette is the
    true colour (snapping the recovered art to that palette gives the truth back). With a
    tolerance, the recovered colour must be within that many levels (of 255) of the true
    one in every channel: the stricter measure, which sees drifted or mixed colours that
    still snap right.
    """
    rec, truth = np.asarray(recovered).astype(int), np.asarray(truth).astype(int)
    if tolerance is not None:
        return float((np.abs(rec - truth) <= tolerance).all(-1).mean())
    palette = np.unique(truth.reshape(-1, 3), axis=0)
    d = ((rec.reshape(-1, 1, 3) - palette[None]) ** 2).sum(-1)
    snapped = palette[d.argmin(1)].reshape(truth.shape)
    return float((snapped == truth).all(-1).mean())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def recover_folder(folder: str | Path, cells: int) -> np.ndarray:
    """(N, cells, cells, 3) uint8: the recovered art of every image under `folder`
    (recursive, sorted by path). ValueError naming the folder if it holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    grids = []
    for file in files:
        with Image.open(file) as image:
            grids.append(np.asarray(recover_grid(image.convert("RGB"), cells)))
    return np.stack(grids)
