"""How crisply the picture is pixel art: flat cells on the fitted grid, hard edges.

These are the `grid/*` metrics: they judge *how* the art is drawn, never *what* it
shows (that is the prompt checks' job), so a soft but correct portrait loses here and
not on its content. Arrays in, numbers out.
"""

from __future__ import annotations

import numpy as np

from bespoke_exp.pixelart.colors import delta_e, to_lab
from bespoke_exp.pixelart.grid import GridFit, cell_samples, edge_alignment


def fidelity_metrics(arr: np.ndarray, fit: GridFit, grid_lab: np.ndarray) -> dict[str, float]:
    """Every `grid/*` metric of one picture, given its fitted grid and recovered cells (Lab)."""
    m: dict[str, float] = {"grid/r2": grid_r2(arr, fit)}
    m["grid/purity"], m["grid/pure_cells"] = purity(arr, fit, grid_lab)
    m["grid/edge_alignment"] = edge_alignment(fit) if fit.x_edges is not None else 1.0
    m["grid/aa_width"] = aa_width(arr, fit, grid_lab)
    m["grid/aa_cells"] = m["grid/aa_width"] / max(fit.cell_size, 1e-9)
    return m


def grid_r2(arr: np.ndarray, fit: GridFit) -> float:
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


def purity(arr: np.ndarray, fit: GridFit, grid_lab: np.ndarray) -> tuple[float, float]:
    """(share of central pixels within dE 3 of their cell, share of cells >= 0.95 pure)."""
    samples = cell_samples(arr, fit, k=4)  # 16 per cell keeps CIEDE2000 affordable
    lab = to_lab(samples)
    d = delta_e(lab, grid_lab[:, :, None, :])
    ok = d <= 3.0
    per_cell = ok.mean(axis=2)
    return float(ok.mean()), float((per_cell >= 0.95).mean())


def aa_width(arr: np.ndarray, fit: GridFit, grid_lab: np.ndarray, max_pairs: int = 48) -> float:
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
