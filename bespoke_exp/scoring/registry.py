"""Every metric declared once: its direction, how it aggregates, and the range that maps
it onto a 0..1 utility for the composite `score`.

Ranking and plotting read direction from here (`metric_spec(key).higher_is_better`) and
never hard-code a metric name. Adding a metric is one `MetricSpec` line plus the code
that computes it. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


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
        MetricSpec(
            "grid/purity", True, "mean", "share of central cell pixels within dE 3 of their cell's colour"
        ),
        MetricSpec("grid/pure_cells", True, "mean", "share of cells with purity >= 0.95"),
        MetricSpec(
            "grid/edge_alignment",
            True,
            "mean",
            "share of edge strength within 1 working px of fitted boundaries",
        ),
        MetricSpec(
            "grid/aa_width",
            False,
            "mean",
            "mean intermediate-colour pixels across strong cell edges (px)",
            0.0,
            16.0,
        ),
        MetricSpec(
            "grid/aa_cells", False, "mean", "grid/aa_width in cell widths (resolution independent)", 0.0, 0.5
        ),
        MetricSpec(
            "palette/colors",
            False,
            "mean",
            "colour clusters in the 24x24 after merging within dE 3",
            4.0,
            64.0,
        ),
        MetricSpec(
            "palette/off_palette_rate",
            False,
            "mean",
            "share of cells farther than dE 5 from the reference palette",
            0.0,
            1.0,
        ),
        MetricSpec(
            "palette/shade_flicker",
            False,
            "mean",
            "share of adjacent cell pairs differing by only dE 2-4",
            0.0,
            0.5,
        ),
        MetricSpec("adherence/pass_rate", True, "mean", "share of prompt checks passed (strict)"),
        MetricSpec(
            "adherence/pass_rate_tol", True, "mean", "share of prompt checks passed with +-1 cell tolerance"
        ),
        MetricSpec("adherence/all_pass", True, "mean", "1 if every prompt check passed (strict)"),
        MetricSpec(
            "adherence/all_pass_tol", True, "mean", "1 if every prompt check passed with +-1 cell tolerance"
        ),
        MetricSpec(
            "adherence/unchecked",
            False,
            "mean",
            "prompt phrases naming a feature that could not be checked",
            0.0,
            5.0,
        ),
        MetricSpec("ref/exact", True, "mean", "share of cells with the reference's colour name"),
        MetricSpec("ref/near", True, "mean", "share of cells within dE 2 of the reference"),
        MetricSpec("score", True, "mean", "weighted mean of metric utilities (weights: conf/metrics)"),
        MetricSpec("score/adherence", True, "mean", "`score` over the adherence/* metrics only"),
        MetricSpec("score/grid", True, "mean", "`score` over the grid/* metrics only"),
        MetricSpec("score/palette", True, "mean", "`score` over the palette/* metrics only"),
        # Lower is better for these three, so their utility runs from 1 (worst) down to 0 (best).
        MetricSpec(
            "quality/collapsed",
            False,
            "mean",
            "1 if the picture is one flat colour: every metric at its worst",
            0.0,
            1.0,
        ),
        MetricSpec(
            "memorisation/nearest_match",
            False,
            "mean",
            "share of cells matching the closest training image",
            0.0,
            1.0,
        ),
        MetricSpec(
            "memorisation/near_copy", False, "mean", "1 if the image near-copies a training image", 0.0, 1.0
        ),
        # Per-check pass rates that aggregate() adds, one key per check name.
        MetricSpec("check/*", True, "mean", "share of images passing this check (strict)"),
    ]
}


# The composite and its part per metric family: what the LoRA buys is read family by family.
FAMILY_SCORES = {
    "score": "composite",
    "score/adherence": "adherence",
    "score/grid": "grid",
    "score/palette": "palette",
}


def family_scores(metrics: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """`score/<family>`: the composite over one family's weighted metrics, for each family with a
    weighted metric present (a family the weights leave out has no score, not a perfect one)."""
    out = {}
    for key, family in FAMILY_SCORES.items():
        if key == "score":
            continue
        own = {k: w for k, w in weights.items() if k.startswith(f"{family}/") and w}
        if any(k in metrics and np.isfinite(metrics[k]) for k in own):
            out[key] = composite_score(metrics, own)
    return out


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


def worst_value(key: str) -> float:
    """The bad end of a metric: what missing evidence (NaN, a collapsed picture) scores."""
    return metric_spec(key).worst


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
            raise ValueError(
                f"metrics weight for unknown metric {key!r}; known: {', '.join(METRICS)}"
            ) from err
        if w and key in metrics and np.isfinite(metrics[key]):
            acc += float(w) * utility(key, metrics[key])
            total += float(w)
    return acc / total if total > 0 else 0.0
