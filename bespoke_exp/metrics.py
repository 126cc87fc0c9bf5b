"""Pixel-art metrics and prompt checks for one generated picture, and their aggregates.

    >>> ev = evaluate(Image.open("sample.png"), prompt_text, weights={"adherence/pass_rate": 1.0})
    >>> ev.metrics["grid/purity"], ev.metrics["score"], [c.name for c in ev.checks if not c.passed]

Pure numpy + scikit-image: arrays or PIL images in, numbers out. Colour science
(sRGB -> CIELAB D65, CIEDE2000) comes from `skimage.color`. Every metric is declared
once in `METRICS` (direction, aggregation, the range used to turn it into a 0..1
utility for the composite score); ranking code reads direction from there.
Definitions: shared/reference/pixel-metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.measure import label as label_components

from bespoke_exp.colors import COLOR_MODIFIERS, PROTOTYPES, SKIN_TONES
from bespoke_exp.pixels import GridFit, as_rgb_array, cell_samples, edge_alignment, fit_grid, recover_cells
from bespoke_exp.prompt_spec import (
    Background,
    Box,
    BoxFill,
    BoxOutline,
    Dot,
    Expectation,
    Extent,
    Facing,
    GridSize,
    Jaw,
    PixelArt,
    RegionColor,
    Unchecked,
    merge_expectations,
    parse_phrase,
    parse_prompt,
)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MetricSpec:
    """How to read and combine one metric. `best`/`worst` map it onto a 0..1 utility."""

    key: str
    higher_is_better: bool
    aggregation: str  # "mean" | "min" | "max" | "median"
    description: str
    best: float = 1.0
    worst: float = 0.0


METRICS: dict[str, MetricSpec] = {
    m.key: m
    for m in [
        MetricSpec("grid/r2", True, "mean", "variance (Lab) explained by flat cells of the fitted grid"),
        MetricSpec("grid/purity", True, "mean", "share of central cell pixels within dE 3 of their cell's colour"),
        MetricSpec("grid/pure_cells", True, "mean", "share of cells with purity >= 0.95"),
        MetricSpec("grid/edge_alignment", True, "mean", "share of edge strength within 1 working px of fitted boundaries"),
        MetricSpec("grid/aa_width", False, "mean", "mean intermediate-colour pixels across strong cell edges (px)", 0.0, 16.0),
        MetricSpec("grid/aa_cells", False, "mean", "grid/aa_width in cell widths (resolution independent)", 0.0, 0.5),
        MetricSpec("palette/colors", False, "mean", "colour clusters in the 24x24 after merging within dE 3", 4.0, 64.0),
        MetricSpec("palette/off_palette_rate", False, "mean", "share of cells farther than dE 5 from the reference palette", 0.0, 1.0),
        MetricSpec("palette/shade_flicker", False, "mean", "share of adjacent cell pairs differing by only dE 2-4", 0.0, 0.5),
        MetricSpec("adherence/pass_rate", True, "mean", "share of prompt checks passed (strict)"),
        MetricSpec("adherence/pass_rate_tol", True, "mean", "share of prompt checks passed with +-1 cell tolerance"),
        MetricSpec("adherence/all_pass", True, "mean", "1 if every prompt check passed (strict)"),
        MetricSpec("adherence/all_pass_tol", True, "mean", "1 if every prompt check passed with +-1 cell tolerance"),
        MetricSpec("adherence/unchecked", False, "mean", "prompt phrases naming a feature that could not be checked", 0.0, 5.0),
        MetricSpec("ref/exact", True, "mean", "share of cells with the reference's colour name"),
        MetricSpec("ref/near", True, "mean", "share of cells within dE 2 of the reference"),
        MetricSpec("score", True, "mean", "weighted mean of metric utilities (weights: conf/metrics)"),
        MetricSpec("memorisation/nearest_match", False, "mean", "share of cells matching the closest training image"),
        MetricSpec("memorisation/near_copy", False, "mean", "1 if the image near-copies a training image"),
        # Per-check pass rates that aggregate() adds, one key per check name.
        MetricSpec("check/*", True, "mean", "share of images passing this check (strict)"),
    ]
}


def metric_spec(key: str) -> MetricSpec:
    """The spec of a metric key, including the per-check pattern `check/*`."""
    if key in METRICS:
        return METRICS[key]
    if key.startswith("check/"):
        return METRICS["check/*"]
    raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRICS)}")


def utility(key: str, value: float) -> float:
    """A metric mapped onto 0 (worst) .. 1 (best) using its registry range."""
    spec = metric_spec(key)
    u = (value - spec.worst) / (spec.best - spec.worst)
    return float(np.clip(u, 0.0, 1.0))


def composite_score(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted mean of utilities over the weighted metrics present in `metrics`.

    A weight naming an unknown metric is a config error (ValueError naming it); a known
    metric absent from this image (e.g. `ref/*` without a reference) is left out and
    the remaining weights renormalised.
    """
    total = acc = 0.0
    for key, w in weights.items():
        try:
            metric_spec(key)
        except KeyError as err:
            raise ValueError(f"metrics weight for unknown metric {key!r}; known: {', '.join(METRICS)}") from err
        if w and key in metrics and np.isfinite(metrics[key]):
            acc += float(w) * utility(key, metrics[key])
            total += float(w)
    return acc / total if total > 0 else 0.0


