"""
One description of "the safe support" per kind of action space, so the algorithm, the wrapper and the replay buffer
handle masks and boxes through the same few calls.

- ``Discrete`` actions: a boolean action mask per state, from ``action_masks()``.
- ``Box`` actions: a box ``(low, high)`` per state, from ``safe_action_bounds()``; stored scaled to ``[-1, 1]``.

*Raw* supports are what the environment gives (masks; boxes in action units), *agent* supports what the networks
and the replay buffer use (masks; boxes in ``[-1, 1]`` units).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.common.bounds import (
    SAFE_BOUNDS_INFO_KEY,
    SAFE_BOUNDS_METHOD,
    BoxScaler,
    check_box_action_space,
    empty_box_message,
    empty_boxes,
    get_safe_bounds_fn,
    stack_bounds,
)
from sb3_safeq.common.support import (
    ACTION_MASK_INFO_KEY,
    ACTION_MASKS_METHOD,
    MissingSupportError,
    empty_support_message,
    get_action_mask_fn,
    masks_from_infos,
    stack_masks,
)


class SupportSpec(ABC):
    """How the safe support of one action space is read, validated, stored and tested for emptiness."""

    #: environment method returning the support of the current observation
    method_name: str
    #: ``info`` key where the safety wrapper writes the (raw) support of the returned observation
    info_key: str

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    @abstractmethod
    def find_method(self, env: gym.Env) -> Callable[[], Any]:
        """:return: the environment's support method (raises :class:`MissingSupportError` if absent)"""

    @abstractmethod
    def stack(self, supports: Sequence[Any], source: str = "the support method") -> np.ndarray:
        """:return: validated raw supports of several environments, stacked"""

    def from_infos(self, infos: Sequence[dict[str, Any]]) -> np.ndarray:
        """
        :param infos: one info dict per environment (written by the safety wrapper)
        :return: raw supports of the returned observations, stacked
        """
        for index, info in enumerate(infos):
            if self.info_key not in info:
                raise MissingSupportError(
                    f"The info dict of environment {index} has no '{self.info_key}' entry. The support of each "
                    "returned observation must travel in `info` because a VecEnv auto-resets terminal observations: "
                    "wrap every environment with `sb3_safeq.SafetyWrapper` (e.g. "
                    "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`)."
                )
        return self._stack_from_infos(infos)

    def _stack_from_infos(self, infos: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.stack([info[self.info_key] for info in infos], source=f"info['{self.info_key}']")

    @abstractmethod
    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        """:return: the supports in agent units (what the replay buffer stores)"""

    @abstractmethod
    def empty(self, supports: np.ndarray) -> np.ndarray:
        """:return: boolean per state: True where the support (raw or agent units) has no safe action"""

    @abstractmethod
    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        """:return: shape and dtype of the support of one observation in agent units"""

    @abstractmethod
    def empty_message(self, where: str) -> str:
        """:return: the error message for a state (described by ``where``) whose support is empty"""


class MaskSupport(SupportSpec):
    """Boolean action masks of a ``Discrete`` action space."""

    method_name = ACTION_MASKS_METHOD
    info_key = ACTION_MASK_INFO_KEY
    action_space: spaces.Discrete

    def find_method(self, env: gym.Env) -> Callable[[], Any]:
        return get_action_mask_fn(env)

    def stack(self, supports: Sequence[Any], source: str = f"{ACTION_MASKS_METHOD}()") -> np.ndarray:
        return stack_masks(supports, int(self.action_space.n), source)

    def _stack_from_infos(self, infos: Sequence[dict[str, Any]]) -> np.ndarray:
        return masks_from_infos(infos, int(self.action_space.n))

    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        return raw_supports

    def empty(self, supports: np.ndarray) -> np.ndarray:
        return np.asarray(~supports.any(axis=-1))

    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        return (int(self.action_space.n),), np.bool_

    def empty_message(self, where: str) -> str:
        return empty_support_message(where)


class BoxSupport(SupportSpec):
    """Per-state safe boxes of a ``Box`` action space."""

    method_name = SAFE_BOUNDS_METHOD
    info_key = SAFE_BOUNDS_INFO_KEY
    action_space: spaces.Box

    def __init__(self, action_space: spaces.Box) -> None:
        check_box_action_space(action_space)
        super().__init__(action_space)
        self.scaler = BoxScaler(action_space)

    def find_method(self, env: gym.Env) -> Callable[[], Any]:
        return get_safe_bounds_fn(env)

    def stack(self, supports: Sequence[Any], source: str = f"{SAFE_BOUNDS_METHOD}()") -> np.ndarray:
        return stack_bounds(supports, self.action_space, source)

    def _stack_from_infos(self, infos: Sequence[dict[str, Any]]) -> np.ndarray:
        boxes = [info[self.info_key] for info in infos]
        stacked = np.stack(boxes)
        if stacked.dtype == np.float32 and stacked.shape == (len(infos), 2, *self.action_space.shape):
            return stacked  # validated by the safety wrapper already: the fast path of every step
        return self.stack(boxes, source=f"info['{self.info_key}']")

    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        return self.scaler.to_agent(raw_supports)

    def empty(self, supports: np.ndarray) -> np.ndarray:
        return empty_boxes(supports)

    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        return (2, int(self.action_space.shape[0])), np.float32

    def empty_message(self, where: str) -> str:
        return empty_box_message(where)


def support_spec(action_space: spaces.Space) -> SupportSpec:
    """
    :param action_space: the environment's action space
    :return: the description of its safe support
    :raises ValueError: for action spaces SafeSupportQ does not handle, with what to do instead
    """
    if isinstance(action_space, spaces.Discrete):
        return MaskSupport(action_space)
    if isinstance(action_space, spaces.Box):
        return BoxSupport(action_space)
    raise ValueError(
        f"SafeSupportQ does not support the action space {action_space!r}: it supports `gymnasium.spaces.Discrete` "
        "actions with an `action_masks()` method giving the safe actions, and `gymnasium.spaces.Box` actions with a "
        "`safe_action_bounds()` method giving the box of safe actions. For MultiDiscrete or MultiBinary actions, "
        "flatten them into one Discrete space (and its mask)."
    )
