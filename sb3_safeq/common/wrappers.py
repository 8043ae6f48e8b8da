"""The safety wrapper: exposes the safe support, carries it in ``info``, counts and optionally prevents violations."""

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.common.support import (
    ACTION_MASK_INFO_KEY,
    ACTION_MASKS_METHOD,
    COST_INFO_KEY,
    as_action_mask,
    get_action_mask_fn,
)

#: Per-step ``info`` flags written by :class:`SafetyWrapper` (counted by the algorithm and the safety callback).
OUT_OF_SUPPORT_INFO_KEY = "out_of_support"
SHIELDED_INFO_KEY = "shielded"
EMPTY_SUPPORT_INFO_KEY = "empty_support"
#: Written at the last step of an episode, so ``Monitor(info_keywords=...)`` can log them to ``monitor.csv``.
EPISODE_COST_INFO_KEY = "episode_cost"
EPISODE_UNSAFE_INFO_KEY = "episode_unsafe_visits"


class UnsafeVisitError(RuntimeError):
    """Raised by :class:`SafetyWrapper` in strict mode on the first unsafe step (``info["cost"] > 0``)."""


@dataclass
class SafetyCounters:
    """
    Running safety statistics.

    :param steps: environment steps seen
    :param unsafe_visits: steps with ``info["cost"] > 0`` (the ground truth, never derived from the mask)
    :param cumulative_cost: sum of ``info["cost"]``
    :param out_of_support_actions: actions the agent chose outside the safe support
    :param shielded_actions: out-of-support actions replaced by a safe one (shield mode)
    :param empty_support_states: non-terminal states reached whose support is empty
    """

    steps: int = 0
    unsafe_visits: int = 0
    cumulative_cost: float = 0.0
    out_of_support_actions: int = 0
    shielded_actions: int = 0
    empty_support_states: int = 0

    def update_from_infos(self, infos: list[dict[str, Any]]) -> None:
        """
        Accumulate the per-step flags a :class:`SafetyWrapper` wrote into ``info``.

        :param infos: one info dict per environment, from one vectorised step
        """
        for info in infos:
            cost = float(info.get(COST_INFO_KEY, 0.0))
            self.steps += 1
            self.cumulative_cost += cost
            self.unsafe_visits += int(cost > 0)
            self.out_of_support_actions += int(bool(info.get(OUT_OF_SUPPORT_INFO_KEY, False)))
            self.shielded_actions += int(bool(info.get(SHIELDED_INFO_KEY, False)))
            self.empty_support_states += int(bool(info.get(EMPTY_SUPPORT_INFO_KEY, False)))

    def as_dict(self) -> dict[str, float]:
        """:return: the counters by name"""
        return asdict(self)


