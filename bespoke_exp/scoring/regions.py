"""Feature regions: where in the cells x cells layout a feature stated without coordinates
("brown hair", "light skin tone") is looked for.

The regions themselves are configuration (`metrics.regions` in conf/metrics/default.yaml,
the punk layout): this module only reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bespoke_exp.pixelart.cells import Box

Regions = dict[str, tuple[list[Box], float]]  # feature -> (boxes, share of cells that must match)

_BOX = re.compile(r"\s*x=(\d+)-(\d+)\s+y=(\d+)-(\d+)\s*")


def parse_regions(regions: Mapping[str, object] | None) -> Regions:
    """{feature: {boxes: "x=a-b y=c-d; ...", min_share}} (or {feature: "x=a-b y=c-d"},
    min_share 0.6) to boxes. min_share 0: each box needs at least one matching cell."""
    out: Regions = {}
    for feature, spec in (regions or {}).items():
        if isinstance(spec, Mapping):
            text, min_share = spec["boxes"], float(spec.get("min_share", 0.6))
        else:
            text, min_share = str(spec), 0.6
        boxes = []
        for part in str(text).split(";"):
            m = _BOX.fullmatch(part)
            if not m:
                raise ValueError(f"region {feature!r}: can't read box {part.strip()!r}; write 'x=a-b y=c-d'")
            x0, x1, y0, y1 = map(int, m.groups())
            boxes.append(Box(x0, x1, y0, y1))
        out[feature] = (boxes, min_share)
    return out
