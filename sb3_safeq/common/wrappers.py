"""The safety wrapper: exposes the safe support, carries it in ``info``, counts and optionally prevents violations."""

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.common.supports.base import COST_INFO_KEY
from sb3_safeq.common.supports.box_utils import SAFE_BOUNDS_METHOD
from sb3_safeq.common.supports.constrained_box import ConstrainedBox
from sb3_safeq.common.supports.factory import make_support_kind
from sb3_safeq.common.supports.mask_utils import ACTION_MASKS_METHOD
from sb3_safeq.common.supports.polytope_utils import SAFE_CONSTRAINTS_METHOD

#: Per-step ``info`` flags written by :class:`SafetyWrapper` (counted by the algorithm and the safety callback).
OUT_OF_SUPPORT_INFO_KEY = "out_of_support"
SHIELDED_INFO_KEY = "shielded"
EMPTY_SUPPORT_INFO_KEY = "empty_support"
#: Written at the last step of an episode, so ``Monitor(info_keywords=...)`` can log them to ``monitor.csv``.
EPISODE_COST_INFO_KEY = "episode_cost"
EPISODE_UNSAFE_INFO_KEY = "episode_unsafe_visits"


class UnsafeVisitError(RuntimeError):
    """
    Raised by :class:`SafetyWrapper` in strict mode on the first unsafe step (``info["cost"] > 0``).

    :param message: the explanation
    :param info: the step's ``info``, completed by the wrapper (cost, support, flags), so that whoever catches the
        error can still count the step (SafeSupportQ adds it to ``model.safety_counters``)
    """

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info = {} if info is None else info


