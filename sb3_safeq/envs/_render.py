"""Tiny numpy rasteriser for the continuous environments' ``render_mode="rgb_array"`` (no display, no extra deps)."""

import numpy as np

WHITE = (255, 255, 255)
GREY = (90, 90, 90)
RED = (220, 60, 60)
GREEN = (60, 170, 80)
BLUE = (40, 90, 220)


def blank_canvas(height: int, width: int) -> np.ndarray:
    """:return: a white ``(height, width, 3)`` uint8 image"""
    return np.full((height, width, 3), 255, dtype=np.uint8)


def fill_disc(canvas: np.ndarray, row: float, col: float, radius: float, color: tuple[int, int, int]) -> None:
    """
    Paint a disc in place.

    :param canvas: the image
    :param row: centre row, in pixels
    :param col: centre column, in pixels
    :param radius: radius, in pixels
    :param color: RGB color
    """
    rows, cols = np.ogrid[: canvas.shape[0], : canvas.shape[1]]
    canvas[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = color


def fill_rect(
    canvas: np.ndarray, top: float, left: float, bottom: float, right: float, color: tuple[int, int, int]
) -> None:
    """Paint the pixels of ``[top, bottom) x [left, right)`` (clipped to the image) in place."""
    top_i, left_i = max(0, round(top)), max(0, round(left))
    bottom_i, right_i = min(canvas.shape[0], round(bottom)), min(canvas.shape[1], round(right))
    canvas[top_i:bottom_i, left_i:right_i] = color
