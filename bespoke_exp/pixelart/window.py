"""Which cells of a lattice longer than the art are the art's own: the art's window.

Where art covers part of the frame and its background runs on to the frame edge, nothing
in the picture marks where the art ends, so the portrait layout decides (`art_window`):
the figure inside the window, its body on the bottom row, its extent centred.
"""

from __future__ import annotations

import numpy as np

from bespoke_exp.pixelart.lattice import sample_lattice

_CORE_TRIM, _CORE_SAMPLES = 0.3, 3  # a cell's colour: median of 3x3 samples over its central 40%
_FIGURE_STEP = 40  # a cell this far (max channel) from the frame's outer ring is figure
_CUT = 0.9  # a lattice end cell narrower than this share of the pitch is cut by the frame
# Where the punk layout centres the figure's horizontal extent, in cells of 24: the hair
# behind the head reaches further left than the face does right (x=5..16 or 5..17).
_FIGURE_CENTRE, _LAYOUT_CELLS = 10.75, 24


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
    centre = _FIGURE_CENTRE * cells / _LAYOUT_CELLS
    return (
        _place(figure.any(axis=0), np.diff(lat_x), cells, centre),
        _place(figure.any(axis=1), np.diff(lat_y), cells, None),
    )


def _lattice_colours(work: np.ndarray, lat_x: np.ndarray, lat_y: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) median colour of a 3x3 lattice in each cell's core (working image)."""
    xs = sample_lattice(lat_x[:-1], lat_x[1:], work.shape[1], _CORE_TRIM, _CORE_SAMPLES)
    ys = sample_lattice(lat_y[:-1], lat_y[1:], work.shape[0], _CORE_TRIM, _CORE_SAMPLES)
    s = work[ys[:, None, :, None], xs[None, :, None, :]].astype(np.int16)
    return np.median(s.reshape(len(ys), len(xs), _CORE_SAMPLES**2, 3), axis=2)


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
