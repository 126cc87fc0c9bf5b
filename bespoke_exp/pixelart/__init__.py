"""Pixel art itself: cell coordinates, colour names and colour science, and recovering the
cells x cells art from a generated picture. Arrays in, arrays out."""
