"""Labelled contact sheets of generated images (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_grid(
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