def as_cost(value: Any, source: str = f"info['{COST_INFO_KEY}']") -> float:
    """
    Validate one step's ground-truth cost.

    :param value: the cost as the environment reports it
    :param source: where it came from, for error messages
    :return: the cost as a float, finite and ``>= 0``
    :raises ValueError: for a non-numeric, NaN, infinite or negative cost (a NaN compared with 0 is never "unsafe",
        so it would hide an unsafe visit)
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating, np.ndarray)):
        raise ValueError(
            f"{source} = {value!r} ({type(value).__name__}) is not a number: the cost of a step must be a real "
            "number >= 0 (> 0 for an unsafe step), e.g. `info['cost'] = float(hit_obstacle)`."
        )
    if isinstance(value, np.ndarray):
        if (
            value.size != 1
            or not np.issubdtype(value.dtype, np.number)
            or np.issubdtype(value.dtype, np.complexfloating)
        ):
            raise ValueError(
                f"{source} is an array of shape {value.shape} and dtype {value.dtype}: the cost of one step must be "
                "one real number >= 0 (sum the costs of several constraints into one)."
            )
        value = value.reshape(())[()]
    cost = float(value)
    if not np.isfinite(cost) or cost < 0:
        raise ValueError(
            f"{source} = {cost}: the cost of a step must be finite and >= 0 (> 0 for an unsafe step). A NaN or "
            "negative cost would hide unsafe visits from the counters and from strict mode: fix the cost function."
        )
    return cost


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

    def update_from_infos(self, infos: list[dict[str, Any]]) -> np.ndarray:
        """
        Accumulate the per-step flags a :class:`SafetyWrapper` wrote into ``info``.

        :param infos: one info dict per environment, from one vectorised step
        :return: the validated cost of each environment's step, shape ``(len(infos),)``
        """
        costs = np.zeros(len(infos))
        for index, info in enumerate(infos):
            cost = costs[index] = as_cost(info.get(COST_INFO_KEY, 0.0))
            self.steps += 1
            self.cumulative_cost += cost
            self.unsafe_visits += int(cost > 0)
            self.out_of_support_actions += int(bool(info.get(OUT_OF_SUPPORT_INFO_KEY, False)))
            self.shielded_actions += int(bool(info.get(SHIELDED_INFO_KEY, False)))
            self.empty_support_states += int(bool(info.get(EMPTY_SUPPORT_INFO_KEY, False)))
        return costs

    def as_dict(self) -> dict[str, float]:
        """:return: the counters by name"""
        return asdict(self)


class SafetyWrapper(gym.Wrapper):
    """
    Exposes the safe support of an environment and keeps the books on safety.

    - ``Discrete`` actions: ``action_masks()`` returns the mask of the current observation (sb3-contrib convention),
      and ``info["action_mask"]`` carries it.
    - ``Box`` actions: ``safe_action_bounds()`` returns the safe box ``(low, high)`` of the current observation, and
      ``info["safe_action_bounds"]`` carries it as one float32 array of shape ``(2, action_dim)``.
    - ``reset`` and ``step`` write the support of the *returned* observation into ``info``, so it survives a VecEnv
      auto-reset (the terminal observation's support is then only available there).
    - Every step is checked: ``info["cost"] > 0`` is an unsafe visit, an action outside the support is counted, and a
      non-terminal state with an empty support is counted as an empty-support state.
    - ``shield=True`` replaces an out-of-support action by a safe one (counted): a uniformly drawn safe action for
      masks, the nearest action of the box (clipping) for boxes. Any SB3 algorithm can then be compared with
      SafeSupportQ on the same footing.
    - ``strict=True`` raises :class:`UnsafeVisitError` on the first unsafe visit.

    :param env: the environment; it must provide ``action_masks()`` (Discrete) or ``safe_action_bounds()`` (Box)
        unless the matching function below is given
    :param action_mask_fn: optional mask source for Discrete actions, as in ``ActionMasker``: a function
        ``fn(env) -> mask`` or the name of a method of the environment
    :param shield: replace out-of-support actions by safe ones
    :param strict: raise on the first unsafe visit
    :param safe_bounds_fn: optional box source for Box actions: a function ``fn(env) -> (low, high)`` or the name of
        a method of the environment
    :param safe_constraints_fn: optional source of linear constraints for Box actions: a function
        ``fn(env) -> (A, b)`` or the name of a method of the environment; the safe set of each state is then
        ``{a in action space : A a <= b}`` and the wrapper's action space a :class:`ConstrainedBox`
    :param max_constraints: the largest number of rows of ``A`` in any state, with ``safe_constraints_fn`` when the
        environment's action space is a plain ``Box`` (a ``ConstrainedBox`` declares it already)
    """

    def __init__(
        self,
        env: gym.Env,
        action_mask_fn: Callable[[gym.Env], np.ndarray] | str | None = None,
        shield: bool = False,
        strict: bool = False,
        safe_bounds_fn: Callable[[gym.Env], Any] | str | None = None,
        safe_constraints_fn: Callable[[gym.Env], Any] | str | None = None,
        max_constraints: int | None = None,
    ) -> None:
        super().__init__(env)
        if max_constraints is not None or safe_constraints_fn is not None:
            self.action_space = _constrained_action_space(env.action_space, max_constraints)
        self.support_kind = make_support_kind(self.action_space)
        sources = {
            "action_mask_fn": action_mask_fn,
            "safe_bounds_fn": safe_bounds_fn,
            "safe_constraints_fn": safe_constraints_fn,
        }
        for name, source in sources.items():
            if name != self.support_kind.wrapper_argument and source is not None:
                raise ValueError(
                    f"{name} does not apply to the action space {env.action_space!r}: give its safe support with "
                    f"{self.support_kind.wrapper_argument}."
                )
        self._support_fn = self._make_support_fn(env, sources[self.support_kind.wrapper_argument])
        self.shield = shield
        self.strict = strict
        self.counters = SafetyCounters()
        self._support: np.ndarray | None = None
        self._episode_cost = 0.0
        self._episode_unsafe = 0
        self._warned_missing_cost = False

    def _make_support_fn(self, env: gym.Env, source: Callable[[gym.Env], Any] | str | None) -> Callable[[], Any]:
        if source is None:
            return self.support_kind.find_method(env)
        if isinstance(source, str):
            method = env.get_wrapper_attr(source)
            if not callable(method):
                raise ValueError(f"The environment attribute {source!r} is not a method.")
            return method
        if callable(source):
            return lambda: source(self.env)
        raise TypeError(f"The support source must be a callable, a method name or None, got {source!r}.")

    def _read_support(self) -> np.ndarray:
        return self.support_kind.validate(self._support_fn(), source=f"{self.support_kind.method_name}()")

    def _current_support(self, name: str) -> np.ndarray:
        if self._support is None:
            raise RuntimeError(f"Call reset() before {name}(): the support belongs to the current observation.")
        return self._support

    def _support_method_result(self, method_name: str) -> Any:
        """:return: what the environment's support method ``method_name`` returns for the current observation"""
        if method_name != self.support_kind.method_name:
            raise AttributeError(
                f"{method_name}() does not apply to the action space {self.env.action_space!r}: its safe support is "
                f"given by {self.support_kind.method_name}()."
            )
        return self.support_kind.env_method_result(self._current_support(method_name))

    def action_masks(self) -> np.ndarray:
        """
        :return: the safe-action mask of the current observation (a copy; Discrete action spaces)
        """
        return self._support_method_result(ACTION_MASKS_METHOD)

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """
        :return: ``(low, high)``, the safe box of the current observation (copies; Box action spaces). ``low > high``
            on some axis means no action is safe.
        """
        return self._support_method_result(SAFE_BOUNDS_METHOD)

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """
        :return: ``(A, b)``, the linear constraints ``A a <= b`` of the current observation's safe actions (copies,
            without the padding rows; ``ConstrainedBox`` action spaces)
        """
        return self._support_method_result(SAFE_CONSTRAINTS_METHOD)

    def _is_empty(self, support: np.ndarray) -> bool:
        return bool(self.support_kind.empty(support))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._support = self._read_support()
        self._episode_cost = 0.0
        self._episode_unsafe = 0
        info[self.support_kind.info_key] = self._support.copy()
        if self._is_empty(self._support):
            self.counters.empty_support_states += 1
            info[EMPTY_SUPPORT_INFO_KEY] = True
        return obs, info

    def _check_action(self, action: Any, support: np.ndarray) -> tuple[Any, bool, bool]:
        """:return: the action to take (shielded or not), whether it was out of support, whether it was shielded"""
        inside = self.support_kind.contains(action, support)
        if inside or not self.shield or self._is_empty(support):
            return action, not inside, False
        return self.support_kind.shield(action, support, self.np_random), True, True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        support = self._current_support("step")
        action, out_of_support, shielded = self._check_action(action, support)
        self.counters.out_of_support_actions += int(out_of_support)
        self.counters.shielded_actions += int(shielded)

        obs, reward, terminated, truncated, info = self.env.step(action)

        if COST_INFO_KEY not in info and not self._warned_missing_cost:
            warnings.warn(
                f"The environment reports no info['{COST_INFO_KEY}'], so unsafe visits cannot be counted (taken as "
                "0). Return a ground-truth cost (> 0 for an unsafe step) in the step info.",
                stacklevel=2,
            )
            self._warned_missing_cost = True
        cost = as_cost(info.get(COST_INFO_KEY, 0.0))
        self.counters.steps += 1
        self.counters.cumulative_cost += cost
        self._episode_cost += cost
        if cost > 0:
            self.counters.unsafe_visits += 1
            self._episode_unsafe += 1

        self._support = self._read_support()
        empty_support = not terminated and self._is_empty(self._support)
        if empty_support:
            self.counters.empty_support_states += 1

        info[COST_INFO_KEY] = cost
        info[self.support_kind.info_key] = self._support.copy()
        info[OUT_OF_SUPPORT_INFO_KEY] = out_of_support
        info[SHIELDED_INFO_KEY] = shielded
        info[EMPTY_SUPPORT_INFO_KEY] = empty_support
        if terminated or truncated:
            info[EPISODE_COST_INFO_KEY] = self._episode_cost
            info[EPISODE_UNSAFE_INFO_KEY] = self._episode_unsafe
        if cost > 0 and self.strict:
            # Raised once the info is complete: the error carries it, so that the step can still be counted.
            raise UnsafeVisitError(
                f"Unsafe visit (info['cost'] = {cost}) after action {action!r}; strict mode stops at the first "
                "one. Check that the safe support really is safe (it must exclude every action that can lead "
                "to a cost).",
                info,
            )
        return obs, reward, terminated, truncated, info


def _constrained_action_space(action_space: gym.Space, max_constraints: int | None) -> ConstrainedBox:
    """
    :param action_space: the wrapped environment's action space
    :param max_constraints: the largest number of rows of ``A`` given to the wrapper, or None
    :return: the action space declaring linear-constraint supports
    """
    if isinstance(action_space, ConstrainedBox):
        if max_constraints is not None and max_constraints != action_space.max_constraints:
            raise ValueError(
                f"max_constraints={max_constraints} contradicts the environment's ConstrainedBox action space "
                f"(max_constraints={action_space.max_constraints}): leave max_constraints out."
            )
        return action_space
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"safe_constraints_fn and max_constraints describe Box actions, not {action_space!r}: use action_mask_fn "
            "for Discrete actions."
        )
    if max_constraints is None:
        raise ValueError(
            "safe_constraints_fn needs max_constraints=m, the largest number of rows of A in any state (it fixes the "
            "layout of the supports in the replay buffer), e.g. SafetyWrapper(env, safe_constraints_fn=fn, "
            "max_constraints=4)."
        )
    return ConstrainedBox.from_box(action_space, max_constraints)
