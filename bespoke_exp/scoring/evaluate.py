"""Score one generated picture against its prompt, and aggregate a set of scores.

    >>> ev = evaluate(Image.open("sample.png"), prompt_text, regions=cfg.metrics.regions,
    ...               weights={"adherence/pass_rate": 1.0})
    >>> ev.metrics["grid/purity"], ev.metrics["score"], [c.name for c in ev.checks if not c.passed]

The picture's cells x cells grid is recovered once (`pixelart.grid`); the `grid/*`
metrics (scoring.fidelity) judge how crisply it is drawn, the `palette/*` metrics
(scoring.palette) its colours, and the prompt checks (scoring.checks) what it shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.blank import blank_reason
from bespoke_exp.pixelart.colors import SKIN_TONES, delta_e, name_colors, skin_label, to_lab
from bespoke_exp.pixelart.grid import GridFit, as_rgb_array, fit_grid, recover_cells
from bespoke_exp.scoring.checks import Check, Scene, check, ring
from bespoke_exp.scoring.expectations import (
    BoxFill,
    Dot,
    Expectation,
    ReadLimit,
    RegionColor,
    Unchecked,
    merge_expectations,
    parse_phrase,
    parse_prompt,
)
from bespoke_exp.scoring.fidelity import fidelity_metrics
from bespoke_exp.scoring.palette import load_palette, palette_metrics
from bespoke_exp.scoring.regions import Regions, parse_regions
from bespoke_exp.scoring.registry import composite_score, family_scores, metric_spec, worst_value


@dataclass
class Evaluation:
    """Metrics and checks of one image against one prompt; `grid` is the recovered cells."""

    metrics: dict[str, float]
    checks: list[Check]
    grid: np.ndarray = field(repr=False)
    fit: GridFit | None = field(default=None, repr=False)


def evaluate(
    image: Image.Image | np.ndarray,
    prompt: str,
    *,
    cells: int = CELLS,
    expectations: Sequence[Expectation | str] | None = None,
    palette: str | Sequence | np.ndarray | None = "demo",
    weights: Mapping[str, float] | None = None,
    reference: Image.Image | np.ndarray | None = None,
    regions: Mapping[str, object] | None = None,
    tolerance: int = 1,
    pass_share: float = 0.75,
    read_limit: ReadLimit | None = None,
) -> Evaluation:
    """Metrics and prompt checks for one generated picture.

    Args:
        image: the picture (PIL or HxWx3 array), any size; a cells x cells image is
            taken as already recovered.
        prompt: the prompt text; expectations are parsed from it.
        expectations: extra expectations (objects, or phrases in the prompt language);
            one with the same name as a parsed one replaces it.
        palette: reference palette for palette/off_palette_rate (see load_palette).
        weights: composite-score weights by metric key; adds `score`, and its part per metric
            family (`score/adherence`, `score/grid`, `score/palette`), when given.
        reference: optional target cells x cells image; adds ref/exact and ref/near.
        regions: feature regions (`metrics.regions`) for features stated without
            coordinates; a feature with no region is reported unchecked.
        tolerance: cells of slack for the tolerant verdicts.
        pass_share: share of a box/region that must match for a pass.
        read_limit: how much of the prompt the text encoder read (None: all of it); phrases
            beyond it are reported unchecked, not scored.
    Returns:
        Evaluation with finite metrics, one Check per expectation, the recovered grid.
    """
    arr = as_rgb_array(image)
    if arr.shape[0] < 2 or arr.shape[1] < 2:  # degenerate input: treat as one flat colour
        arr = np.repeat(np.repeat(arr[:1, :1], cells, 0), cells, 1)
    fit = (
        fit_grid(arr, cells)
        if arr.shape[:2] != (cells, cells)
        else GridFit(np.arange(cells + 1.0), np.arange(cells + 1.0), cells, cells)
    )
    grid = recover_cells(arr, fit)
    grid_lab = to_lab(grid)
    names = name_colors(grid_lab)

    m = fidelity_metrics(arr, fit, grid_lab)
    m.update(palette_metrics(grid_lab, to_lab(load_palette(palette, cells))))
    exps = _expectations(prompt, expectations, cells, read_limit)
    scene = _scene(names, grid_lab, exps, parse_regions(regions), pass_share, tolerance, m)
    checks = [check(scene, e) for e in exps]
    collapse = collapse_reason(arr, m)
    if collapse is not None:
        checks = [_failed(c, collapse) for c in checks]
    m.update(_adherence(checks))
    if reference is not None:
        m.update(_reference_metrics(reference, cells, names, grid_lab))
    m["quality/collapsed"] = float(collapse is not None)
    if collapse is not None:  # no picture: nothing it "has" counts, every metric at its bad end
        m = {k: (v if k == "quality/collapsed" else worst_value(k)) for k, v in m.items()}
    # A metric that could not be computed is missing evidence: it scores at its bad end.
    m = {k: (float(v) if np.isfinite(v) else worst_value(k)) for k, v in m.items()}
    if weights is not None:
        m["score"] = composite_score(m, weights)
        m.update(family_scores(m, weights))  # score/adherence, score/grid, score/palette
    return Evaluation(metrics=m, checks=checks, grid=grid, fit=fit)


def collapse_reason(arr: np.ndarray, metrics: Mapping[str, float]) -> str | None:
    """Why the picture is no attempt at the art (one flat colour), or None.

    A flat square in the prompt's background colour would otherwise pass the background
    check, fit any grid perfectly and show no anti-aliasing: rewards for missing evidence.
    """
    blank = blank_reason(arr)
    if blank is not None:
        return blank
    if metrics["palette/colors"] <= 1:
        return "the recovered art is a single colour"
    return None


def _failed(c: Check, reason: str) -> Check:
    if not c.checked:
        return c
    return Check(c.name, False, f"collapsed: {reason}", False, checked=True, phrase=c.phrase)


def _expectations(
    prompt: str, extra: Sequence[Expectation | str] | None, cells: int, read_limit: ReadLimit | None
) -> list[Expectation]:
    """What the prompt states, plus `extra` (same-named extras replace parsed ones);
    phrases that can't be checked are kept as Unchecked, never dropped. Extras are the
    user's own checks, not prompt text, so `read_limit` leaves them alone."""
    parsed = parse_prompt(prompt, cells, read_limit)
    exps = list(parsed.expectations) + [Unchecked(err, reason=err) for err in parsed.errors]
    if not extra:
        return exps
    more: list[Expectation] = []
    for item in extra:
        if isinstance(item, str):
            found, errors, _ = parse_phrase(item, cells)
            more += found + [Unchecked(err, reason=err) for err in errors]
        else:
            more.append(item)
    return merge_expectations(exps, more)