# --------------------------------------------------------------------------- results
@dataclass
class Check:
    """One prompt constraint's verdict. Unchecked phrases have checked=False, passed=False."""

    name: str
    passed: bool
    detail: str
    passed_tolerant: bool = False
    checked: bool = True
    phrase: str = ""

    @property
    def key(self) -> str:
        """MLflow-safe metric key for this check (`pupils@(8,12)` -> `check/pupils_8_12`)."""
        safe = "".join(c if c.isalnum() else "_" for c in self.name)
        return "check/" + "_".join(p for p in safe.split("_") if p)


@dataclass
class Evaluation:
    """Metrics and checks of one image against one prompt; `grid` is the recovered cells."""

    metrics: dict[str, float]
    checks: list[Check]
    grid: np.ndarray = field(repr=False)
    fit: GridFit | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- colour
_PROTO_NAMES = list(PROTOTYPES)
_PROTO_LAB = rgb2lab(np.array(list(PROTOTYPES.values()), dtype=np.uint8)[None])[0]


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of uint8 sRGB values, any leading shape."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    flat = rgb.reshape(-1, 1, 3)
    return rgb2lab(flat).reshape(rgb.shape[:-1] + (3,))


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 with numpy broadcasting (skimage wants equal-rank inputs)."""
    a, b = np.broadcast_arrays(np.asarray(lab1, float), np.asarray(lab2, float))
    return deltaE_ciede2000(a, b)


def name_colors(lab: np.ndarray) -> np.ndarray:
    """Nearest prototype name (colors.PROTOTYPES, CIEDE2000) for each Lab colour."""
    d = delta_e(lab[..., None, :], _PROTO_LAB)
    return np.array(_PROTO_NAMES, dtype=object)[np.argmin(d, axis=-1)]


def _modifier_ok(lab: np.ndarray, modifier: str | None) -> np.ndarray:
    """Whether Lab colours satisfy a colour modifier (light, dark, vibrant...)."""
    if not modifier or modifier not in COLOR_MODIFIERS:
        return np.ones(lab.shape[:-1], bool)
    channel, op, threshold = COLOR_MODIFIERS[modifier]
    value = lab[..., 0] if channel == "L" else np.hypot(lab[..., 1], lab[..., 2])
    return value >= threshold if op == ">=" else value <= threshold


def load_palette(source: str | Sequence | np.ndarray | None = "demo", cells: int = 24) -> np.ndarray:
    """Reference palette as (K, 3) uint8 sRGB.

    Args:
        source: "demo" (the punk generator's colours), a folder of training images
            (colours of their recovered cells x cells grids), a sequence of colour
            names / "#rrggbb" strings / RGB triples, or an array.
    """
    if source is None or (isinstance(source, str) and source == "demo"):
        return np.array(list(PROTOTYPES.values()), dtype=np.uint8)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"palette {str(source)!r} is neither 'demo' nor a folder of images")
        colours = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"}:
                arr = as_rgb_array(Image.open(path))
                grid = arr if arr.shape[:2] == (cells, cells) else recover_cells(arr, fit_grid(arr, cells))
                colours.append(grid.reshape(-1, 3))
        if not colours:
            raise ValueError(f"palette folder {str(source)!r} holds no images")
        return np.unique(np.concatenate(colours), axis=0)
    out = []
    for item in source:
        if isinstance(item, str):
            if item.startswith("#") and len(item) == 7:
                out.append(tuple(int(item[i : i + 2], 16) for i in (1, 3, 5)))
            elif item in PROTOTYPES:
                out.append(PROTOTYPES[item])
            else:
                raise ValueError(f"palette entry {item!r} is not a colour name or #rrggbb")
        else:
            out.append(tuple(int(v) for v in item))
    return np.array(out, dtype=np.uint8).reshape(-1, 3)


# --------------------------------------------------------------------------- grid metrics
def _grid_r2(arr: np.ndarray, fit: GridFit) -> float:
    """1 - within-cell / total squared Lab deviation, on a pixel subsample of the art."""
    step = max(1, min(arr.shape[:2]) // 128)  # ~16k pixels: Lab conversion dominates the cost
    ys, xs = np.arange(0, arr.shape[0], step) + step // 2, np.arange(0, arr.shape[1], step) + step // 2
    ys, xs = ys[ys < arr.shape[0]], xs[xs < arr.shape[1]]
    cy = np.searchsorted(fit.y, ys + 0.5, side="right") - 1
    cx = np.searchsorted(fit.x, xs + 0.5, side="right") - 1
    ry, rx = (cy >= 0) & (cy < fit.cells), (cx >= 0) & (cx < fit.cells)
    if not ry.any() or not rx.any():
        return 0.0
    lab = to_lab(arr[ys[ry]][:, xs[rx]]).reshape(-1, 3)
    idx = (cy[ry][:, None] * fit.cells + cx[rx][None, :]).ravel()
    n = np.bincount(idx, minlength=fit.cells**2).astype(float)
    within = 0.0
    for ch in range(3):
        s = np.bincount(idx, lab[:, ch], minlength=fit.cells**2)
        mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
        within += float(((lab[:, ch] - mean[idx]) ** 2).sum())
    total = float(((lab - lab.mean(axis=0)) ** 2).sum())
    return 1.0 - within / total if total > 1e-9 else 1.0


def _purity(arr: np.ndarray, fit: GridFit, grid_lab: np.ndarray) -> tuple[float, float]:
    """(share of central pixels within dE 3 of their cell, share of cells >= 0.95 pure)."""
    samples = cell_samples(arr, fit, k=4)  # 16 per cell keeps CIEDE2000 affordable
    lab = to_lab(samples)
    d = delta_e(lab, grid_lab[:, :, None, :])
    ok = d <= 3.0
    per_cell = ok.mean(axis=2)
    return float(ok.mean()), float((per_cell >= 0.95).mean())


def _aa_width(arr: np.ndarray, fit: GridFit, grid_lab: np.ndarray, max_pairs: int = 48) -> float:
    """Mean count of intermediate-colour pixels across edges between cells >= dE 20 apart.

    A pixel is intermediate when its projection onto the segment between the two cell
    colours (Lab) falls in 0.2..0.8: speckle off that line doesn't count. Each profile
    is the median of 5 parallel pixel lines through the cells' middles.
    """
    counts = []
    cells = fit.cells
    for axis in (1, 0):  # 1: horizontal neighbours (vertical edges), 0: vertical neighbours
        a = grid_lab[:, :-1] if axis == 1 else grid_lab[:-1, :]
        b = grid_lab[:, 1:] if axis == 1 else grid_lab[1:, :]
        strong = np.argwhere(delta_e(a, b) >= 20.0)
        if len(strong) == 0:
            continue
        strong = strong[np.linspace(0, len(strong) - 1, min(max_pairs, len(strong))).astype(int)]
        along = fit.x if axis == 1 else fit.y
        across = fit.y if axis == 1 else fit.x
        limit_along = arr.shape[1] if axis == 1 else arr.shape[0]
        limit_across = arr.shape[0] if axis == 1 else arr.shape[1]
        for r, c in strong:
            k, m = (c, r) if axis == 1 else (r, c)  # k: index along, m: index across
            start = int((along[k] + along[k + 1]) / 2)
            stop = int((along[k + 1] + along[k + 2]) / 2) if k + 2 <= cells else int(along[k + 1])
            mid = (across[m] + across[m + 1]) / 2
            lines = np.clip(np.round(mid + np.array([-2, -1, 0, 1, 2])).astype(int), 0, limit_across - 1)
            seg = np.arange(max(0, start), min(stop, limit_along))
            if len(seg) < 2:
                continue
            px = arr[lines][:, seg] if axis == 1 else arr[seg][:, lines].transpose(1, 0, 2)
            counts.append((np.median(px, axis=0), a[r, c], b[r, c]))
    if not counts:
        return 0.0
    lengths = [len(p) for p, _, _ in counts]
    lab = to_lab(np.concatenate([p for p, _, _ in counts]).astype(np.uint8))
    out, i = [], 0
    for (_, ca, cb), n in zip(counts, lengths):
        seg = lab[i : i + n]
        i += n
        v = cb - ca
        t = ((seg - ca) @ v) / max(float(v @ v), 1e-9)
        out.append(float(((t > 0.2) & (t < 0.8)).sum()))
    return float(np.mean(out))


# --------------------------------------------------------------------------- palette metrics
def _count_colors(lab: np.ndarray, threshold: float = 3.0, max_leaders: int = 48) -> float:
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


def _shade_flicker(grid_lab: np.ndarray) -> float:
    d = np.concatenate([
        delta_e(grid_lab[:, :-1], grid_lab[:, 1:]).ravel(),
        delta_e(grid_lab[:-1, :], grid_lab[1:, :]).ravel(),
    ])
    return float(((d > 2.0) & (d < 4.0)).mean())


# --------------------------------------------------------------------------- prompt checks
@dataclass
class _Scene:
    """Everything a check reads: cell names and Lab, background, claimed cells."""

    names: np.ndarray  # (cells, cells) prototype names
    lab: np.ndarray
    cells: int
    background: str
    claimed: np.ndarray  # cells that a point/box constraint of this prompt owns
    skin: str | None
    regions: Mapping[str, tuple[list[Box], float]]
    pass_share: float
    tolerance: int
    grid_metrics: Mapping[str, float]


def _ring(cells: int) -> np.ndarray:
    ring = np.zeros((cells, cells), bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    return ring


def _matches(scene: _Scene, color: str, modifier: str | None) -> np.ndarray:
    return (scene.names == color) & _modifier_ok(scene.lab, modifier)


def _shifts(tol: int) -> list[tuple[int, int]]:
    return [(dx, dy) for dy in range(-tol, tol + 1) for dx in range(-tol, tol + 1)]


def _share(mask: np.ndarray, cells_xy: Iterable[tuple[int, int]], dx: int = 0, dy: int = 0) -> float:
    n = mask.shape[0]
    vals = [mask[y + dy, x + dx] if 0 <= x + dx < n and 0 <= y + dy < n else False for x, y in cells_xy]
    return float(np.mean(vals)) if vals else 0.0


# Thresholds of the style checks. r2 0.3 tolerates heavy speckle on flat cells (noise
# scores ~0); an anti-aliased band wider than a quarter cell is visible blur.
_MIN_R2 = 0.3
_MAX_AA_CELLS = 0.25
_MIN_ALIGNMENT = 0.6


def _check(scene: _Scene, e: Expectation) -> Check:
    """The verdict on one expectation."""
    names, tol = scene.names, scene.tolerance
    if isinstance(e, Unchecked):
        return Check(e.name, False, e.reason, checked=False, phrase=e.phrase)
    if isinstance(e, Dot):
        mask = _matches(scene, e.color, e.modifier)
        x, y = e.cell
        strict = bool(mask[y, x])
        near = [(x + dx, y + dy) for dx, dy in _shifts(tol) if 0 <= x + dx < scene.cells and 0 <= y + dy < scene.cells]
        tolerant = any(mask[cy, cx] for cx, cy in near)
        return Check(e.name, strict, f"cell ({x},{y}) is {names[y, x]}, want {e.color}", tolerant, phrase=e.phrase)
    if isinstance(e, (BoxFill, BoxOutline)):
        cells_xy = e.box.cells() if isinstance(e, BoxFill) else e.box.outline()
        color = e.color
        if color is None:  # uncoloured frame: its most common name, if not the background's
            found, counts = np.unique([names[y, x] for x, y in cells_xy], return_counts=True)
            color = str(found[np.argmax(counts)])
            if color == scene.background:
                return Check(e.name, False, f"frame {e.box} shows only background ({color})", False, phrase=e.phrase)
        mask = _matches(scene, color, e.modifier)
        strict = _share(mask, cells_xy)
        tolerant = max(_share(mask, cells_xy, dx, dy) for dx, dy in _shifts(tol))
        return Check(e.name, strict >= scene.pass_share, f"{strict:.0%} of {e.box} is {color}",
                     tolerant >= scene.pass_share, phrase=e.phrase)
    if isinstance(e, Extent):
        # Connected patches of the colour, less cells other constraints own (black
        # pupils inside black hair); the patch whose rows overlap the stated rows most.
        mask = _matches(scene, e.color, e.modifier) & ~scene.claimed
        comp = label_components(mask, connectivity=1)
        best, best_iou = None, 0.0
        for k in range(1, comp.max() + 1):
            rows = np.nonzero((comp == k).any(axis=1))[0]
            top, bottom = int(rows.min()), int(rows.max())
            inter = max(0, min(bottom, e.y1) - max(top, e.y0) + 1)
            iou = inter / (max(bottom, e.y1) - min(top, e.y0) + 1)
            if iou > best_iou:
                best, best_iou = (top, bottom), iou
        if best is None:
            return Check(e.name, False, f"no {e.color} patch overlaps y={e.y0}-{e.y1}", False, phrase=e.phrase)
        top, bottom = best
        strict = top == e.y0 and bottom == e.y1
        tolerant = abs(top - e.y0) <= tol and abs(bottom - e.y1) <= tol
        return Check(e.name, strict, f"{e.color} {e.feature} spans y={top}-{bottom}", tolerant, phrase=e.phrase)
    if isinstance(e, RegionColor):
        if e.feature not in scene.regions:
            return Check(e.name, False, f"no region configured for {e.feature!r}", checked=False, phrase=e.phrase)
        boxes, min_share = scene.regions[e.feature]
        mask = _matches(scene, e.color, e.modifier)

        def region_ok(dx: int, dy: int) -> tuple[bool, float]:
            shares = [_share(mask, b.cells(), dx, dy) for b in boxes]
            ok = all(s > 0 for s in shares) if min_share <= 0 else float(np.mean(shares)) >= min_share
            return ok, float(np.mean(shares))

        strict, share = region_ok(0, 0)
        tolerant = any(region_ok(dx, dy)[0] for dx, dy in _shifts(tol))
        return Check(e.name, strict, f"{share:.0%} of the {e.feature} region is {e.color}", tolerant, phrase=e.phrase)
    if isinstance(e, Background):
        ring = _ring(scene.cells)
        ring_names = names[ring]
        share = float(np.mean(ring_names == scene.background))
        flat = float(np.mean(delta_e(scene.lab[ring], np.median(scene.lab[ring], axis=0)) <= 3.0))
        ok = scene.background == e.color and bool(_modifier_ok(np.median(scene.lab[ring], axis=0), e.modifier))
        ok = ok and (share >= scene.pass_share if e.solid else True)
        detail = f"ring is {share:.0%} {scene.background} ({flat:.0%} within dE 3 of its median), want {e.color}"
        return Check(e.name, ok, detail, ok, phrase=e.phrase)
    if isinstance(e, Jaw):
        if scene.skin is None:
            return Check(e.name, False, "no skin colour found", False, phrase=e.phrase)
        widths = (names == scene.skin).sum(axis=1)
        rows = np.nonzero(widths)[0]
        if len(rows) == 0:
            return Check(e.name, False, f"no {scene.skin} cells", False, phrase=e.phrase)
        neck = widths[rows.max()]
        wider = np.nonzero(widths > neck)[0]
        jaw = int(wider.max()) if len(wider) else -1
        return Check(e.name, jaw == e.y, f"head wider than neck down to y={jaw}", abs(jaw - e.y) <= tol,
                     phrase=e.phrase)
    if isinstance(e, Facing):
        fg = names != scene.background
        skin = (names == scene.skin) if scene.skin else np.zeros_like(fg)
        if skin.sum() < 3 or fg.sum() < 3:
            return Check(e.name, False, "no face found", False, phrase=e.phrase)
        xs = np.arange(scene.cells)[None, :]
        lean = float((xs * skin).sum() / skin.sum() - (xs * fg).sum() / fg.sum())  # + when the face is right
        ok = lean > 0.2 if e.direction == "right" else lean < -0.2
        return Check(e.name, ok, f"face centre is {lean:+.2f} cells right of the figure's", ok, phrase=e.phrase)
    if isinstance(e, PixelArt):
        aa, r2 = scene.grid_metrics["grid/aa_cells"], scene.grid_metrics["grid/r2"]
        ok = aa <= _MAX_AA_CELLS and r2 >= _MIN_R2
        return Check(e.name, ok, f"anti-aliasing {aa:.2f} cell wide (<= {_MAX_AA_CELLS}), r2 {r2:.2f} (>= {_MIN_R2})", ok,
                     phrase=e.phrase)
    if isinstance(e, GridSize):
        r2, align = scene.grid_metrics["grid/r2"], scene.grid_metrics["grid/edge_alignment"]
        ok = r2 >= _MIN_R2 and align >= _MIN_ALIGNMENT
        return Check(e.name, ok, f"{scene.cells}x{scene.cells} fit: r2 {r2:.2f} (>= {_MIN_R2}), edges on grid "
                     f"{align:.0%} (>= {_MIN_ALIGNMENT:.0%})", ok, phrase=e.phrase)
    raise TypeError(f"no check for {type(e).__name__}")  # pragma: no cover


DEFAULT_REGIONS: dict[str, str | tuple[str, float]] = {
    # Feature regions of the 24x24 punk layout, for features stated without coordinates.
    # "x=a-b y=c-d; ..." boxes, and the share of region cells that must match
    # (0 = each box needs at least one matching cell, for small features like eyes).
    "hair": ("x=5-6 y=4-11; x=7-15 y=4-6", 0.6),
    "eyes": ("x=8-10 y=11-13; x=13-15 y=11-13", 0.0),
    "iris": ("x=8-10 y=11-13; x=13-15 y=11-13", 0.0),
    "pupils": ("x=7-9 y=11-13; x=12-14 y=11-13", 0.0),
    "skin": ("x=7-16 y=7-9; x=14-16 y=15-17", 0.6),
    "lips": ("x=10-13 y=15-16", 0.6),
    "collar": ("x=6-8 y=20-22; x=15-17 y=20-22", 0.6),
    "glasses": ("x=6-17 y=10-14", 0.0),
}


def parse_regions(regions: Mapping[str, object] | None) -> dict[str, tuple[list[Box], float]]:
    """Region config ({feature: "x=a-b y=c-d; ..."} or {feature: {boxes, min_share}}) to boxes."""
    import re

    out = {}
    for feature, spec in {**DEFAULT_REGIONS, **(regions or {})}.items():
        if isinstance(spec, Mapping):
            text, min_share = spec["boxes"], float(spec.get("min_share", 0.6))
        elif isinstance(spec, (tuple, list)):
            text, min_share = spec[0], float(spec[1])
        else:
            text, min_share = str(spec), 0.6
        boxes = []
        for part in str(text).split(";"):
            m = re.fullmatch(r"\s*x=(\d+)-(\d+)\s+y=(\d+)-(\d+)\s*", part)
            if not m:
                raise ValueError(f"region {feature!r}: can't read box {part.strip()!r}; write 'x=a-b y=c-d'")
            x0, x1, y0, y1 = map(int, m.groups())
            boxes.append(Box(x0, x1, y0, y1))
        out[feature] = (boxes, min_share)
    return out


# --------------------------------------------------------------------------- evaluate
def evaluate(
    image: Image.Image | np.ndarray,
    prompt: str,
    *,
    cells: int = 24,
    expectations: Sequence[Expectation | str] | None = None,
    palette: str | Sequence | np.ndarray | None = "demo",
    weights: Mapping[str, float] | None = None,
    reference: Image.Image | np.ndarray | None = None,
    regions: Mapping[str, object] | None = None,
    tolerance: int = 1,
    pass_share: float = 0.75,
) -> Evaluation:
    """Metrics and prompt checks for one generated picture.

    Args:
        image: the picture (PIL or HxWx3 array), any size; a cells x cells image is
            taken as already recovered.
        prompt: the prompt text; expectations are parsed from it.
        expectations: extra expectations (objects, or phrases in the prompt language);
            one with the same name as a parsed one replaces it.
        palette: reference palette for palette/off_palette_rate (see load_palette).
        weights: composite-score weights by metric key; adds `score` when given.
        reference: optional target cells x cells image; adds ref/exact and ref/near.
        regions: feature regions overriding DEFAULT_REGIONS.
        tolerance: cells of slack for the tolerant verdicts.
        pass_share: share of a box/region that must match for a pass.
    Returns:
        Evaluation with finite metrics, one Check per expectation, the recovered grid.
    """
    arr = as_rgb_array(image)
    if arr.shape[0] < 2 or arr.shape[1] < 2:  # degenerate input: treat as one flat colour
        arr = np.repeat(np.repeat(arr[:1, :1], cells, 0), cells, 1)
    fit = fit_grid(arr, cells) if arr.shape[:2] != (cells, cells) else GridFit(
        np.arange(cells + 1.0), np.arange(cells + 1.0), cells, cells)
    grid = recover_cells(arr, fit)
    grid_lab = to_lab(grid)
    names = name_colors(grid_lab)

    m: dict[str, float] = {}
    m["grid/r2"] = _grid_r2(arr, fit)
    m["grid/purity"], m["grid/pure_cells"] = _purity(arr, fit, grid_lab)
    m["grid/edge_alignment"] = edge_alignment(fit) if fit.x_edges is not None else 1.0
    m["grid/aa_width"] = _aa_width(arr, fit, grid_lab)
    m["grid/aa_cells"] = m["grid/aa_width"] / max(fit.cell_size, 1e-9)
    m["palette/colors"] = _count_colors(grid_lab)
    pal_lab = to_lab(load_palette(palette, cells))
    d = delta_e(grid_lab[..., None, :], pal_lab)
    m["palette/off_palette_rate"] = float((d.min(axis=-1) > 5.0).mean())
    m["palette/shade_flicker"] = _shade_flicker(grid_lab)

    parsed = parse_prompt(prompt, cells)
    exps = list(parsed.expectations)
    exps += [Unchecked(err, reason=err) for err in parsed.errors]
    if expectations:
        extra: list[Expectation] = []
        for item in expectations:
            if isinstance(item, str):
                found, errors, _ = parse_phrase(item, cells)
                extra += found + [Unchecked(err, reason=err) for err in errors]
            else:
                extra.append(item)
        exps = merge_expectations(exps, extra)

    ring_names, ring_counts = np.unique(names[_ring(cells)], return_counts=True)
    background = str(ring_names[np.argmax(ring_counts)])
    claimed = np.zeros((cells, cells), bool)
    skin = None
    region_boxes = parse_regions(regions)
    for e in exps:
        if isinstance(e, Dot):
            claimed[e.cell[1], e.cell[0]] = True
        elif isinstance(e, BoxFill):
            for x, y in e.box.cells():
                claimed[y, x] = True
        elif isinstance(e, BoxOutline):
            for x, y in e.box.outline():
                claimed[y, x] = True
        elif isinstance(e, RegionColor) and e.feature == "skin":
            skin = e.color
    if skin is None:  # no skin tone stated: the most common skin-like name in the skin region
        boxes, _ = region_boxes.get("skin", ([], 0.0))
        found = [names[y, x] for b in boxes for x, y in b.cells() if names[y, x] != background]
        tones = {("tan" if t == "tan" else f"{t} skin") for t in SKIN_TONES}
        found = [f for f in found if f in tones] or found
        if found:
            values, counts = np.unique(found, return_counts=True)
            skin = str(values[np.argmax(counts)])
    scene = _Scene(names, grid_lab, cells, background, claimed, skin, region_boxes, pass_share, tolerance, m)
    checks = [_check(scene, e) for e in exps]

    scored = [c for c in checks if c.checked]
    if scored:
        m["adherence/pass_rate"] = float(np.mean([c.passed for c in scored]))
        m["adherence/pass_rate_tol"] = float(np.mean([c.passed_tolerant for c in scored]))
        m["adherence/all_pass"] = float(all(c.passed for c in scored))
        m["adherence/all_pass_tol"] = float(all(c.passed_tolerant for c in scored))
    m["adherence/unchecked"] = float(sum(not c.checked for c in checks))

    if reference is not None:
        ref = as_rgb_array(reference)
        if ref.shape[:2] != (cells, cells):
            ref = np.asarray(recover_grid_array(ref, cells))
        ref_lab = to_lab(ref)
        m["ref/exact"] = float((name_colors(ref_lab) == names).mean())
        m["ref/near"] = float((delta_e(ref_lab, grid_lab) <= 2.0).mean())

    m = {k: float(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)) for k, v in m.items()}
    if weights is not None:
        m["score"] = composite_score(m, weights)
    return Evaluation(metrics=m, checks=checks, grid=grid, fit=fit)


def recover_grid_array(arr: np.ndarray, cells: int) -> np.ndarray:
    return recover_cells(arr, fit_grid(arr, cells))


def aggregate(evaluations: Iterable[Evaluation]) -> dict[str, float]:
    """Per-set aggregates: each metric by its registry aggregation, plus each check's
    strict pass rate as `check/<name>`. Metrics absent from some images (ref/*) are
    aggregated over the images that have them."""
    evals = list(evaluations)
    values: dict[str, list[float]] = {}
    for ev in evals:
        for k, v in ev.metrics.items():
            values.setdefault(k, []).append(v)
        for c in ev.checks:
            if c.checked:
                values.setdefault(c.key, []).append(float(c.passed))
    reducers = {"mean": np.mean, "min": np.min, "max": np.max, "median": np.median}
    return {k: float(reducers[metric_spec(k).aggregation](v)) for k, v in values.items()}


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
