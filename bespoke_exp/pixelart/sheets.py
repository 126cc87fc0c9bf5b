"""Contact sheets: labelled tiles of generated images, each beside its recovered art (PIL only).

>>> labelled_sheet([[img_a, img_b]], ["prompt 1"], ["seed 0", "seed 1"]).save("sheet.png")
>>> comparison_sheet({(6, 7.5): img}, epochs=[6], guidances=[7.5], best=(6, 7.5)).save("sheet.png")
>>> seed_sheet({("p1", 0): img}, ["p1"], [0]).save("seeds.png")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.grid import recover_grid


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_sheet(
    images: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    title: str = "",
    cell_size: int = 256,
) -> Image.Image:
    """Rows x columns of images with labels on the left and on top.

    Images are resized with NEAREST so pixel art stays crisp in the sheet.
    """
    font = _font(max(12, cell_size // 14))
    label_width = max(120, cell_size // 2)
    header = max(28, cell_size // 8) * (2 if title else 1)
    rows, cols = len(images), max((len(r) for r in images), default=0)
    sheet = Image.new("RGB", (label_width + cols * cell_size, header + rows * cell_size), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 4), title, fill="black", font=font)
    top = header - max(28, cell_size // 8)
    for c, label in enumerate(column_labels):
        draw.text((label_width + c * cell_size + 6, top + 6), label, fill="black", font=font)
    for r, (label, row) in enumerate(zip(row_labels, images)):
        y = header + r * cell_size
        draw.text((6, y + cell_size // 2 - 8), label, fill="black", font=font)
        for c, image in enumerate(row):
            tile = image.convert("RGB").resize((cell_size, cell_size), Image.NEAREST)
            sheet.paste(tile, (label_width + c * cell_size, y))
    return sheet


# --- Generated | recovered comparison sheets -------------------------------------------
#
# Each tile pairs a generated picture with the cells x cells grid recovered from it, so a
# reader sees both what the model drew and what the metrics scored. comparison_sheet
# (epochs x guidances, one prompt and seed) and seed_sheet (prompts x seeds, one cell)
# share one layout and one tile painter.

BEST_RGB = (213, 94, 0)  # Okabe-Ito vermillion: the "best" colour in every figure and sheet
_MISSING_RGB = (214, 214, 214)
_HATCH_RGB = (192, 192, 192)
_FRAME_RGB = (170, 170, 170)  # thin frame so white-background art still shows its edge
_INK_RGB = (20, 20, 20)
_MUTED_RGB = (100, 100, 100)

Rect = tuple[int, int, int, int]  # left, top, right, bottom (PIL convention, right/bottom exclusive)


@dataclass(frozen=True)
class _Tile:
    """What one tile shows: an image (None = missing) with its caption and highlight."""

    image: Image.Image | None
    recovered: Image.Image | None = None
    caption: str = ""
    best: bool = False


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Text shortened with '...' to fit `width` pixels (long prompt ids must not overlap tiles)."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "...", font)[0] > width:
        text = text[:-1]
    return text + "..."


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    """`image` padded into a size x size square.

    NEAREST when enlarging keeps pixel art crisp; BOX when shrinking averages a 1024 px
    render honestly instead of picking every 5th pixel (which would invent speckle).
    """
    image = image.convert("RGB")
    method = Image.NEAREST if max(image.size) <= size else Image.BOX
    return ImageOps.pad(image, (size, size), method=method, color="white")


def _missing_tile(width: int, height: int, font: ImageFont.ImageFont) -> Image.Image:
    """Grey hatched tile saying "missing": a failed job must not look like a blank render."""
    tile = Image.new("RGB", (width, height), _MISSING_RGB)
    draw = ImageDraw.Draw(tile)
    step = max(8, height // 12)
    for k in range(0, width + height, step):  # PIL clips the diagonals to the tile
        draw.line((k, 0, k - height, height), fill=_HATCH_RGB, width=2)
    w, h = _text_size(draw, "missing", font)
    cx, cy = width // 2, height // 2
    draw.rectangle((cx - w // 2 - 6, cy - h // 2 - 6, cx + w // 2 + 6, cy + h // 2 + 6), fill=_MISSING_RGB)
    draw.text((cx, cy), "missing", fill=_INK_RGB, font=font, anchor="mm")
    return tile


@dataclass(frozen=True)
class _Layout:
    """Sizes and fonts of a generated|recovered sheet, derived from the tile size."""

    cell_size: int
    gap: int  # between the two halves of a tile
    border: int  # best-tile border, drawn in the spacing around the tile
    ring: int  # white gap + border + hairline around the best tile
    spacing: int
    pad: int
    tile_w: int
    tile_h: int
    label_w: int
    title_h: int
    column_h: int
    left0: int
    top0: int
    fonts: tuple[ImageFont.ImageFont, ImageFont.ImageFont, ImageFont.ImageFont]  # label, small, title

    def origin(self, r: int, c: int) -> tuple[int, int]:
        return self.left0 + c * (self.tile_w + self.spacing), self.top0 + r * (self.tile_h + self.spacing)


def _layout(cell_size: int, row_labels: Sequence[str], title: str, has_caption: bool) -> _Layout:
    label_font, small_font = _font(max(14, cell_size // 10)), _font(max(12, cell_size // 12))
    title_font = _font(max(16, cell_size // 8))
    gap, border = max(4, cell_size // 32), max(4, cell_size // 24)
    # White gap + black hairline around the border: art backgrounds can be any colour,
    # vermillion included, and the border must still read as a frame.
    ring = max(3, border // 2 + 2) + border + 1
    spacing = 2 * ring + max(8, cell_size // 16)
    pad = max(8, cell_size // 24)
    caption_h = (max(12, cell_size // 12) + 10) if has_caption else 0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = min(3 * cell_size, max((_text_size(probe, s, label_font)[0] for s in row_labels), default=0))
    title_h = (_text_size(probe, "Ag", title_font)[1] + 2 * pad) if title else 0
    column_h = _text_size(probe, "Ag", label_font)[1] + pad
    half_h = _text_size(probe, "Ag", small_font)[1] + pad
    return _Layout(
        cell_size,
        gap,
        border,
        ring,
        spacing,
        pad,
        tile_w=2 * cell_size + gap,
        tile_h=cell_size + caption_h,
        label_w=label_w,
        title_h=title_h,
        column_h=column_h,
        left0=pad + label_w + pad + spacing // 2,
        top0=pad + title_h + column_h + half_h + spacing // 2,
        fonts=(label_font, small_font, title_font),
    )


def _pair_sheet(
    tiles: Mapping[tuple[int, int], _Tile],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    cells: int,
    title: str,
    cell_size: int,
) -> tuple[Image.Image, dict[tuple[int, int], dict[str, Rect]]]:
    """Draw rows x columns generated|recovered tiles; return the sheet and each tile's boxes.

    `tiles` is keyed by (row index, column index); absent keys are drawn as missing.
    """
    lay = _layout(cell_size, row_labels, title, any(t.caption or t.best for t in tiles.values()))
    label_font, small_font, title_font = lay.fonts
    width = lay.left0 + len(column_labels) * (lay.tile_w + lay.spacing) - lay.spacing // 2 + lay.pad
    height = lay.top0 + len(row_labels) * (lay.tile_h + lay.spacing) - lay.spacing // 2 + lay.pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text(
            (lay.pad, lay.pad),
            _fit_text(draw, title, title_font, width - 2 * lay.pad),
            fill=_INK_RGB,
            font=title_font,
        )
    halves = ("generated", f"recovered {cells}x{cells}")
    for c, label in enumerate(column_labels):
        x, y_col = lay.origin(0, c)[0], lay.pad + lay.title_h
        draw.text(
            (x + lay.tile_w // 2, y_col),
            _fit_text(draw, label, label_font, lay.tile_w),
            fill=_INK_RGB,
            font=label_font,
            anchor="ma",
        )
        # Name each half over every column: the pairing must be obvious without a legend.
        for h, name in enumerate(halves):
            hx = x + h * (cell_size + lay.gap) + cell_size // 2
            draw.text(
                (hx, y_col + lay.column_h),
                _fit_text(draw, name, small_font, cell_size),
                fill=_MUTED_RGB,
                font=small_font,
                anchor="ma",
            )
    boxes: dict[tuple[int, int], dict[str, Rect]] = {}
    for r, label in enumerate(row_labels):
        y = lay.origin(r, 0)[1]
        draw.text(
            (lay.pad, y + cell_size // 2),
            _fit_text(draw, label, label_font, lay.label_w),
            fill=_INK_RGB,
            font=label_font,
            anchor="lm",
        )
        for c in range(len(column_labels)):
            boxes[(r, c)] = _draw_tile(
                sheet, draw, lay, lay.origin(r, c), tiles.get((r, c), _Tile(image=None)), cells
            )
    return sheet, boxes


def _draw_tile(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, lay: _Layout, at: tuple[int, int], tile: _Tile, cells: int
) -> dict[str, Rect]:
    """One generated|recovered pair with its caption and, when best, its frame."""
    (x, y), size = at, lay.cell_size
    label_font, small_font, _ = lay.fonts
    gen_box = (x, y, x + size, y + size)
    rec_box = (x + size + lay.gap, y, x + lay.tile_w, y + size)
    if tile.image is None:
        sheet.paste(_missing_tile(lay.tile_w, size, label_font), (x, y))
    else:
        sheet.paste(_thumbnail(tile.image, size), gen_box[:2])
        grid = tile.recovered if tile.recovered is not None else recover_grid(tile.image, cells)
        sheet.paste(grid.convert("RGB").resize((size, size), Image.NEAREST), rec_box[:2])
        for bx in (gen_box, rec_box):
            draw.rectangle((bx[0] - 1, bx[1] - 1, bx[2], bx[3]), outline=_FRAME_RGB, width=1)
    caption = ("BEST  " if tile.best else "") + tile.caption
    if caption:
        draw.text(
            (x + lay.tile_w // 2, y + size + 4),
            _fit_text(draw, caption, small_font, lay.tile_w),
            fill=BEST_RGB if tile.best else _INK_RGB,
            font=small_font,
            anchor="ma",
        )
    if tile.best:
        ring, w, h = lay.ring, lay.tile_w, lay.tile_h
        draw.rectangle((x - ring, y - ring, x + w + ring - 1, y + h + ring - 1), outline=_INK_RGB, width=1)
        draw.rectangle(
            (x - ring + 1, y - ring + 1, x + w + ring - 2, y + h + ring - 2),
            outline=BEST_RGB,
            width=lay.border,
        )
    return {"tile": (x, y, x + lay.tile_w, y + lay.tile_h), "generated": gen_box, "recovered": rec_box}


def _score_caption(scores: Mapping | None, key: object, metric_label: str) -> str:
    if scores is None or key not in scores:
        return ""
    value = scores[key]
    return f"{metric_label} n/a" if value is None or value != value else f"{metric_label} {value:.3f}"


def _check_keys(name: str, keys: Iterable[object], allowed: set[object], what: str) -> None:
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise ValueError(f"{name} has keys outside the sheet's {what}: {unknown[:5]}")


def comparison_sheet(
    images: Mapping[tuple[int, float], Image.Image],
    epochs: Sequence[int],
    guidances: Sequence[float],
    *,
    cells: int = CELLS,
    scores: Mapping[tuple[int, float], float] | None = None,
    best: tuple[int, float] | None = None,
    title: str = "",
    cell_size: int = 192,
    metric_label: str = "score",
    recovered: Mapping[tuple[int, float], Image.Image] | None = None,
) -> Image.Image:
    """Epochs (rows) x guidances (columns) of generated | recovered-grid tiles for one prompt and seed.

    Args:
        images: generated picture per (epoch, guidance); an absent key is drawn as a grey
            "missing" tile (a failed job).
        scores: optional value per (epoch, guidance), printed under the tile.
        best: the (epoch, guidance) to outline in vermillion; the caller decides (the metric
            registry knows whether higher is better, this sheet does not).
        recovered: cells x cells grids already recovered (metrics compute them); others are
            recovered here with `pixelart.grid.recover_grid`.
    Returns:
        An RGB sheet. `sheet.info["tiles"]` maps each (epoch, guidance) to its pixel boxes
        {"tile", "generated", "recovered"} (left, top, right, bottom), e.g. to crop one tile.
    """
    grid_keys = {(e, g): (r, c) for r, e in enumerate(epochs) for c, g in enumerate(guidances)}
    for name, mapping in (("images", images), ("scores", scores or {}), ("recovered", recovered or {})):
        _check_keys(name, mapping, set(grid_keys), "(epoch, guidance) cells")
    if best is not None and best not in grid_keys:
        raise ValueError(f"best={best} is not one of the sheet's (epoch, guidance) cells")
    tiles = {
        rc: _Tile(
            images[key],
            (recovered or {}).get(key),
            _score_caption(scores, key, metric_label),
            best=key == best,
        )
        for key, rc in grid_keys.items()
        if key in images
    }
    sheet, boxes = _pair_sheet(
        tiles,
        [f"epoch {e}" for e in epochs],
        [f"guidance {g:g}" for g in guidances],
        cells=cells,
        title=title,
        cell_size=cell_size,
    )
    sheet.info["tiles"] = {key: boxes[rc] for key, rc in grid_keys.items()}
    return sheet


def seed_sheet(
    images: Mapping[tuple[str, int], Image.Image],
    prompt_ids: Sequence[str],
    seeds: Sequence[int],
    *,
    cells: int = CELLS,
    title: str = "",
    cell_size: int = 192,
    scores: Mapping[tuple[str, int], float] | None = None,
    metric_label: str = "score",
    recovered: Mapping[tuple[str, int], Image.Image] | None = None,
) -> Image.Image:
    """Prompts (rows) x seeds (columns) of generated | recovered-grid tiles, e.g. every
    seed of the best (epoch, guidance) cell. Same tiles, keys and `info["tiles"]` as
    `comparison_sheet`, keyed by (prompt_id, seed)."""
    grid_keys = {(p, s): (r, c) for r, p in enumerate(prompt_ids) for c, s in enumerate(seeds)}
    for name, mapping in (("images", images), ("scores", scores or {}), ("recovered", recovered or {})):
        _check_keys(name, mapping, set(grid_keys), "(prompt_id, seed) cells")
    tiles = {
        rc: _Tile(images[key], (recovered or {}).get(key), _score_caption(scores, key, metric_label))
        for key, rc in grid_keys.items()
        if key in images
    }
    sheet, boxes = _pair_sheet(
        tiles, list(prompt_ids), [f"seed {s}" for s in seeds], cells=cells, title=title, cell_size=cell_size
    )
    sheet.info["tiles"] = {key: boxes[rc] for key, rc in grid_keys.items()}
    return sheet
