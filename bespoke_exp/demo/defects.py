"""Synthetic diffusion-style defects for 24x24 pixel art, so grid recovery and the
metrics can be measured against a known truth.

    >>> from bespoke_exp.demo.punks import render, sample_spec
    >>> grid = render(sample_spec(np.random.default_rng(0)))
    >>> img = apply_defect(grid, "combined", np.random.default_rng(1))
    >>> img.size
    (1024, 1024)

Each class imitates one thing SDXL outputs really show; ``combined`` stacks milder
versions of all of them. Strengths are drawn per image from ranges scaled to the cell
width, so the same classes work at 256 and 1024 px. The last five of DEFECT_CLASSES are
this harness's versions of issue 11's table of real-output defects; ISSUE26_CLASSES are
issue 26's (smooth upscales straight from the art, texture inside cells, both at once,
and its partial frame). `claim_phrases` gives true and false prompt claims about a
portrait, for measuring how well the prompt checks keep their verdicts on the defective
image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from bespoke_exp.demo.punks import PunkSpec
from bespoke_exp.pixelart.colors import NAMED_COLORS, SKIN_TONES

DEFECT_CLASSES: tuple[str, ...] = (
    "clean",  # plain upscale to a non-integer cell width (1024 / 24 = 42.67 px)
    "blur",  # anti-aliased / blurred cell edges
    "jpeg",  # JPEG blocking and ringing
    "speckle",  # heavy per-pixel Gaussian noise plus impulse (salt-and-pepper) pixels
    "drift",  # slow colour drift across the frame and shading inside each cell
    "wander",  # cell widths that wander by up to a quarter cell
    "partial",  # art spans 85-100% of the frame at an offset, on its own padding colour
    "combined",  # all of the above at once, each a little milder
    # The classes of issue 11's table of real-output defects (1024 px figures there):
    "smooth",  # bicubic-style upscale: soft ramps and slight ringing between cells
    "noise_jpeg",  # moderate noise, then JPEG compression
    "wander_blur",  # wandering cell widths plus blur
    "drift_blur",  # low-frequency colour drift of a few levels plus mild blur
    "offset_partial",  # art 84-98% of the frame at any offset, its background running on to the edge
)

# Issue 26's classes: the two kinds of softness that call for opposite cell-colour
# estimators, their mix, and the issue's partial frame. Not in DEFECT_CLASSES: a picture
# this soft is no longer pixel art, and the `pixel_art` prompt check rightly fails it
# (tests/scoring/test_prompt_checks.py demands that every check of a portrait's own
# caption passes on DEFECT_CLASSES).
ISSUE26_CLASSES: tuple[str, ...] = (
    "bicubic",  # PIL BICUBIC straight from 24x24 to the frame, nothing else
    "lanczos",  # PIL LANCZOS straight from 24x24: wider ramps, stronger ringing
    "texture",  # nearest + smooth colour field (sd 10 levels, correlation ~32 px) + blur 1.2 px
    "texture_mix",  # texture of varied strength (sd 6-14) and grain (correlation 12-64 px), blur 0.6-2 px
    "soft_texture",  # bicubic or Lanczos upscale plus texture sd 4-10 (VAE output shows both)
    "partial_blur",  # art 84-98% of the frame at an offset, its own background beyond, blur 1 px
    "padded_blur",  # the same on a padding colour of its own (the issue's other reading)
)
ALL_CLASSES: tuple[str, ...] = DEFECT_CLASSES + ISSUE26_CLASSES

# Cell pitch of `offset_partial` art at 1024 px (scaled with the size): 24 cells then
# cover 84-98% of the frame, as in real outputs whose cells are not 1024/24 px.
OFFSET_PITCH_1024 = (36.0, 41.7)


def wandering_widths(cells: int, rng: np.random.Generator, amount: float = 0.25) -> np.ndarray:
    """Relative cell widths (mean 1) that wander smoothly by up to +-amount of a cell.

    Boundaries drift from the regular lattice along a smooth random curve (at most
    half a cell), so widths change gradually, as in real outputs, while the grid
    as a whole still holds the stated number of cells: a drift of a whole cell over a
    featureless stretch would make the cell count there unknowable, for any method.
    """
    k = np.arange(cells + 1)
    drift = np.zeros(cells + 1)
    for m in (1, 2, 3):  # sine modes that vanish at both frame edges
        drift += rng.uniform(-1, 1) * np.sin(np.pi * m * k / cells) / m
    # Scale so boundaries move at most half a cell and widths change at most `amount`.
    drift *= min(0.5 / max(np.abs(drift).max(), 1e-9), 0.9 * amount / max(np.abs(np.diff(drift)).max(), 1e-9))
    widths = 1.0 + np.diff(drift) + rng.uniform(-0.05, 0.05, cells)
    widths = np.clip(widths, 1 - amount, 1 + amount)
    return widths / widths.mean()


def cell_edges(cells: int, span: float, offset: float, widths: np.ndarray | None = None) -> np.ndarray:
    """The cells+1 boundary positions (pixels, float) of cells covering [offset, offset+span]."""
    w = np.ones(cells) if widths is None else np.asarray(widths, dtype=float)
    return offset + span * np.concatenate([[0.0], np.cumsum(w) / w.sum()])


def upscale(
    grid: np.ndarray,
    size: int,
    x_edges: np.ndarray | None = None,
    y_edges: np.ndarray | None = None,
    pad: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Paint a (cells, cells, 3) grid onto a size x size canvas with hard cell edges.

    A pixel takes the colour of the cell holding its centre; pixels outside the edges
    take ``pad``. Default edges fill the frame exactly (non-integer widths allowed).
    """
    cells = grid.shape[0]
    x_edges = cell_edges(cells, size, 0.0) if x_edges is None else x_edges
    y_edges = cell_edges(cells, size, 0.0) if y_edges is None else y_edges
    centres = np.arange(size) + 0.5
    cx = np.searchsorted(x_edges, centres, side="right") - 1
    cy = np.searchsorted(y_edges, centres, side="right") - 1
    inside = ((cy >= 0) & (cy < cells))[:, None] & ((cx >= 0) & (cx < cells))[None, :]
    out = grid[np.clip(cy, 0, cells - 1)[:, None], np.clip(cx, 0, cells - 1)[None, :]]
    out[~inside] = pad
    return out


