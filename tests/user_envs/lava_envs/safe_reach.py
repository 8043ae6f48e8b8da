"""A point on a line that must reach a target without crossing a wall: Box actions, a safe box per state."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SafeReachEnv(gym.Env):
    """
    Position ``x`` in ``[-1, 1]``, starting near ``-0.8``; the action is a velocity in ``[-0.2, 0.2]``; reward
    ``-|x - 0.5|`` per step. A wall at ``x = 0.7``: ``safe_action_bounds()`` returns the velocities that keep
    ``x <= 0.7`` (and ``x >= -1``), and crossing the wall costs 1 (``info["cost"]``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    wall = 0.7

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-0.2, 0.2, shape=(1,), dtype=np.float32)
        self.x = -0.8

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.maximum(-0.2, -1.0 - self.x)
        high = np.minimum(0.2, self.wall - self.x)
        return np.array([low], dtype=np.float32), np.array([high], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = float(-0.8 + self.np_random.uniform(-0.1, 0.1))
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        velocity = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -0.2, 0.2))
        self.x = float(np.clip(self.x + velocity, -1.0, 1.0))
        crossed = self.x > self.wall + 1e-6
        return np.array([self.x], dtype=np.float32), -abs(self.x - 0.5), False, False, {"cost": float(crossed)}

    def render(self) -> np.ndarray:
        frame = np.full((16, 100, 3), 230, dtype=np.uint8)
        frame[:, int((self.wall + 1) * 50) :] = (220, 60, 20)
        column = int(np.clip((self.x + 1) * 50, 0, 99))
        frame[4:12, max(column - 2, 0) : column + 2] = (30, 60, 200)
        return frame
