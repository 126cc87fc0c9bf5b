"""Where one axis's cell boundaries lie: edge profiles, the known-count fit and the rigid
lattice, in the working (box-reduced) image's pixels, then refined at full resolution.

`fit.fit_grid` runs these per axis; `window.art_window` then cuts a lattice longer than
the art to the art's own cells. `sample_lattice` spreads sample positions over cells;
`extend` continues a lattice past the art's window (background or padding whose colour
reaches the art's border cells, for the footprint model of `cell_colour`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# --- Edge profiles (`edge_profiles`, `normalise`) ---
_LONG_FLOOR = (3.0, 30.0)  # an edge pixel stands above 3 x median + 30: above speckle, below a colour step
_NOISE_SIGMAS = 3.0  # edge strength counts above the median plus this many robust sigmas
_TOP_SHARE = 40  # the strongest 1/40 of the boundaries set the scale of a strong edge

# --- Known-count fit (`fit_axis`) ---
_SPANS = np.linspace(0.80, 1.0, 7)  # candidate art spans (share of the frame); finer steps gained nothing
_GAP_BAND = 0.4  # a cell may be this much narrower (wider) than the span's expected width
_GAP_PENALTY = 0.5  # cost of a cell off by the whole band, in units of a strong edge
_BORDER_REWARD = 1.0  # the frame border counts as a strong edge unless art ends before it
_END_BONUS = 1.0  # extra weight of the outermost boundaries' edge strength
_NEAR_BORDER = 0.18  # art that does not fill the frame starts within this share of it
_LONG_EDGE = 0.75  # an edge crossing this share of the picture marks the art's border

# --- Rigid lattice (`partial_lattice`, `comb_fit`) ---
_STRONG = 0.2  # normalised edge strength that counts as evidence of a cell boundary
_WHOLE = 0.6  # a lattice cell cut by the frame border counts if this share of it is inside
_COMB_STEP = 0.02  # pitch resolution of the rigid-lattice search (working pixels)
_COMB_MARGIN = 0.85  # the frame-filling pitch must explain under this share of the edges
_FIT_SHARE = 0.95  # share of the strong edges' strength a rigid lattice must put lines on
_MIN_HITS = 6  # lattice lines on strong edges needed before a partial frame is believed
_ON_LINE = 1.0  # a strong edge this close (working pixels) to a lattice line is on it
_LINE_REACH = 1.5  # edges this close to a line steer the least-squares pitch and phase


def edge_profiles(work: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edge strength and edge length at every column and row boundary of (H, W, 3).

    Entry c of the x profiles scores a boundary between columns c-1 and c (c = 0..W;
    the frame borders score 0). Strength: summed absolute colour differences. Length:
    share of rows where the difference stands clearly above the noise, which tells a
    straight edge crossing the whole picture (the border of art that does not fill the
    frame) from the many short edges inside it.
    """
    a = np.moveaxis(work, -1, 0).astype(np.int16, order="C")  # channel planes: summing them is fast
    dx = np.abs(np.diff(a, axis=2)).sum(axis=0)  # (H, W-1)
    dy = np.abs(np.diff(a, axis=1)).sum(axis=0)  # (H-1, W)
    pad = np.zeros(1)

    def long_share(d: np.ndarray, axis: int) -> np.ndarray:
        if d.size == 0:  # a one-pixel-wide picture
            return np.zeros(d.shape[1 - axis])
        # The median of every 4th line: as good a noise level, a quarter of the cost.
        level = np.median(d[::4] if axis == 0 else d[:, ::4])
        return (d > _LONG_FLOOR[0] * level + _LONG_FLOOR[1]).mean(axis=axis)

    gx = np.concatenate([pad, dx.sum(axis=0, dtype=np.int64), pad])
    gy = np.concatenate([pad, dy.sum(axis=1, dtype=np.int64), pad])
    lx = np.concatenate([pad, long_share(dx, 0), pad])
    ly = np.concatenate([pad, long_share(dy, 1), pad])
    return gx, gy, lx, ly