def _scene(
    names: np.ndarray,
    grid_lab: np.ndarray,
    exps: list[Expectation],
    regions: Regions,
    pass_share: float,
    tolerance: int,
    grid_metrics: Mapping[str, float],
) -> Scene:
    cells = names.shape[0]
    ring_names, ring_counts = np.unique(names[ring(cells)], return_counts=True)
    background = str(ring_names[np.argmax(ring_counts)])
    claimed = np.zeros((cells, cells), bool)
    skin = None
    for e in exps:
        if isinstance(e, Dot):
            claimed[e.cell[1], e.cell[0]] = True
        elif isinstance(e, BoxFill):  # an outline too
            for x, y in e.covered():
                claimed[y, x] = True
        elif isinstance(e, RegionColor) and e.feature == "skin":
            skin = e.color
    if skin is None:
        skin = _dominant_skin(names, background, regions)
    return Scene(
        names, grid_lab, cells, background, claimed, skin, regions, pass_share, tolerance, grid_metrics
    )


def _dominant_skin(names: np.ndarray, background: str, regions: Regions) -> str | None:
    """No skin tone stated: the most common skin-like name in the skin region."""
    boxes, _ = regions.get("skin", ([], 0.0))
    found = [names[y, x] for b in boxes for x, y in b.cells() if names[y, x] != background]
    tones = {skin_label(t) for t in SKIN_TONES}
    found = [f for f in found if f in tones] or found
    if not found:
        return None
    values, counts = np.unique(found, return_counts=True)
    return str(values[np.argmax(counts)])


def _adherence(checks: list[Check]) -> dict[str, float]:
    scored = [c for c in checks if c.checked]
    m = {"adherence/unchecked": float(sum(not c.checked for c in checks))}
    if scored:
        m["adherence/pass_rate"] = float(np.mean([c.passed for c in scored]))
        m["adherence/pass_rate_tol"] = float(np.mean([c.passed_tolerant for c in scored]))
        m["adherence/all_pass"] = float(all(c.passed for c in scored))
        m["adherence/all_pass_tol"] = float(all(c.passed_tolerant for c in scored))
    return m


def _reference_metrics(
    reference: Image.Image | np.ndarray, cells: int, names: np.ndarray, grid_lab: np.ndarray
) -> dict[str, float]:
    ref = as_rgb_array(reference)
    if ref.shape[:2] != (cells, cells):
        ref = recover_cells(ref, fit_grid(ref, cells))
    ref_lab = to_lab(ref)
    return {
        "ref/exact": float((name_colors(ref_lab) == names).mean()),
        "ref/near": float((delta_e(ref_lab, grid_lab) <= 2.0).mean()),
    }


def aggregate(evaluations: Iterable[Evaluation]) -> dict[str, float]:
    """Per-set aggregates: each metric by its registry aggregation, plus each check's
    strict pass rate as `check/<name>`. Metrics absent from some images (ref/*) are
    aggregated over the images that have them."""
    values: dict[str, list[float]] = {}
    for ev in evaluations:
        for k, v in ev.metrics.items():
            values.setdefault(k, []).append(v)
        for c in ev.checks:
            if c.checked:
                values.setdefault(c.key, []).append(float(c.passed))
    reducers = {"mean": np.mean, "min": np.min, "max": np.max, "median": np.median}
    return {k: float(reducers[metric_spec(k).aggregation](v)) for k, v in values.items()}
