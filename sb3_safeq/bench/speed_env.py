"""
A synthetic environment for the speed sweeps of :mod:`sb3_safeq.bench.speed`: any number of discrete actions with a
random safe mask per state, so that steps per second can be measured against the size of the action set (the
bundled grid worlds all have four actions). It measures speed only; its rewards carry no task.
"""

from typing import Any

import gymnasium as gym
import numpy as np


class MaskedActionsEnv(gym.Env[np.ndarray, np.int64]):
    """
    Observations: 8 values in [-1, 1] drawn at every step. Actions: ``Discrete(n_actions)``; in each state a random
    half of them (at least one) is safe (``action_masks()``). The reward is higher for actions near a state-dependent
    target; an unsafe action costs 1 (``info["cost"]``) and ends nothing, so unshielded baselines run the same
    number of steps. Episodes last ``episode_length`` steps (truncated).

    :param n_actions: size of the action set, >= 2
    :param episode_length: steps per episode
    """

    metadata: dict[str, Any] = {"render_modes": []}
    observation_dimension = 8

    def __init__(self, n_actions: int = 16, episode_length: int = 100) -> None:
        if n_actions < 2:
            raise ValueError(f"n_actions must be at least 2, got {n_actions}")
        self.n_actions = n_actions
        self.episode_length = episode_length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (self.observation_dimension,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self._observation = np.zeros(self.observation_dimension, dtype=np.float32)
        self._mask = np.ones(n_actions, dtype=bool)
        self._elapsed = 0

    def _draw_state(self) -> None:
        self._observation = self.np_random.uniform(-1.0, 1.0, self.observation_dimension).astype(np.float32)
        self._mask = self.np_random.random(self.n_actions) < 0.5
        self._mask[self.np_random.integers(self.n_actions)] = True  # never an empty support

    def action_masks(self) -> np.ndarray:
        """:return: the safe actions of the current state, shape ``(n_actions,)``, bool"""
        return self._mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._elapsed = 0
        self._draw_state()
        return self._observation.copy(), {"cost": 0.0}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        index = int(action)
        target = (self._observation[0] + 1.0) / 2.0 * (self.n_actions - 1)
        reward = -abs(index - target) / self.n_actions
        cost = 0.0 if self._mask[index] else 1.0
        self._elapsed += 1
        self._draw_state()
        return self._observation.copy(), float(reward), False, self._elapsed >= self.episode_length, {"cost": cost}
