"""FrozenLake with a cost on falling into a hole and the maximal invariant safe-action mask."""

from typing import Any

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

from sb3_safeq.envs._render import GREEN, RED, WHITE
from sb3_safeq.envs._tabular import SafeTabularMixin

HOLE = b"H"


class SafeFrozenLakeEnv(SafeTabularMixin, FrozenLakeEnv):
    """
    Gymnasium's FrozenLake with ``info["cost"] = 1.0`` when a step falls into a hole (which also terminates, as
    in FrozenLake) and an ``action_masks()`` method.

    The mask is the maximal invariant safe set of ``P``: an action is safe iff no outcome with positive
    probability is a hole and every outcome keeps a safe action (or is the goal). On the slippery 8x8 map the
    goal stays reachable under it; on the slippery 4x4 map no zero-risk policy reaches the goal (the mask is
    still valid, the task just cannot be solved safely). A hole itself has no safe action (it is the unsafe
    state), so its row of the table is all False; the goal's row is all True.

    :param render_mode: Passed to FrozenLake.
    :param desc: Custom map (list of strings); overrides ``map_name``.
    :param map_name: "4x4" or "8x8".
    :param is_slippery: Gymnasium's slippery dynamics.
    :param success_rate: Probability of the intended move when slippery.
    :param reward_schedule: Rewards for (goal, hole, frozen), as in FrozenLake.
    """

    def __init__(
        self,
        render_mode: str | None = None,
        desc: list[str] | None = None,
        map_name: str = "8x8",
        is_slippery: bool = True,
        success_rate: float = 1.0 / 3.0,
        reward_schedule: tuple[int, int, int] = (1, 0, 0),
    ) -> None:
        super().__init__(
            render_mode=render_mode,
            desc=desc,
            map_name=map_name,
            is_slippery=is_slippery,
            success_rate=success_rate,
            reward_schedule=reward_schedule,
        )
        self._hole_states = np.asarray(self.desc).ravel() == HOLE
        self.grid_shape = (int(self.nrow), int(self.ncol))
        self._build_safe_action_table(self._falls_into_hole)

    def _cell_colors(self) -> np.ndarray:
        """:return: the grid's colours: holes red, the goal green, ice white, shape ``(nrow, ncol, 3)``"""
        colors = np.full((*self.grid_shape, 3), WHITE, dtype=np.uint8)
        colors[self.desc == HOLE] = RED
        colors[self.desc == b"G"] = GREEN
        return colors

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return "maximal invariant set: every outcome p>0 avoids holes and keeps >=1 safe action"

    def _falls_into_hole(self, state: int, action: int, next_state: int, reward: float, terminated: bool) -> bool:
        return bool(self._hole_states[next_state])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        """
        Reset as FrozenLake does; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: Unused, as in FrozenLake.
        :return: Observation and info.
        """
        observation, info = super().reset(seed=seed, options=options)
        info["cost"] = 0.0
        return observation, info

    def step(self, action: int | np.integer) -> tuple[int, float, bool, bool, dict]:
        """
        Step as FrozenLake does and add ``info["cost"]``: 1.0 iff the agent is now in a hole.

        :param action: 0 left, 1 down, 2 right, 3 up.
        :return: Observation, reward, terminated, truncated, info.
        """
        observation, reward, terminated, truncated, info = super().step(action)
        # Ground truth from the cell actually reached, independent of the mask.
        info["cost"] = float(self._hole_states[observation])
        return observation, reward, terminated, truncated, info
