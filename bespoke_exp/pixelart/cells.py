"""Coordinates on the art: a cell is (x, y), 0-based, x = column, y = row, origin
top-left, as in the user's prompts ("black pupils at (8,12)")."""

from __future__ import annotations

from dataclasses import dataclass

Cell = tuple[int, int]


@dataclass(frozen=True)
class Box:
    """Inclusive cell rectangle, as in `x=10-13 y=15-16`."""

    x0: int
    x1: int
    y0: int
    y1: int

    def cells(self) -> list[Cell]:
        return [(x, y) for y in range(self.y0, self.y1 + 1) for x in range(self.x0, self.x1 + 1)]

    def outline(self) -> list[Cell]:
        return [(x, y) for x, y in self.cells() if x in (self.x0, self.x1) or y in (self.y0, self.y1)]

    def __str__(self) -> str:
        return f"x={self.x0}-{self.x1},y={self.y0}-{self.y1}"
