"""
``ConstrainedBox``: the action space of an environment whose safe actions in each state are linear constraints.

The support kinds are chosen from the action space (:func:`~sb3_safeq.common.supports.factory.make_support_kind`),
as sb3-contrib chooses a distribution. A plain ``Box`` means a safe *box* per state (``safe_action_bounds()``); a
``ConstrainedBox`` means a safe *polytope* per state (``safe_action_constraints() -> (A, b)``) and declares how many
rows a state may have, which fixes the layout the replay buffer stores. It is a ``Box`` in every other respect:
SB3's algorithms, gymnasium's wrappers and checks see an ordinary ``Box`` (and it compares equal to one with the same
bounds).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces


class ConstrainedBox(spaces.Box):
    """
    A ``Box`` action space whose safe set in each state is ``{a in [low, high] : A a <= b}``, with at most
    ``max_constraints`` rows, given by the environment's ``safe_action_constraints()``.

    :param low: lower bounds of the actions (as ``gymnasium.spaces.Box``)
    :param high: upper bounds of the actions
    :param shape: shape of the actions, ``(action_dim,)``
    :param dtype: dtype of the actions
    :param seed: seed of the space's random generator
    :param max_constraints: the largest number of rows ``m`` of ``A`` in any state (rows beyond a state's own are
        stored as rows every action satisfies)
    """

    def __init__(
        self,
        low: float | np.ndarray,
        high: float | np.ndarray,
        shape: Sequence[int] | None = None,
        dtype: Any = np.float32,
        seed: int | np.random.Generator | None = None,
        max_constraints: int = 1,
    ) -> None:
        super().__init__(low, high, shape=shape, dtype=dtype, seed=seed)
        if isinstance(max_constraints, bool) or not isinstance(max_constraints, (int, np.integer)):
            raise TypeError(f"max_constraints must be an int, got {type(max_constraints).__name__}.")
        if max_constraints < 1:
            raise ValueError(
                f"max_constraints={max_constraints} must be >= 1: it is the largest number of rows of A in any state "
                "(a state with no constraint of its own returns A of shape (0, action_dim))."
            )
        self.max_constraints = int(max_constraints)

    @classmethod
    def from_box(cls, box: spaces.Box, max_constraints: int) -> "ConstrainedBox":
        """
        :param box: a ``Box`` action space
        :param max_constraints: the largest number of rows of ``A`` in any state
        :return: the same box, declaring linear-constraint supports
        """
        return cls(box.low, box.high, shape=box.shape, dtype=box.dtype, max_constraints=max_constraints)

    def __repr__(self) -> str:
        box = super().__repr__()  # "Box(low, high, shape, dtype)"
        return f"Constrained{box[:-1]}, max_constraints={self.max_constraints})"