def normalise(profile: np.ndarray) -> np.ndarray:
    """Edge strength above the noise floor, scaled so the strongest edges score 1."""
    inner = profile[1:-1]
    if inner.size == 0:  # a one-pixel axis has no inner boundaries
        return np.zeros_like(profile, dtype=float)
    med = np.median(inner)
    mad = np.median(np.abs(inner - med))
    g = np.clip(profile - (med + _NOISE_SIGMAS * 1.4826 * mad), 0, None)
    top = np.sort(g)[-max(2, len(g) // _TOP_SHARE) :].mean()  # level of the strongest few edges
    if top <= 0:
        return np.zeros_like(g)
    # Square root: a one-cell feature (a nose dot) is a 24th of a full-height edge but
    # still a real boundary, so compress the range rather than let big edges dominate.
    return np.sqrt(np.clip(g / top, 0, 1))


def art_ends_inside(length: np.ndarray) -> tuple[bool, bool]:
    """Whether art ends inside the frame near its start and near its end: a straight edge
    across the whole picture (`edge_profiles`' length) there is the art's border."""
    n = len(length) - 1
    near = max(2, int(_NEAR_BORDER * n))
    start, end = length[1:near].max(initial=0), length[n - near + 1 : n].max(initial=0)
    return bool(start >= _LONG_EDGE), bool(end >= _LONG_EDGE)


def fit_axis(profile: np.ndarray, cells: int, length: np.ndarray | None = None) -> np.ndarray:
    """Boundary positions (cells+1 ints in 0..len(profile)-1) maximising edge reward.

    Dynamic programme over positions, vectorised over candidate art spans. Reward:
    normalised edge strength at each boundary (double at the two outermost ones).
    Penalty: each cell's width deviating from the span's expected width. Best span wins.
    """
    n = len(profile) - 1  # pixels along this axis
    reward = normalise(profile)
    reward[0] = reward[-1] = _BORDER_REWARD
    if length is not None:
        # Where art ends inside the frame, the frame border is no boundary at all.
        start, end = art_ends_inside(length)
        reward[0] = 0.0 if start else reward[0]
        reward[-1] = 0.0 if end else reward[-1]
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
    padded = np.full((n_spans, d_hi + n_pos), -np.inf)
    # reach[j, s, p] views the score at p - gaps[j]: every gap at once, gaps leading so
    # that the reductions over them run across whole planes.
    reach = sliding_window_view(padded, len(gaps), axis=1)[:, :n_pos, ::-1].transpose(2, 0, 1)
    cost = pen.T[:, :, None]
    for i in range(cells):
        padded[:, d_hi:] = score
        cand = reach - cost
        back[i] = gaps[cand.argmax(axis=0)]  # the narrowest of equally good gaps
        score = cand.max(axis=0) + reward
    score += _END_BONUS * reward
    s, pos = np.unravel_index(int(np.argmax(score)), score.shape)
    if not np.isfinite(score[s, pos]):
        return np.round(np.linspace(0, n, cells + 1)).astype(int)
    out = [int(pos)]
    for i in range(cells - 1, -1, -1):
        pos -= int(back[i, s, pos])
        out.append(int(pos))
    return np.array(out[::-1])


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
    near = np.abs(edges[:, None] - lines[None, :]).min(axis=1) <= _ON_LINE
    if len(lines) - 1 < cells or reward[edges][near].sum() < _FIT_SHARE * reward[edges].sum():
        return None
    return np.clip(lines, 0.0, n)


def _fit_lines(edges: np.ndarray, weight: np.ndarray, pitch: float, phase: float) -> tuple[float, float]:
    """Pitch and phase refined by weighted least squares over the edges near a line: the
    comb's 1-pixel bins leave up to a pixel of drift across the frame."""
    k = np.round((edges - phase) / pitch)
    near = np.abs(edges - phase - pitch * k) <= _LINE_REACH
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


def refine(strip: np.ndarray, bounds: np.ndarray, reach: int, axis: int) -> np.ndarray:
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
    return np.maximum.accumulate(out)  # keep boundaries ordered


def sample_lattice(lo: np.ndarray, hi: np.ndarray, limit: int, trim: float, k: int) -> np.ndarray:
    """(cells, k) integer pixel positions evenly spread over each cell's central part,
    [lo + trim * size, hi - trim * size), clipped to 0..limit-1."""
    size = hi - lo
    start, stop = lo + trim * size, hi - trim * size
    frac = (np.arange(k) + 0.5) / k
    pos = start[:, None] + frac[None, :] * (stop - start)[:, None]
    return np.clip(np.floor(pos).astype(int), 0, limit - 1)


def extend(bounds: np.ndarray, limit: int, most: int) -> tuple[np.ndarray, int]:
    """The boundaries with up to `most` cells of the median pitch added on each side while
    any part (half a pixel or more) of one lies inside 0..limit, and how many went before:
    background or padding beyond the art's window, whose colour reaches its border cells."""
    b = np.asarray(bounds, dtype=float)
    pitch = max(float(np.median(np.diff(b))), 1.0)
    before = min(most, max(0, int(np.ceil((b[0] - 0.5) / pitch))))
    after = min(most, max(0, int(np.ceil((limit - b[-1] - 0.5) / pitch))))
    head, tail = b[0] - pitch * np.arange(before, 0, -1), b[-1] + pitch * np.arange(1, after + 1)
    return np.concatenate([head, b, tail]), before
