"""Shared machinery of the safe toy-text environments: a safe-action table computed once from the model."""

from typing import Any

import numpy as np

from sb3_safeq.common.tabular import UnsafeTransitionFn, maximal_invariant_safe_set, reachable_states
from sb3_safeq.envs._render import grid_frame, pygame_installed


class SafeTabularMixin:
    """
    Mixin for a gymnasium toy-text env (``P``, ``s``, ``initial_state_distrib``, discrete spaces) that adds the
    maximal invariant safe-action table and the sb3-contrib ``action_masks()`` method.

    The subclass calls :meth:`_build_safe_action_table` at the end of its ``__init__`` and writes the ground-truth
    ``info["cost"]`` in ``step`` and ``reset``.
    """

    P: dict[int, dict[int, list[tuple[float, int, float, bool]]]]
    s: int
    initial_state_distrib: np.ndarray
    observation_space: Any
    action_space: Any
    safe_action_table: np.ndarray
    """Boolean table (n_states, n_actions): True where the action is in the maximal invariant safe set."""

    def _build_safe_action_table(self, is_unsafe_transition: UnsafeTransitionFn) -> None:
        """
        Compute :attr:`safe_action_table` from the model and check that a safe policy can start.

        :param is_unsafe_transition: ``(state, action, next_state, reward, terminated) -> bool``.
        """
        n_states, n_actions = int(self.observation_space.n), int(self.action_space.n)
        table = maximal_invariant_safe_set(self.P, n_states, n_actions, is_unsafe_transition)
        start_states = np.flatnonzero(self.initial_state_distrib)
        stuck = [int(state) for state in start_states if not table[state].any()]
        if stuck:
            raise ValueError(
                f"Start state(s) {stuck} have no safe action: from there no policy avoids unsafe states with "
                "probability 1. Choose a map or dynamics where a zero-risk policy exists (e.g. a non-slippery one)."
            )
        # The table is invariant by construction; this guards the construction itself (cheap: done once).
        reached = reachable_states(self.P, n_states, n_actions, start_states, table)
        if not np.all(table[reached].any(axis=1)):
            raise RuntimeError("Internal error: the safe-action table is not invariant; please report this.")
        table.setflags(write=False)
        self.safe_action_table = table

    render_mode: str | None
    #: the grid's shape ``(n_rows, n_cols)``; states are numbered row by row
    grid_shape: tuple[int, int]

    def _cell_colors(self) -> np.ndarray:
        """:return: the RGB colour of each cell of the grid, shape ``(n_rows, n_cols, 3)`` (for :meth:`render`)"""
        raise NotImplementedError

    def render(self) -> Any:
        """
        gymnasium's rendering; ``rgb_array`` frames are drawn by :func:`~sb3_safeq.envs._render.grid_frame` when
        pygame (gymnasium's renderer) is not installed.

        :return: what gymnasium's ``render`` returns (an ``(H, W, 3)`` uint8 image for ``rgb_array``)
        """
        if self.render_mode == "rgb_array" and not pygame_installed():
            return grid_frame(self._cell_colors(), divmod(int(self.s), self.grid_shape[1]))
        return super().render()  # type: ignore[misc]

    def action_masks(self) -> np.ndarray:
        """
        Safe actions of the current state, derived from the model (never from costs).

        :return: Boolean array of shape (n_actions,).
        """
        return self.safe_action_table[int(self.s)].copy()
