"""Small environments with ``Box`` actions used by the tests of the continuous-action support."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RandomBoxEnv(gym.Env):
    """
    A ``Box``-action environment whose safe box changes randomly every step (with degenerate ``low == high`` axes
    now and then) and which *raises* on an action outside it, so any out-of-box action a learner emits fails the
    test. The observation is the box itself (``low``, ``high``, in action units) and the elapsed fraction of the
    episode, so the support of any stored observation can be read back from it.

    :param action_low: lower bounds of the action space
    :param action_high: upper bounds of the action space
    :param episode_length: steps before termination (``terminate=True``) or before the episode just continues
    :param terminate: terminate after ``episode_length`` steps (else rely on a TimeLimit to truncate)
    :param terminal_support: ``"random"``, or ``"empty"``: the terminal state of an episode has an empty box
    :param empty_at: if given, the state reached after this many steps of an episode has an empty box (whether or
        not the episode ends there)
    :param degenerate_prob: probability that an axis of a new box is a single point
    :param dict_obs: return a Dict observation (``"box"``: the flat observation above, ``"step"``: the step count)
    """

    def __init__(
        self,
        action_low: tuple[float, ...] = (-2.0, 0.0),
        action_high: tuple[float, ...] = (1.0, 5.0),
        episode_length: int = 20,
        terminate: bool = True,
        terminal_support: str = "random",
        empty_at: int | None = None,
        degenerate_prob: float = 0.2,
        dict_obs: bool = False,
    ) -> None:
        self.action_space = spaces.Box(
            np.array(action_low, dtype=np.float32), np.array(action_high, dtype=np.float32), dtype=np.float32
        )
        action_dim = self.action_space.shape[0]
        obs_low = np.concatenate([self.action_space.low, self.action_space.low, [0.0]]).astype(np.float32)
        obs_high = np.concatenate([self.action_space.high, self.action_space.high, [1.0]]).astype(np.float32)
        flat = spaces.Box(obs_low, obs_high, dtype=np.float32)
        self.observation_space = (
            spaces.Dict({"box": flat, "step": spaces.Discrete(episode_length + 1)}) if dict_obs else flat
        )
        self.action_dim = action_dim
        self.episode_length = episode_length
        self.terminate = terminate
        self.terminal_support = terminal_support
        self.empty_at = empty_at
        self.degenerate_prob = degenerate_prob
        self.dict_obs = dict_obs
        self._t = 0
        self._box = self._empty()

    def _empty(self) -> np.ndarray:
        return np.stack([self.action_space.high, self.action_space.low]).astype(np.float32)

    def _new_box(self) -> np.ndarray:
        fractions = np.sort(self.np_random.random((2, self.action_dim)), axis=0)
        point = self.np_random.random(self.action_dim) < self.degenerate_prob
        fractions[1, point] = fractions[0, point]
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        box = (low + fractions * (high - low)).astype(np.float32)
        return np.clip(box, self.action_space.low, self.action_space.high)

    def _obs(self) -> Any:
        progress = min(self._t / self.episode_length, 1.0)
        flat = np.concatenate([self._box[0], self._box[1], [progress]]).astype(np.float32)
        return {"box": flat, "step": min(self._t, self.episode_length)} if self.dict_obs else flat

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._box[0].copy(), self._box[1].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._box = self._new_box()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        values = np.asarray(action, dtype=np.float32).reshape(self.action_dim)
        if not np.all((values >= self._box[0]) & (values <= self._box[1])):
            raise AssertionError(f"action {values.tolist()} outside the safe box {self._box.tolist()}")
        self._t += 1
        terminated = self.terminate and self._t >= self.episode_length
        empty = self._t == self.empty_at or (terminated and self.terminal_support == "empty")
        self._box = self._empty() if empty else self._new_box()
        # Reward: closeness to the box's upper corner (learnable from the observation).
        width = np.maximum(self._box[1] - self._box[0], 1e-6)
        reward = float(-np.abs(values - self._box[1]).sum() / width.sum()) if not empty else 0.0
        return self._obs(), reward, terminated, False, {"cost": 0.0}


class NoBoundsBoxEnv(gym.Env):
    """A ``Box``-action environment without ``safe_action_bounds()``."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {"cost": 0.0}


class FixedBoxEnv(NoBoundsBoxEnv):
    """
    Like :class:`NoBoundsBoxEnv` with a constant safe box (anything: possibly empty, NaN or outside the action
    space, for error tests) and a constant cost; records every action it is stepped with.

    :param low: lower bounds returned by ``safe_action_bounds()``
    :param high: upper bounds returned by ``safe_action_bounds()``
    :param cost: ``info["cost"]`` of every step (None: no ``"cost"`` entry at all)
    :param action_space: the action space (default ``[-1, 1]^2``)
    """

    def __init__(self, low: Any, high: Any, cost: float | None = 0.0, action_space: spaces.Box | None = None) -> None:
        self.low = np.asarray(low)
        self.high = np.asarray(high)
        self.cost = cost
        if action_space is not None:
            self.action_space = action_space
        self.actions: list[Any] = []

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.low, self.high

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(action)
        info = {} if self.cost is None else {"cost": self.cost}
        return np.zeros(3, dtype=np.float32), 0.0, False, False, info
