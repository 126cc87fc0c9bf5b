"""Pixel art itself: cell coordinates, colour names and colour science, recovering the
cells x cells art from a generated picture, and contact sheets of pictures beside their art.
Arrays in, arrays out."""

CELLS = 24  # the art is CELLS x CELLS; the prompt sets' coordinates refer to this grid
