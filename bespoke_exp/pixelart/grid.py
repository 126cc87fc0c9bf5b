"""Recover the true cells x cells grid from a generated picture: the public entry points.

    >>> grid = recover_grid(Image.open("sample.png"), cells=24)   # 24x24 RGB image
    >>> fit = fit_grid(Image.open("sample.png"), cells=24)        # boundaries, for metrics

Diffusion outputs are 1024 px for 24 cells (42.67 px per cell), with blurred edges,
JPEG blocking, speckle, colour drift, wandering cell widths and art that may cover
only part of the frame. The cell count is known; the art's own pitch and phase are
measured from the image:

1. Work on a box-reduced copy (~10 px per cell): averaging blocks suppresses speckle
   and JPEG noise while keeping every cell edge (`fit.fit_grid`).
2. Per axis, an edge profile: summed absolute colour differences between neighbouring
   columns (rows), less its median so flat-area noise scores nothing
   (`lattice.edge_profiles`, `lattice.normalise`).
3. A rigid lattice is searched first (`lattice.partial_lattice`): the pitch and phase
   whose lines carry the most edge strength, at pitches too fine for `cells` cells to
   fill the frame (half a cell or more to spare). It is kept when it puts a line on
   nearly every strong edge and the frame-filling pitch explains them clearly worse: art
   smaller than the frame, its background running on to the edge. Otherwise dynamic
   programming (`lattice.fit_axis`) places cells+1 boundaries maximising edge strength
   minus a penalty on each gap's deviation from the expected width, for art spans of
   80-100% of the frame at any offset (this follows wandering widths, and ends art drawn
   on a padding colour at its border).
4. Where art fills the frame and equal cells explain the picture as well as the fitted
   boundaries do (re-rendered under a few footprints), the regular lattice is kept
   exactly: a soft picture's broad edges let the fit drift where few edges pin it.
   Otherwise boundaries move to the strongest full-resolution edge within a working
   pixel (`lattice.refine`).
5. A lattice longer than `cells` is cut to the art's window by the portrait layout
   (`window.art_window`): the figure inside, its body on the bottom row, its extent
   centred. A window whose figure runs into a cell the frame cuts is no partial frame:
   that axis is refitted with the known-count fit (`fit.fit_grid`). GridFit reports the
   window (`window`, `coverage`, `frame_cells`, `window_cell`).
6. The picture's softness is measured as the footprint (`footprint`) that best explains
   lines through the cells' centres: hard, blurred, or an interpolating upscale's
   kernel. Each cell's colour is a trimmed mean over nearly the whole cell of what each
   sample says once the neighbours' modelled share is taken out, and cells that
   texture scatters around one palette colour are pooled (`cell_colour.recover_cells`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.cell_colour import cell_samples, recover_cells
from bespoke_exp.pixelart.fit import GridFit, as_rgb_array, fit_grid

__all__ = [
    "IMAGE_SUFFIXES",
    "GridFit",
    "as_rgb_array",
    "cell_accuracy",
    "cell_samples",
    "edge_alignment",
    "fit_grid",
    "recover_cells",
    "recover_folder",
    "recover_grid",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def recover_grid(image: Image.Image | np.ndarray, cells: int = CELLS) -> Image.Image:
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
    # The PIL image itself and its array both go to the fit: no conversion twice.
    return Image.fromarray(recover_cells(arr, fit_grid(image, cells, pixels=arr)))


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
