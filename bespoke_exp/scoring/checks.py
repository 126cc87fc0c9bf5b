"""Prompt checks: one verdict per expectation parsed from the prompt.

Content checks (background, dots, boxes, extents, regions, jaw, facing) judge the
recovered cells only, so a soft but correct portrait still passes "orange solid
background"; the style checks (`pixel_art`, `grid`) judge crispness from the `grid/*`
metrics. One function per expectation type, found through `CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from skimage.measure import label as label_components

from bespoke_exp.pixelart.colors import delta_e, modifier_ok
from bespoke_exp.scoring.expectations import (
    Background,
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
)
from bespoke_exp.scoring.regions import Regions

# Thresholds of the style checks. r2 0.3 tolerates heavy speckle on flat cells (noise
# scores ~0); an anti-aliased band wider than a quarter cell is visible blur.
MIN_R2 = 0.3
MAX_AA_CELLS = 0.25
MIN_ALIGNMENT = 0.6


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
class Scene:
    """Everything a check reads: cell names and Lab, background, claimed cells."""

    names: np.ndarray  # (cells, cells) prototype names
    lab: np.ndarray
    cells: int
    background: str
    claimed: np.ndarray  # cells that a point/box constraint of this prompt owns
    skin: str | None
    regions: Regions
    pass_share: float
    tolerance: int
    grid_metrics: Mapping[str, float]


def ring(cells: int) -> np.ndarray:
    """The outer ring of cells, where the background shows."""
    mask = np.zeros((cells, cells), bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def _matches(scene: Scene, color: str, modifier: str | None) -> np.ndarray:
    return (scene.names == color) & modifier_ok(scene.lab, modifier)


def _shifts(tol: int) -> list[tuple[int, int]]:
    return [(dx, dy) for dy in range(-tol, tol + 1) for dx in range(-tol, tol + 1)]


def _share(mask: np.ndarray, cells_xy: Iterable[tuple[int, int]], dx: int = 0, dy: int = 0) -> float:
    n = mask.shape[0]
    vals = [mask[y + dy, x + dx] if 0 <= x + dx < n and 0 <= y + dy < n else False for x, y in cells_xy]
    return float(np.mean(vals)) if vals else 0.0


def _unchecked(scene: Scene, e: Unchecked) -> Check:
    return Check(e.name, False, e.reason, checked=False, phrase=e.phrase)


def _dot(scene: Scene, e: Dot) -> Check:
    mask = _matches(scene, e.color, e.modifier)
    x, y = e.cell
    near = [
        (x + dx, y + dy)
        for dx, dy in _shifts(scene.tolerance)
        if 0 <= x + dx < scene.cells and 0 <= y + dy < scene.cells
    ]
    tolerant = any(mask[cy, cx] for cx, cy in near)
    return Check(
        e.name,
        bool(mask[y, x]),
        f"cell ({x},{y}) is {scene.names[y, x]}, want {e.color}",
        tolerant,
        phrase=e.phrase,
    )


def _box(scene: Scene, e: BoxFill | BoxOutline) -> Check:
    cells_xy = e.covered()
    color = e.color
    if color is None:  # uncoloured frame: its most common name, if not the background's
        found, counts = np.unique([scene.names[y, x] for x, y in cells_xy], return_counts=True)
        color = str(found[np.argmax(counts)])
        if color == scene.background:
            return Check(
                e.name, False, f"frame {e.box} shows only background ({color})", False, phrase=e.phrase
            )
    mask = _matches(scene, color, e.modifier)
    strict = _share(mask, cells_xy)
    tolerant = max(_share(mask, cells_xy, dx, dy) for dx, dy in _shifts(scene.tolerance))
    return Check(
        e.name,
        strict >= scene.pass_share,
        f"{strict:.0%} of {e.box} is {color}",
        tolerant >= scene.pass_share,
        phrase=e.phrase,
    )


def _extent(scene: Scene, e: Extent) -> Check:
    # Connected patches of the colour, less cells other constraints own (black pupils
    # inside black hair); the patch whose rows overlap the stated rows most.
    mask = _matches(scene, e.color, e.modifier) & ~scene.claimed
    components = label_components(mask, connectivity=1)
    best, best_iou = None, 0.0
    for k in range(1, components.max() + 1):
        rows = np.nonzero((components == k).any(axis=1))[0]
        top, bottom = int(rows.min()), int(rows.max())
        inter = max(0, min(bottom, e.y1) - max(top, e.y0) + 1)
        iou = inter / (max(bottom, e.y1) - min(top, e.y0) + 1)
        if iou > best_iou:
            best, best_iou = (top, bottom), iou
    if best is None:
        return Check(e.name, False, f"no {e.color} patch overlaps y={e.y0}-{e.y1}", False, phrase=e.phrase)
    top, bottom = best
    tol = scene.tolerance
    return Check(
        e.name,
        top == e.y0 and bottom == e.y1,
        f"{e.color} {e.feature} spans y={top}-{bottom}",
        abs(top - e.y0) <= tol and abs(bottom - e.y1) <= tol,
        phrase=e.phrase,
    )


def _region(scene: Scene, e: RegionColor) -> Check:
    if e.feature not in scene.regions:
        return Check(
            e.name,
            False,
            f"no region configured for {e.feature!r} (metrics.regions)",
            checked=False,
            phrase=e.phrase,
        )
    boxes, min_share = scene.regions[e.feature]
    mask = _matches(scene, e.color, e.modifier)

    def region_ok(dx: int, dy: int) -> tuple[bool, float]:
        shares = [_share(mask, b.cells(), dx, dy) for b in boxes]
        ok = all(s > 0 for s in shares) if min_share <= 0 else float(np.mean(shares)) >= min_share
        return ok, float(np.mean(shares))

    strict, share = region_ok(0, 0)
    tolerant = any(region_ok(dx, dy)[0] for dx, dy in _shifts(scene.tolerance))
    return Check(
        e.name, strict, f"{share:.0%} of the {e.feature} region is {e.color}", tolerant, phrase=e.phrase
    )


def _background(scene: Scene, e: Background) -> Check:
    outer = ring(scene.cells)
    share = float(np.mean(scene.names[outer] == scene.background))
    median = np.median(scene.lab[outer], axis=0)
    flat = float(np.mean(delta_e(scene.lab[outer], median) <= 3.0))
    ok = scene.background == e.color and bool(modifier_ok(median, e.modifier))
    ok = ok and (share >= scene.pass_share if e.solid else True)
    detail = f"ring is {share:.0%} {scene.background} ({flat:.0%} within dE 3 of its median), want {e.color}"
    return Check(e.name, ok, detail, ok, phrase=e.phrase)


def _jaw(scene: Scene, e: Jaw) -> Check:
    if scene.skin is None:
        return Check(e.name, False, "no skin colour found", False, phrase=e.phrase)
    widths = (scene.names == scene.skin).sum(axis=1)
    rows = np.nonzero(widths)[0]
    if len(rows) == 0:
        return Check(e.name, False, f"no {scene.skin} cells", False, phrase=e.phrase)
    neck = widths[rows.max()]
    wider = np.nonzero(widths > neck)[0]
    jaw = int(wider.max()) if len(wider) else -1
    return Check(
        e.name,
        jaw == e.y,
        f"head wider than neck down to y={jaw}",
        abs(jaw - e.y) <= scene.tolerance,
        phrase=e.phrase,
    )


def _facing(scene: Scene, e: Facing) -> Check:
    figure = scene.names != scene.background
    skin = (scene.names == scene.skin) if scene.skin else np.zeros_like(figure)
    if skin.sum() < 3 or figure.sum() < 3:
        return Check(e.name, False, "no face found", False, phrase=e.phrase)
    xs = np.arange(scene.cells)[None, :]
    lean = float(
        (xs * skin).sum() / skin.sum() - (xs * figure).sum() / figure.sum()
    )  # + when the face is right
    ok = lean > 0.2 if e.direction == "right" else lean < -0.2
    return Check(e.name, ok, f"face centre is {lean:+.2f} cells right of the figure's", ok, phrase=e.phrase)


def _pixel_art(scene: Scene, e: PixelArt) -> Check:
    aa, r2 = scene.grid_metrics["grid/aa_cells"], scene.grid_metrics["grid/r2"]
    ok = aa <= MAX_AA_CELLS and r2 >= MIN_R2
    return Check(
        e.name,
        ok,
        f"anti-aliasing {aa:.2f} cell wide (<= {MAX_AA_CELLS}), r2 {r2:.2f} (>= {MIN_R2})",
        ok,
        phrase=e.phrase,
    )


def _grid_size(scene: Scene, e: GridSize) -> Check:
    r2, align = scene.grid_metrics["grid/r2"], scene.grid_metrics["grid/edge_alignment"]
    ok = r2 >= MIN_R2 and align >= MIN_ALIGNMENT
    return Check(
        e.name,
        ok,
        f"{scene.cells}x{scene.cells} fit: r2 {r2:.2f} (>= {MIN_R2}), edges on grid "
        f"{align:.0%} (>= {MIN_ALIGNMENT:.0%})",
        ok,
        phrase=e.phrase,
    )


CHECKS: dict[type[Expectation], Callable[[Scene, Expectation], Check]] = {
    Unchecked: _unchecked,
    Dot: _dot,
    BoxFill: _box,
    BoxOutline: _box,
    Extent: _extent,
    RegionColor: _region,
    Background: _background,
    Jaw: _jaw,
    Facing: _facing,
    PixelArt: _pixel_art,
    GridSize: _grid_size,
}


def check(scene: Scene, expectation: Expectation) -> Check:
    """The verdict on one expectation."""
    try:
        run = CHECKS[type(expectation)]
    except KeyError:
        raise TypeError(f"no check for {type(expectation).__name__}; add one to CHECKS") from None
    return run(scene, expectation)