class SafetyWrapper(gym.Wrapper):
    """
    Exposes the safe support of a Discrete-action environment and keeps the books on safety.

    - ``action_masks()`` returns the mask of the current observation (sb3-contrib convention).
    - ``reset`` and ``step`` write the mask of the *returned* observation into ``info["action_mask"]``, so it
      survives a VecEnv auto-reset (the terminal observation's mask is then only available there).
    - Every step is checked: ``info["cost"] > 0`` is an unsafe visit, an action outside the mask is counted, and a
      non-terminal state with an all-False mask is counted as an empty-support state.
    - ``shield=True`` replaces an out-of-support action by a uniformly drawn safe one (counted), so any SB3 algorithm
      can be compared with SafeSupportQ on the same footing.
    - ``strict=True`` raises :class:`UnsafeVisitError` on the first unsafe visit.

    :param env: the environment; it must provide ``action_masks()`` unless ``action_mask_fn`` is given
    :param action_mask_fn: optional mask source, as in ``ActionMasker``: a function ``fn(env) -> mask`` or the name
        of a method of the environment
    :param shield: replace out-of-support actions by safe ones
    :param strict: raise on the first unsafe visit
    """

    def __init__(
        self,
        env: gym.Env,
        action_mask_fn: Callable[[gym.Env], np.ndarray] | str | None = None,
        shield: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(
                f"SafetyWrapper supports Discrete action spaces with action masks, got {env.action_space!r}."
            )
        self.n_actions = int(env.action_space.n)
        if action_mask_fn is None:
            mask_method = get_action_mask_fn(env)
            self._mask_fn: Callable[[], np.ndarray] = mask_method
        elif isinstance(action_mask_fn, str):
            mask_method = env.get_wrapper_attr(action_mask_fn)
            if not callable(mask_method):
                raise ValueError(f"The environment attribute {action_mask_fn!r} is not a method.")
            self._mask_fn = mask_method
        elif callable(action_mask_fn):
            self._mask_fn = lambda: action_mask_fn(self.env)
        else:
            raise TypeError(f"action_mask_fn must be a callable, a method name or None, got {action_mask_fn!r}.")
        self.shield = shield
        self.strict = strict
        self.counters = SafetyCounters()
        self._mask: np.ndarray | None = None
        self._episode_cost = 0.0
        self._episode_unsafe = 0
        self._warned_missing_cost = False

    def _read_mask(self) -> np.ndarray:
        return as_action_mask(self._mask_fn(), self.n_actions, source=f"{ACTION_MASKS_METHOD}()")

    def action_masks(self) -> np.ndarray:
        """
        :return: the safe-action mask of the current observation (a copy)
        """
        if self._mask is None:
            raise RuntimeError("Call reset() before action_masks(): the mask belongs to the current observation.")
        return self._mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._mask = self._read_mask()
        self._episode_cost = 0.0
        self._episode_unsafe = 0
        info[ACTION_MASK_INFO_KEY] = self._mask.copy()
        if not self._mask.any():
            self.counters.empty_support_states += 1
            info[EMPTY_SUPPORT_INFO_KEY] = True
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._mask is None:
            raise RuntimeError("Call reset() before step().")
        action_index = int(np.asarray(action).reshape(-1)[0])
        out_of_support = not (0 <= action_index < self.n_actions and self._mask[action_index])
        shielded = False
        if out_of_support:
            self.counters.out_of_support_actions += 1
            if self.shield and self._mask.any():
                action = int(self.np_random.choice(np.flatnonzero(self._mask)))
                shielded = True
                self.counters.shielded_actions += 1

        obs, reward, terminated, truncated, info = self.env.step(action)

        if COST_INFO_KEY not in info and not self._warned_missing_cost:
            warnings.warn(
                f"The environment reports no info['{COST_INFO_KEY}'], so unsafe visits cannot be counted (taken as "
                "0). Return a ground-truth cost (> 0 for an unsafe step) in the step info.",
                stacklevel=2,
            )
            self._warned_missing_cost = True
        cost = float(info.get(COST_INFO_KEY, 0.0))
        self.counters.steps += 1
        self.counters.cumulative_cost += cost
        self._episode_cost += cost
        if cost > 0:
            self.counters.unsafe_visits += 1
            self._episode_unsafe += 1
            if self.strict:
                raise UnsafeVisitError(
                    f"Unsafe visit (info['cost'] = {cost}) after action {action!r}; strict mode stops at the first "
                    "one. Check that the safe support really is safe (the mask must exclude every action that can "
                    "lead to a cost)."
                )

        self._mask = self._read_mask()
        empty_support = not terminated and not self._mask.any()
        if empty_support:
            self.counters.empty_support_states += 1

        info[COST_INFO_KEY] = cost
        info[ACTION_MASK_INFO_KEY] = self._mask.copy()
        info[OUT_OF_SUPPORT_INFO_KEY] = out_of_support
        info[SHIELDED_INFO_KEY] = shielded
        info[EMPTY_SUPPORT_INFO_KEY] = empty_support
        if terminated or truncated:
            info[EPISODE_COST_INFO_KEY] = self._episode_cost
            info[EPISODE_UNSAFE_INFO_KEY] = self._episode_unsafe
        return obs, reward, terminated, truncated, info
