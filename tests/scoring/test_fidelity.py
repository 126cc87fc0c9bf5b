"""The `grid/*` metrics' exact values on pictures built by hand, 24 x 24 cells of 10 px, where each
value follows from its definition:

- grid/r2: 1 - within-cell / total squared colour deviation. For a picture of two colours it
  needs no colour science: with p_c the share of colour B in cell c and p its share overall,
  r2 = 1 - mean_c(p_c (1 - p_c)) / (p (1 - p)) (equal cells).
- grid/purity: the share of a cell's central pixels (its middle 40%: pixels 3..6 of 10 each
  way) within dE 3 of the cell's colour; grid/pure_cells: the share of cells at least 95% pure.
- grid/aa_width: intermediate-colour pixels across each edge between cells at least dE 20
  apart (pixels whose colour lies 20..80% of the way from one cell's colour to the other's).
"""

from __future__ import annotations

import numpy as np
import pytest

from bespoke_exp.pixelart.colors import delta_e, to_lab
from bespoke_exp.pixelart.fit import GridFit
from bespoke_exp.scoring.evaluate import evaluate
from bespoke_exp.scoring.fidelity import fidelity_metrics

CELLS, PX = 24, 10
SIZE = CELLS * PX
A, B = (30, 60, 200), (240, 220, 40)  # a blue and a yellow, far apart
BLACK, WHITE, GREY = (0, 0, 0), (255, 255, 255), (128, 128, 128)  # grey: 54% of the way in L*


def _true_fit() -> GridFit:
    bounds = np.arange(CELLS + 1.0) * PX
    return GridFit(bounds, bounds, SIZE, SIZE)


def _grid_metrics(picture: np.ndarray, cell_colours: np.ndarray) -> dict[str, float]:
    """The grid/* metrics of `picture` on its true grid, each cell of colour `cell_colours`."""
    return fidelity_metrics(picture, _true_fit(), to_lab(cell_colours.astype(np.uint8)))


def _upscale(cell_colours: np.ndarray) -> np.ndarray:
    """(24, 24, 3) cell colours drawn as flat 10 px cells."""
    return np.kron(cell_colours.astype(np.uint8), np.ones((PX, PX, 1), np.uint8))


def _flat(colour) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (CELLS, CELLS, 3)).copy()


def _two_colour_r2(shares: np.ndarray) -> float:
    """r2 of a two-colour picture of equal cells, from each cell's share of the second colour."""
    p = shares.mean()
    return 1.0 - float(np.mean(shares * (1 - shares))) / (p * (1 - p))


def _art(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (6, 3), dtype=np.uint8)[rng.integers(0, 6, (CELLS, CELLS))]


def _checkerboard(ramp: int) -> np.ndarray:
    """Black and white cells, each edge softened by `ramp` grey pixels (the last ones of the cell
    before the edge, outside every cell's centre) along the middle half of its length, where
    anti-aliasing is measured: the corners, where edges cross, are left hard."""
    picture = _upscale(_checker_cells())
    middle = np.add.outer(np.arange(CELLS) * PX, np.arange(3, 8)).ravel()  # pixels 3..7 of each cell
    for k in range(1, CELLS):
        picture[middle[:, None], np.arange(k * PX - ramp, k * PX)] = GREY
        picture[np.arange(k * PX - ramp, k * PX)[:, None], middle] = GREY
    return picture


def _checker_cells() -> np.ndarray:
    return np.where((np.add.outer(np.arange(CELLS), np.arange(CELLS)) % 2)[..., None], WHITE, BLACK)


def test_flat_cells_are_perfect_pixel_art() -> None:
    art = _art()
    m = _grid_metrics(_upscale(art), art)
    assert m["grid/r2"] == pytest.approx(1.0)
    assert (m["grid/purity"], m["grid/pure_cells"], m["grid/edge_alignment"]) == (1.0, 1.0, 1.0)
    assert (m["grid/aa_width"], m["grid/aa_cells"]) == (0.0, 0.0)


def test_flat_cells_score_perfectly_through_the_fitted_grid() -> None:
    """The same through evaluate(): the grid fitted to the picture and the cells recovered from it."""
    metrics = evaluate(_upscale(_art()), "").metrics
    assert metrics["grid/r2"] == pytest.approx(1.0)
    assert (metrics["grid/purity"], metrics["grid/pure_cells"]) == (1.0, 1.0)
    assert (metrics["grid/aa_width"], metrics["grid/aa_cells"]) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("split_columns", "b_pixels"),
    [
        (range(24), 5),  # every cell half A, half B: the cells explain nothing, r2 = 0
        (range(12, 24), 5),  # the right half of the cells split in half: r2 = 1/3
        (range(12, 24), 3),  # 3 px of B in the right half of the cells: r2 = 3/17
        (range(0, 24, 3), 1),  # one B column in every third column of cells
    ],
)
def test_r2_is_the_share_of_colour_variance_the_cells_explain(split_columns, b_pixels: int) -> None:
    picture = np.broadcast_to(np.array(A, np.uint8), (SIZE, SIZE, 3)).copy()
    shares = np.zeros((CELLS, CELLS))
    for column in split_columns:
        picture[:, column * PX + PX - b_pixels : (column + 1) * PX] = B  # the cell's last pixels
        shares[:, column] = b_pixels / PX
    assert _grid_metrics(picture, _flat(A))["grid/r2"] == pytest.approx(_two_colour_r2(shares), abs=1e-12)


