"""CliffWalking with a cost on entering the cliff and a safe-action mask derived from the model."""

from typing import Any

import numpy as np
from gymnasium.envs.toy_text.cliffwalking import CliffWalkingEnv

from sb3_safeq.envs._render import GREEN, RED, WHITE
from sb3_safeq.envs._tabular import SafeTabularMixin

CLIFF_REWARD = -100
"""Reward gymnasium's CliffWalking gives for stepping into the cliff (and only then)."""


def _enters_cliff(state: int, action: int, next_state: int, reward: float, terminated: bool) -> bool:
    # Entering the cliff teleports to the start without terminating, so the position is lost:
    # the cliff reward is the model's only (and documented) marker of that outcome.
    return reward == CLIFF_REWARD


class SafeCliffWalkingEnv(SafeTabularMixin, CliffWalkingEnv):
    """
    Gymnasium's CliffWalking (4x12) with ``info["cost"] = 1.0`` when a step enters the cliff and an
    ``action_masks()`` method.

    The mask is the maximal invariant safe set of ``P`` (:func:`~sb3_safeq.common.tabular.maximal_invariant_safe_set`):
    an action is safe iff no outcome with positive probability enters the cliff and every outcome keeps a safe
    action. When deterministic this is exactly "the move does not enter the cliff"; when slippery it also removes
    moves that could slip into the cliff. Every reachable state keeps at least one safe action in both cases
    (checked at construction), and the goal stays reachable.

    :param render_mode: Passed to CliffWalking.
    :param is_slippery: Gymnasium's slippery dynamics (intended move or either perpendicular one, 1/3 each).
    """

    def __init__(self, render_mode: str | None = None, is_slippery: bool = False) -> None:
        super().__init__(render_mode=render_mode, is_slippery=is_slippery)
        self.grid_shape = self.shape
        self._build_safe_action_table(_enters_cliff)

    def _cell_colors(self) -> np.ndarray:
        """:return: the grid's colours: the cliff red, the goal green, the rest white, shape ``(4, 12, 3)``"""
        colors = np.full((*self.shape, 3), WHITE, dtype=np.uint8)
        colors[self._cliff] = RED
        colors[self.shape[0] - 1, self.shape[1] - 1] = GREEN
        return colors

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        if self.is_slippery:
            return "maximal invariant set: every outcome p>0 avoids the cliff and keeps >=1 safe action"
        return "a safe iff its (deterministic) move does not enter the cliff"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        """
        Reset as CliffWalking does; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: Unused, as in CliffWalking.
        :return: Observation and info.
        """
        observation, info = super().reset(seed=seed, options=options)
        info["cost"] = 0.0
        return observation, info

    def step(self, action: int | np.integer) -> tuple[int, float, bool, bool, dict]:
        """
        Step as CliffWalking does and add ``info["cost"]``: 1.0 iff this step entered the cliff.

        :param action: 0 up, 1 right, 2 down, 3 left.
        :return: Observation, reward, terminated, truncated, info.
        """
        observation, reward, terminated, truncated, info = super().step(action)
        # Ground truth from the sampled outcome, independent of the mask.
        info["cost"] = float(reward == CLIFF_REWARD)
        return observation, reward, terminated, truncated, info
