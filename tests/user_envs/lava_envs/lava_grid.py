"""A 4 x 5 grid with a lava row: Discrete actions, an action mask that keeps the agent off the lava."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: Moves of the four actions (up, right, down, left) as (row, column) offsets.
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


class LavaGridEnv(gym.Env):
    """
    Start at the bottom-left corner, goal at the bottom-right corner, lava on the cells between them on the bottom
    row. Reward -1 per step and 0 on reaching the goal; stepping into lava costs 1 (``info["cost"]``) and ends the
    episode. ``action_masks()`` allows the moves that stay on the grid and out of the lava.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    rows, columns = 4, 5

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.rows * self.columns)
        self.action_space = spaces.Discrete(4)
        self.start = (self.rows - 1, 0)
        self.goal = (self.rows - 1, self.columns - 1)
        self.lava = {(self.rows - 1, column) for column in range(1, self.columns - 1)}
        self.position = self.start

    def _cell(self, position: tuple[int, int]) -> int:
        return position[0] * self.columns + position[1]

    def _target(self, action: int) -> tuple[int, int]:
        row, column = np.clip(np.array(self.position) + MOVES[action], 0, [self.rows - 1, self.columns - 1])
        return int(row), int(column)

    def action_masks(self) -> np.ndarray:
        return np.array([self._target(action) not in self.lava for action in range(4)])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.position = self.start
        return self._cell(self.position), {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        self.position = self._target(int(action))
        in_lava = self.position in self.lava
        at_goal = self.position == self.goal
        return self._cell(self.position), 0.0 if at_goal else -1.0, in_lava or at_goal, False, {"cost": float(in_lava)}

    def render(self) -> np.ndarray:
        cell = 16
        frame = np.full((self.rows * cell, self.columns * cell, 3), 230, dtype=np.uint8)
        for row, column in self.lava:
            frame[row * cell : (row + 1) * cell, column * cell : (column + 1) * cell] = (220, 60, 20)
        for (row, column), colour in ((self.goal, (40, 170, 60)), (self.position, (30, 60, 200))):
            frame[row * cell + 3 : (row + 1) * cell - 3, column * cell + 3 : (column + 1) * cell - 3] = colour
        return frame