def test_a_dot_in_the_centre_of_every_cell_makes_each_a_quarter_impure() -> None:
    picture = _upscale(_flat(A))
    for row in range(CELLS):
        for column in range(CELLS):
            picture[row * PX + 4 : row * PX + 6, column * PX + 4 : column * PX + 6] = B  # 4 of 16 central px
    m = _grid_metrics(picture, _flat(A))
    assert m["grid/purity"] == pytest.approx(0.75)
    assert m["grid/pure_cells"] == 0.0
    assert m["grid/r2"] == pytest.approx(0.0, abs=1e-9)  # every cell alike: nothing between cells


@pytest.mark.parametrize(("shift", "pure"), [(6, True), (15, False)])  # dE 1.9, 4.7
def test_a_pixel_is_pure_within_de_3_of_its_cell(shift: int, pure: bool) -> None:
    """Central dots a shade off the cell's colour: within dE 3 they count as the cell's colour."""
    shade = tuple(int(v) + shift for v in A)
    assert (float(delta_e(to_lab(np.array(shade, np.uint8)), to_lab(np.array(A, np.uint8)))) <= 3.0) is pure
    picture = _upscale(_flat(A))
    for row in range(CELLS):
        for column in range(CELLS):
            picture[row * PX + 4 : row * PX + 6, column * PX + 4 : column * PX + 6] = shade
    assert _grid_metrics(picture, _flat(A))["grid/purity"] == pytest.approx(1.0 if pure else 0.75)


def test_half_of_the_cells_dotted_is_half_the_pure_cells() -> None:
    picture = _upscale(_flat(A))
    for row in range(CELLS):
        for column in range(CELLS // 2):
            picture[row * PX + 4 : row * PX + 6, column * PX + 4 : column * PX + 6] = B
    m = _grid_metrics(picture, _flat(A))
    assert m["grid/purity"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["grid/pure_cells"] == pytest.approx(0.5)


def test_colour_outside_the_cell_centres_leaves_them_pure() -> None:
    picture = _upscale(_flat(A))
    for k in range(CELLS):  # a one-pixel B border round every cell
        picture[k * PX, :] = picture[k * PX + PX - 1, :] = B
        picture[:, k * PX] = picture[:, k * PX + PX - 1] = B
    m = _grid_metrics(picture, _flat(A))
    assert (m["grid/purity"], m["grid/pure_cells"]) == (1.0, 1.0)
    assert m["grid/r2"] == pytest.approx(0.0, abs=1e-9)  # yet the cells explain none of the borders


@pytest.mark.parametrize("ramp", [0, 1, 2])
def test_aa_width_counts_the_intermediate_pixels_across_each_strong_edge(ramp: int) -> None:
    m = _grid_metrics(_checkerboard(ramp), _checker_cells())
    assert m["grid/aa_width"] == ramp
    assert m["grid/aa_cells"] == pytest.approx(ramp / PX)  # in cell widths
    assert (m["grid/purity"], m["grid/pure_cells"]) == (1.0, 1.0)  # the ramps are at the cells' edges


def test_aa_width_is_the_same_through_the_fitted_grid() -> None:
    # One grey pixel: the edge is where it is. (Two mid-grey pixels make two equally strong
    # edges per cell edge, and the fit may take either.)
    metrics = evaluate(_checkerboard(1), "").metrics
    assert metrics["grid/aa_width"] == 1.0
    assert metrics["grid/aa_cells"] == pytest.approx(1 / PX, rel=0.05)  # the fitted cells' mean width


def test_edges_between_near_colours_are_no_anti_aliasing() -> None:
    """Two colours under dE 20 apart, with a pixel between them at every edge: not a strong
    edge, so nothing to count."""
    near = (120, 120, 120), (132, 132, 132)
    cells = np.where((np.add.outer(np.arange(CELLS), np.arange(CELLS)) % 2)[..., None], *near)
    picture = _upscale(cells)
    for k in range(1, CELLS):
        picture[:, k * PX - 1] = picture[k * PX - 1, :] = (126, 126, 126)
    assert _grid_metrics(picture, cells)["grid/aa_width"] == 0.0