def _distinct_colour(avoid: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour at least 80 (max-channel) away from `avoid`, for padding."""
    while True:
        c = rng.integers(0, 256, 3)
        if np.abs(c - avoid.astype(int)).max() >= 80:
            return tuple(int(v) for v in c)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _speckle(img: np.ndarray, sigma: float, impulse: float, rng: np.random.Generator) -> np.ndarray:
    out = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    hit = rng.random(img.shape[:2]) < impulse
    out[hit] = rng.integers(0, 256, (int(hit.sum()), 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def _drift(
    img: np.ndarray,
    amplitude: float,
    shade: float,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Low-frequency colour field over the frame plus a linear shade inside each cell."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w, 3), np.float32)
    for ch in range(3):
        fx, fy = rng.uniform(0.5, 2.0, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        field[..., ch] = (
            amplitude * np.sin(2 * np.pi * fx * xx / w + px) * np.cos(2 * np.pi * fy * yy / h + py)
        )
    cells = len(x_edges) - 1
    # Position inside the cell, -0.5..0.5, and a random shading direction per cell.
    cx = np.clip(np.searchsorted(x_edges, np.arange(w) + 0.5, side="right") - 1, 0, cells - 1)
    cy = np.clip(np.searchsorted(y_edges, np.arange(h) + 0.5, side="right") - 1, 0, cells - 1)
    ux = ((np.arange(w) + 0.5 - x_edges[cx]) / np.diff(x_edges)[cx] - 0.5).astype(np.float32)
    uy = ((np.arange(h) + 0.5 - y_edges[cy]) / np.diff(y_edges)[cy] - 0.5).astype(np.float32)
    gx, gy = rng.uniform(-1, 1, (2, cells, cells)).astype(np.float32)
    shading = shade * (
        gx[cy[:, None], cx[None, :]] * ux[None, :] + gy[cy[:, None], cx[None, :]] * uy[:, None]
    )
    out = img.astype(np.float32) + field + shading[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _smooth(grid: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Bicubic upscale from 2-4 px per cell: ramps a quarter to half a cell wide between
    flat cores, and the cubic kernel's negative lobes overshoot a few percent of each
    step (ringing), at 2 px per cell right into the cell's centre. (From 1 px per cell
    no cell has a flat core at all: that is a blurred picture, not soft pixel art.)"""
    m = int(rng.integers(2, 5))
    cells = grid.shape[0]
    small = Image.fromarray(grid).resize((cells * m, cells * m), Image.NEAREST)
    return np.asarray(small.resize((size, size), Image.BICUBIC))


def colour_field(shape: tuple[int, int], sd: float, corr: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 smooth random colour field, independent per channel: Gaussian
    autocorrelation that falls to 1/e at `corr` pixels; `sd` levels is the colour's rms
    deviation over its three channels together (sd / sqrt(3) per channel). At sd 10 and
    32 px the plain estimators score about as issue 26's table has them: the centre pixel
    ~0.92 of cells within 12 levels (0.891 there), PIL BOX's whole-cell mean ~0.98 (0.955).

    Texture inside cells, as VAE-decoded outputs show: it varies within a cell (unlike
    `_drift`'s frame-wide waves), so no small window at a cell's centre sees its mean.
    """
    h, w = shape
    # White noise smoothed on a grid a few times coarser than the grain, then
    # interpolated up: the field a full-size filter would give, for a fraction of the cost.
    step = max(1, int(corr // 8))
    gh, gw = -(-h // step) + 4, -(-w // step) + 4
    # Filtered white noise with Gaussian sigma s has autocorrelation exp(-r^2 / 4s^2).
    s = corr / 2 / step
    fy, fx = np.fft.fftfreq(gh)[:, None], np.fft.fftfreq(gw)[None, :]
    transfer = np.exp(-2 * (np.pi * s) ** 2 * (fx**2 + fy**2))
    noise = rng.standard_normal((3, gh, gw))
    coarse = np.real(np.fft.ifft2(np.fft.fft2(noise) * transfer)).astype(np.float32)
    fine = [Image.fromarray(c, "F").resize((gw * step, gh * step), Image.BICUBIC) for c in coarse]
    field = np.stack([np.asarray(f)[:h, :w] for f in fine], axis=-1)
    return field * (sd / np.sqrt(3) / max(float(field.std()), 1e-9))


def _textured(img: np.ndarray, sd: float, corr: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    out = np.clip(img.astype(np.float32) + colour_field(img.shape[:2], sd, corr, rng), 0, 255)
    out = np.round(out).astype(np.uint8)
    return _blur(out, blur) if blur > 0 else out


def _soft(grid: np.ndarray, defect: str, rng: np.random.Generator, size: int) -> np.ndarray | None:
    """The issue-26 classes (ISSUE26_CLASSES), each built on its own; None for the others.
    Lengths are given at 1024 px and scale with the size."""
    px = size / 1024
    cells = grid.shape[0]
    if defect in ("bicubic", "lanczos"):
        method = Image.BICUBIC if defect == "bicubic" else Image.LANCZOS
        return np.asarray(Image.fromarray(grid).resize((size, size), method))
    if defect == "texture":
        return _textured(upscale(grid, size), 10.0, 32.0 * px, 1.2 * px, rng)
    if defect == "texture_mix":
        sd, corr, blur = rng.uniform(6, 14), rng.uniform(12, 64) * px, rng.uniform(0.6, 2.0) * px
        return _textured(upscale(grid, size), sd, corr, blur, rng)
    if defect == "soft_texture":
        method = Image.BICUBIC if rng.random() < 0.5 else Image.LANCZOS
        img = np.asarray(Image.fromarray(grid).resize((size, size), method))
        sd, corr, blur = rng.uniform(4, 10), rng.uniform(16, 48) * px, rng.uniform(0.0, 1.5) * px
        return _textured(img, sd, corr, blur, rng)
    if defect in ("partial_blur", "padded_blur"):
        span = size * rng.uniform(0.84, 0.98)
        x_off, y_off = rng.uniform(0, size - span, 2)
        own = tuple(int(v) for v in grid[0, 0])
        pad = own if defect == "partial_blur" else _distinct_colour(grid[0, 0], rng)
        img = upscale(grid, size, cell_edges(cells, span, x_off), cell_edges(cells, span, y_off), pad)
        return _blur(img, 1.0 * px)
    return None


def _special(grid: np.ndarray, defect: str, rng: np.random.Generator, size: int) -> np.ndarray | None:
    """The issue-11 classes, each built on its own; None for the other classes."""
    cells = grid.shape[0]
    cell = size / cells
    if defect == "smooth":
        return _smooth(grid, size, rng)
    if defect == "noise_jpeg":
        img = _speckle(upscale(grid, size), rng.uniform(6, 16), rng.uniform(0.0, 0.01), rng)
        return _jpeg(img, int(rng.integers(25, 65)))
    if defect == "wander_blur":
        x_edges = cell_edges(cells, size, 0.0, wandering_widths(cells, rng))
        y_edges = cell_edges(cells, size, 0.0, wandering_widths(cells, rng))
        return _blur(upscale(grid, size, x_edges, y_edges), cell * rng.uniform(0.04, 0.1))
    if defect == "drift_blur":
        edges = cell_edges(cells, size, 0.0)
        img = _drift(upscale(grid, size), rng.uniform(4, 10), rng.uniform(0, 10), edges, edges, rng)
        return _blur(img, cell * rng.uniform(0.03, 0.08))
    if defect == "offset_partial":
        # The art's own background colour pads the frame, so no border shows where the
        # art ends: only the figure and the layout tell where the 24x24 window is.
        span = cells * rng.uniform(*OFFSET_PITCH_1024) * size / 1024
        x_off, y_off = rng.uniform(0, size - span, 2)
        pad = tuple(int(v) for v in grid[0, 0])
        img = upscale(grid, size, cell_edges(cells, span, x_off), cell_edges(cells, span, y_off), pad)
        return _blur(img, cell * rng.uniform(0.0, 0.03))
    return None


def apply_defect(grid: np.ndarray, defect: str, rng: np.random.Generator, size: int = 1024) -> Image.Image:
    """Upscale a (cells, cells, 3) uint8 grid to size x size with one defect class.

    Args:
        grid: the true cell colours.
        defect: one of ALL_CLASSES (DEFECT_CLASSES or ISSUE26_CLASSES).
        rng: source of every random choice (strengths, offsets, noise).
        size: output width and height in pixels.
    Returns:
        An RGB PIL image whose cells x cells content is `grid`.
    """
    if defect not in ALL_CLASSES:
        raise ValueError(f"unknown defect class {defect!r}; choose from {', '.join(ALL_CLASSES)}")
    special = _soft(grid, defect, rng, size)
    if special is None:
        special = _special(grid, defect, rng, size)
    if special is not None:
        return Image.fromarray(special)
    cells = grid.shape[0]
    combined = defect == "combined"
    span, x_off, y_off = float(size), 0.0, 0.0
    pad = (0, 0, 0)
    if defect in ("partial", "combined"):
        span = size * rng.uniform(0.85, 1.0)
        x_off, y_off = rng.uniform(0, size - span, 2)
        pad = _distinct_colour(grid[0, 0], rng)
    xw = yw = None
    if defect in ("wander", "combined"):
        xw, yw = wandering_widths(cells, rng), wandering_widths(cells, rng)
    x_edges = cell_edges(cells, span, x_off, xw)
    y_edges = cell_edges(cells, span, y_off, yw)
    img = upscale(grid, size, x_edges, y_edges, pad)
    cell = span / cells
    if defect in ("drift", "combined"):
        scale = 0.6 if combined else 1.0
        img = _drift(img, scale * rng.uniform(6, 15), scale * rng.uniform(6, 20), x_edges, y_edges, rng)
    if defect in ("blur", "combined"):
        img = _blur(img, cell * rng.uniform(0.02, 0.05 if combined else 0.08))
    if defect in ("speckle", "combined"):
        img = _speckle(
            img,
            rng.uniform(10, 25) if combined else rng.uniform(20, 40),
            rng.uniform(0.0, 0.02 if combined else 0.05),
            rng,
        )
    if defect in ("jpeg", "combined"):
        img = _jpeg(img, int(rng.integers(40, 80) if combined else rng.integers(20, 60)))
    return Image.fromarray(img)


def _shift(rng: np.random.Generator) -> tuple[int, int]:
    """A move of one or two cells in a random direction (one cell is the hard case:
    art placed a cell off the true window swaps true and false verdicts)."""
    while True:
        dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
        if (dx, dy) != (0, 0):
            return dx, dy


def _other(name: str, rng: np.random.Generator, names: list[str] | None = None) -> str:
    return str(rng.choice([n for n in (names or sorted(NAMED_COLORS)) if n != name]))


def claim_phrases(spec: PunkSpec, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(true, false) content claims about a portrait, in the seed prompts' phrasing.

    False claims move a stated position by a cell or two or change a stated colour.
    A moved claim can land on a cell that happens to be right (a pupil moved onto
    black hair), so callers keep the ones the checks judge as intended on the exact
    24x24 art; what remains measures how well recovery preserves the verdicts.
    """
    (px0, py0), (px1, py1) = spec.pupils
    (ix0, iy0), (ix1, iy1) = spec.irises
    b, (nx, ny) = spec.lips_box, spec.nose
    true = [
        f"{spec.background} solid background",
        f"black pupils fixed at ({px0},{py0}) and ({px1},{py1})",
        f"{spec.hair} hair starting at y={spec.hair_top} extending to y={spec.hair_bottom}",
        f"{spec.iris} iris eyes at ({ix0},{iy0}) and ({ix1},{iy1})",
        f"black nose dot at ({nx},{ny})",
        f"{spec.lips} lips spanning x={b.x0}-{b.x1} y={b.y0}-{b.y1}",
        f"{spec.skin} skin tone with jaw defined at y={spec.jaw_y}",
    ]
    (dx, dy), (ex, ey), (lx, ly) = _shift(rng), _shift(rng), _shift(rng)
    top, bottom = spec.hair_top + int(rng.choice([-2, -1, 1, 2])), spec.hair_bottom + int(rng.choice([-1, 1]))
    false = [
        f"{_other(spec.background, rng)} solid background",
        f"black pupils fixed at ({px0 + dx},{py0 + dy}) and ({px1 + dx},{py1 + dy})",
        f"{spec.hair} hair starting at y={top} extending to y={bottom}",
        f"{_other(spec.iris, rng)} iris eyes at ({ix0},{iy0}) and ({ix1},{iy1})",
        f"black nose dot at ({nx + ex},{ny + ey})",
        f"{spec.lips} lips spanning x={b.x0 + lx}-{b.x1 + lx} y={b.y0 + ly}-{b.y1 + ly}",
        f"{_other(spec.skin, rng, sorted(SKIN_TONES))} skin tone with jaw defined at y={spec.jaw_y + 2}",
    ]
    if spec.collar is not None:
        r0, r1 = spec.collar_rows
        true.append(f"{spec.collar} collar spanning x=6-17 y={r0}-{r1}")
        false.append(f"{spec.collar} collar spanning x=6-17 y={r0 - 2}-{r1 - 2}")
    else:
        false.append(f"{_other(spec.background, rng)} collar spanning x=6-17 y=20-22")
    return true, false
