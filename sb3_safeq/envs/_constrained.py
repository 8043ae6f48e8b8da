"""Helpers shared by the environments whose safe actions are linear constraints (a polytope per state)."""

import math
from collections.abc import Sequence

import numpy as np

from sb3_safeq.envs.point_mass import Disc


def as_point(point: Sequence[float], name: str) -> tuple[float, float]:
    """
    :param point: two coordinates
    :param name: the argument's name, for the error message
    :return: the point as floats
    """
    if len(point) != 2 or not all(math.isfinite(value) for value in point):
        raise ValueError(f"{name} must be two finite coordinates, got {point!r}.")
    return float(point[0]), float(point[1])


def as_disc(disc: Sequence[float]) -> Disc:
    """
    :param disc: ``(x, y, radius)``
    :return: the disc as floats
    """
    if len(disc) != 3 or not all(math.isfinite(value) for value in disc) or not disc[2] > 0.0:
        raise ValueError(f"Each obstacle must be (x, y, radius) with finite values and radius > 0, got {disc!r}.")
    return float(disc[0]), float(disc[1]), float(disc[2])


def rows_cutting_box(
    matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """
    Keep the rows that some action of the box violates: a row whose largest value over the box,
    ``sum_j max(A_ij low_j, A_ij high_j)``, is at most ``b_i`` holds for every action and says nothing.

    :param matrix: ``A``, shape ``(m, action_dim)``
    :param offsets: ``b``, shape ``(m,)``
    :param low: lower bounds of the action box, shape ``(action_dim,)``
    :param high: upper bounds
    :return: the kept ``A`` and ``b``
    """
    largest = np.maximum(matrix * np.asarray(low, np.float64), matrix * np.asarray(high, np.float64)).sum(axis=1)
    cuts = offsets < largest
    return matrix[cuts], offsets[cuts]
