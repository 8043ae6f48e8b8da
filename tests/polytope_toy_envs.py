"""
Small environments with :class:`~sb3_safeq.ConstrainedBox` actions (the polytope kind) used by the tests that are
parametrised over the support kinds. Their containment checks are written here, without the package's geometry: a
polytope action is safe when it lies in the action box exactly and satisfies every row ``A_i a <= b_i`` within a
*distance* of :data:`ROW_TOLERANCE` (``A_i a - b_i <= 1e-6 * ||A_i||``), the kind's contract.
"""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq import ConstrainedBox

#: Distance by which an action may violate a row of its polytope (the polytope kind's stated contract).
ROW_TOLERANCE = 1e-6


def rows_contain(rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """
    :param rows: stacked ``[A | b]``, ``(..., m, d + 1)``
    :param actions: ``(..., d)``, broadcasting with the leading dimensions of ``rows``
    :return: per action, every row holds within :data:`ROW_TOLERANCE` distance (False for NaN)
    """
    rows = np.asarray(rows, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    matrix, offsets = rows[..., :-1], rows[..., -1]
    residuals = (matrix * actions[..., None, :]).sum(axis=-1) - offsets
    return np.all(residuals <= ROW_TOLERANCE * np.sqrt((matrix**2).sum(axis=-1)), axis=-1)


def pad_rows(matrix: np.ndarray, offsets: np.ndarray, max_constraints: int) -> np.ndarray:
    """:return: ``[A | b]`` padded with ``(0, 1)`` rows to ``(max_constraints, d + 1)``, float32"""
    rows = np.zeros((max_constraints, matrix.shape[1] + 1), dtype=np.float32)
    rows[:, -1] = 1.0
    rows[: len(offsets), :-1] = matrix
    rows[: len(offsets), -1] = offsets
    return rows


class RandomPolytopeEnv(gym.Env):
    """
    A ``ConstrainedBox``-action environment whose polytope of safe actions changes randomly every step (flat ones,
    a segment between two opposite rows, now and then) and which *raises* on an action outside it. The observation
    is the padded rows ``[A | b]`` (float32, flattened) and the elapsed fraction of the episode, so the support of
    any stored observation can be read back from it. Same parameters as :class:`tests.box_toy_envs.RandomBoxEnv`.

    :param action_low: lower bounds of the action space
    :param action_high: upper bounds of the action space
    :param episode_length: steps before termination (``terminate=True``) or before the episode just continues
    :param terminate: terminate after ``episode_length`` steps (else rely on a TimeLimit to truncate)
    :param terminal_support: ``"random"``, or ``"empty"``: the terminal state of an episode has an empty polytope
    :param empty_at: if given, the state reached after this many steps of an episode has an empty polytope
    :param degenerate_prob: probability that a new polytope is flat (a segment through the box); 0 by default, as
        a flat set leaves rejection nothing and sends every sample through a linear program and hit-and-run chains
        (slow for the parametrised tests; the flat sets have their own tests)
    :param dict_obs: return a Dict observation (``"polytope"``: the flat observation above, ``"step"``: the step count)
    :param max_constraints: rows stored per state
    """

    def __init__(
        self,
        action_low: tuple[float, ...] = (-2.0, 0.0),
        action_high: tuple[float, ...] = (1.0, 5.0),
        episode_length: int = 20,
        terminate: bool = True,
        terminal_support: str = "random",
        empty_at: int | None = None,
        degenerate_prob: float = 0.0,
        dict_obs: bool = False,
        max_constraints: int = 3,
    ) -> None:
        self.action_space = ConstrainedBox(
            np.array(action_low, dtype=np.float32),
            np.array(action_high, dtype=np.float32),
            dtype=np.float32,
            max_constraints=max_constraints,
        )
        action_dim = self.action_space.shape[0]
        size = max_constraints * (action_dim + 1) + 1
        flat = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.observation_space = (
            spaces.Dict({"polytope": flat, "step": spaces.Discrete(episode_length + 1)}) if dict_obs else flat
        )
        self.action_dim = action_dim
        self.max_constraints = max_constraints
        self.episode_length = episode_length
        self.terminate = terminate
        self.terminal_support = terminal_support
        self.empty_at = empty_at
        self.degenerate_prob = degenerate_prob
        self.dict_obs = dict_obs
        self._t = 0
        self._rows = self._empty()

    def _empty(self) -> np.ndarray:
        # One finite infeasible row: a_0 <= low_0 - 1.
        matrix = np.eye(1, self.action_dim)
        return pad_rows(matrix, np.array([self.action_space.low[0] - 1.0]), self.max_constraints)

    def _new_rows(self) -> np.ndarray:
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        point = low + self.np_random.random(self.action_dim) * (high - low)  # a safe action of every new polytope
        if self.max_constraints >= 2 and self.np_random.random() < self.degenerate_prob:
            normal = self.np_random.normal(size=self.action_dim)
            matrix = np.stack([normal, -normal])
            offsets = matrix @ point  # both rows tight: the segment {normal . a = normal . point}
        else:
            n_rows = int(self.np_random.integers(1, self.max_constraints + 1))  # 0 rows: often the same support
            matrix = self.np_random.normal(size=(n_rows, self.action_dim)) * (high - low) ** -1
            slack = self.np_random.random(n_rows) * np.linalg.norm(matrix, axis=1) * (high - low).min() / 2
            offsets = matrix @ point + slack
        rows = pad_rows(matrix, offsets, self.max_constraints)
        # float32 rounding of b may cut `point` off by a hair: loosen the row by its rounding (keeps it feasible).
        rows[: len(offsets), -1] = np.nextafter(rows[: len(offsets), -1], np.float32(np.inf))
        return rows

    def _obs(self) -> Any:
        progress = min(self._t / self.episode_length, 1.0)
        flat = np.append(self._rows.ravel(), progress).astype(np.float32)
        return {"polytope": flat, "step": min(self._t, self.episode_length)} if self.dict_obs else flat

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        return self._rows[:, :-1].copy(), self._rows[:, -1].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._rows = self._new_rows()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        values = np.asarray(action, dtype=np.float32).reshape(self.action_dim)
        in_box = np.all((values >= self.action_space.low) & (values <= self.action_space.high))
        if not (in_box and rows_contain(self._rows, values)):
            raise AssertionError(f"action {values.tolist()} outside the safe polytope {self._rows.tolist()}")
        self._t += 1
        terminated = self.terminate and self._t >= self.episode_length
        empty = self._t == self.empty_at or (terminated and self.terminal_support == "empty")
        self._rows = self._empty() if empty else self._new_rows()
        # Reward: the first action axis, normalised (learnable, and a different best action in every polytope).
        span = float(self.action_space.high[0] - self.action_space.low[0])
        reward = float((values[0] - self.action_space.low[0]) / span) if not empty else 0.0
        return self._obs(), reward, terminated, False, {"cost": 0.0}


class NoConstraintsEnv(gym.Env):
    """A ``ConstrainedBox``-action environment without ``safe_action_constraints()``."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    action_space = ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {"cost": 0.0}


class FixedPolytopeEnv(NoConstraintsEnv):
    """
    Like :class:`NoConstraintsEnv` with constant constraints (anything: possibly infeasible or malformed, for error
    tests) and a constant cost; records every action it is stepped with.

    :param matrix: ``A`` returned by ``safe_action_constraints()``
    :param offsets: ``b``
    :param cost: ``info["cost"]`` of every step (None: no ``"cost"`` entry at all)
    """

    def __init__(self, matrix: Any, offsets: Any, cost: float | None = 0.0) -> None:
        self.matrix = np.asarray(matrix)
        self.offsets = np.asarray(offsets)
        self.cost = cost
        self.actions: list[Any] = []

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        return self.matrix, self.offsets

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(action)
        info = {} if self.cost is None else {"cost": self.cost}
        return np.zeros(3, dtype=np.float32), 0.0, False, False, info
