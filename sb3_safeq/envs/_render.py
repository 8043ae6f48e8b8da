"""
Tiny numpy rasteriser for ``render_mode="rgb_array"`` (no display, no extra deps): the continuous environments' frames,
and those of the toy-text and CartPole environments when gymnasium's pygame renderer is not installed (so that
``sb3-safeq record_video`` works on every bundled environment with the package's own requirements).
"""

import importlib.util

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


def pygame_installed() -> bool:
    """:return: whether gymnasium's own renderer (pygame) can be used; the environments draw their own frames if not"""
    return importlib.util.find_spec("pygame") is not None


def grid_frame(cell_colors: np.ndarray, agent_cell: tuple[int, int], cell_size: int = 24) -> np.ndarray:
    """
    Draw a grid world: one coloured square per cell, thin grey lines between cells, the agent as a blue disc.

    :param cell_colors: RGB colour of each cell, shape ``(n_rows, n_cols, 3)``, uint8
    :param agent_cell: the agent's ``(row, col)``
    :param cell_size: side of a cell, in pixels
    :return: the ``(n_rows * cell_size, n_cols * cell_size, 3)`` uint8 image
    """
    canvas = np.repeat(np.repeat(cell_colors.astype(np.uint8), cell_size, axis=0), cell_size, axis=1)
    canvas[::cell_size, :] = GREY
    canvas[:, ::cell_size] = GREY
    row, col = agent_cell
    fill_disc(canvas, (row + 0.5) * cell_size, (col + 0.5) * cell_size, cell_size * 0.35, BLUE)
    return canvas
