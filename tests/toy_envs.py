"""Small environments used by the tests."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RandomMaskEnv(gym.Env):
    """
    An environment whose safe mask changes randomly every step and which *raises* on an action outside it, so any
    unsafe action a learner emits fails the test. The observation encodes the mask, so it is learnable.

    :param n_actions: number of discrete actions
    :param episode_length: steps before termination (``terminate=True``) or before the episode just continues
    :param terminate: terminate after ``episode_length`` steps (else rely on a TimeLimit to truncate)
    :param dict_obs: return a Dict observation
    :param terminal_support: ``"random"``, or ``"empty"``: the terminal state of an episode has an all-False mask
    :param empty_at: if given, the state reached after this many steps of an episode has an all-False mask (whether
        or not the episode ends there)
    """

    def __init__(
        self,
        n_actions: int = 5,
        episode_length: int = 20,
        terminate: bool = True,
        dict_obs: bool = False,
        terminal_support: str = "random",
        empty_at: int | None = None,
    ) -> None:
        self.n_actions = n_actions
        self.episode_length = episode_length
        self.terminate = terminate
        self.dict_obs = dict_obs
        self.terminal_support = terminal_support
        self.empty_at = empty_at
        box = spaces.Box(0.0, 1.0, shape=(n_actions + 1,), dtype=np.float32)
        self.observation_space = (
            spaces.Dict({"mask": box, "step": spaces.Discrete(episode_length + 1)}) if dict_obs else box
        )
        self.action_space = spaces.Discrete(n_actions)
        self._mask = np.ones(n_actions, dtype=bool)
        self._t = 0

    def _new_mask(self) -> np.ndarray:
        mask = self.np_random.random(self.n_actions) < 0.5
        mask[self.np_random.integers(self.n_actions)] = True
        return mask

    def _obs(self) -> Any:
        flat = np.append(self._mask.astype(np.float32), np.float32(self._t / self.episode_length))
        if self.dict_obs:
            return {"mask": flat, "step": min(self._t, self.episode_length)}
        return flat

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._mask = self._new_mask()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        action = int(action)
        if not self._mask[action]:
            raise AssertionError(f"unsafe action {action} taken with mask {self._mask}")
        reward = float(action == int(np.flatnonzero(self._mask)[-1]))  # the highest safe action pays
        self._t += 1
        terminated = self.terminate and self._t >= self.episode_length
        empty = self._t == self.empty_at or (terminated and self.terminal_support == "empty")
        # An empty mask draws nothing from the generator: the other masks of a seeded run stay the same.
        self._mask = np.zeros(self.n_actions, dtype=bool) if empty else self._new_mask()
        return self._obs(), reward, terminated, False, {"cost": 0.0}


class NoMaskEnv(gym.Env):
    """A Discrete-action environment without ``action_masks()``."""

    observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {"cost": 0.0}


class FixedMaskEnv(NoMaskEnv):
    """
    Like :class:`NoMaskEnv` with a constant mask (possibly all False), a configurable action space and a constant
    cost; records every action it is stepped with.

    :param mask: what ``action_masks()`` returns
    :param action_space: the action space (default ``Discrete(len(mask))``)
    :param cost: ``info["cost"]`` of every step (None: no ``"cost"`` entry at all)
    """

    def __init__(self, mask: np.ndarray, action_space: spaces.Space | None = None, cost: float | None = 0.0) -> None:
        self.mask = np.asarray(mask)
        self.action_space = action_space if action_space is not None else spaces.Discrete(len(self.mask))
        self.cost = cost
        self.actions: list[Any] = []

    def action_masks(self) -> np.ndarray:
        return self.mask

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(action)
        info = {} if self.cost is None else {"cost": self.cost}
        return np.zeros(2, dtype=np.float32), 0.0, False, False, info


class LotteryEnv(gym.Env):
    """
    One-step episodes with a skewed outcome: every action pays 100 with probability 0.1, else 0, and ends the episode.
    ``Q(s, a) = 10`` (the mean) for every action, while the median of the sampled targets is 0.
    """

    observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def action_masks(self) -> np.ndarray:
        return np.ones(2, dtype=bool)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = 100.0 if self.np_random.random() < 0.1 else 0.0
        return np.zeros(1, dtype=np.float32), reward, True, False, {"cost": 0.0}
