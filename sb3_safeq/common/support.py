"""
The safe support of the behavior policy: how it is read from an environment, checked and passed around.

For ``spaces.Discrete`` actions the support of a state is a boolean *action mask* (``True`` = safe), exposed by the
environment as ``action_masks()``: the convention of sb3-contrib, so ``MaskablePPO`` and ``ActionMasker`` work on
the same environments unchanged.
"""

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

#: Name of the environment method that returns the mask of the current observation (sb3-contrib convention).
ACTION_MASKS_METHOD = "action_masks"
#: ``info`` key under which the safety wrapper writes the mask of the *returned* observation.
ACTION_MASK_INFO_KEY = "action_mask"
#: ``info`` key holding the ground-truth safety cost of a step (> 0 means an unsafe step).
COST_INFO_KEY = "cost"


class EmptySupportError(RuntimeError):
    """Raised when a state that must be acted in has no safe action (an all-false action mask)."""


class MissingSupportError(ValueError):
    """Raised when an environment exposes no safe support (no ``action_masks()`` method)."""


def empty_support_message(where: str) -> str:
    """
    :param where: description of the state that has no safe action
    :return: the explanation shared by every empty-support error
    """
    return (
        f"{where} has an all-False action mask: the safe set gives it no safe action, so no safe-supported "
        "behavior policy can act there. The safe set must be *invariant*: every state reachable with safe "
        "actions needs at least one safe action. For tabular models compute the maximal invariant safe set with "
        "`sb3_safeq.common.tabular.maximal_invariant_safe_set`; otherwise make the mask more conservative earlier "
        "(e.g. add a look-ahead) so that such states are never reached."
    )


def find_env_method(env: gym.Env, name: str) -> Callable[..., Any] | None:
    """
    :param env: a (possibly wrapped) gymnasium environment
    :param name: a method name
    :return: the environment's method of that name, found through any gymnasium wrappers, or None
    """
    try:
        method = env.get_wrapper_attr(name)
    except AttributeError:
        return None
    return method if callable(method) else None


def get_action_mask_fn(env: gym.Env) -> Callable[[], np.ndarray]:
    """
    Find the ``action_masks()`` method of an environment, through any gymnasium wrappers.

    :param env: a (possibly wrapped) gymnasium environment
    :return: the bound method
    """
    method = find_env_method(env, ACTION_MASKS_METHOD)
    if method is None:
        raise MissingSupportError(
            f"The environment {env!r} has no `{ACTION_MASKS_METHOD}()` method, so its safe actions are unknown. "
            "SafeSupportQ only acts inside a safe support: give the environment a method `action_masks() -> "
            "np.ndarray[bool]` returning True for the safe actions of the current state, or wrap it with "
            "`sb3_contrib.common.wrappers.ActionMasker(env, mask_fn)` or "
            "`sb3_safeq.SafetyWrapper(env, action_mask_fn=mask_fn)`."
        )
    return method


def as_action_mask(mask: Any, n_actions: int, source: str = "action_masks()") -> np.ndarray:
    """
    Convert and validate one action mask.

    :param mask: the mask as returned by the environment (array-like of bools or 0/1)
    :param n_actions: number of discrete actions
    :param source: where the mask came from, for error messages
    :return: a boolean array of shape ``(n_actions,)``
    """
    array = np.asarray(mask)
    if array.shape != (n_actions,):
        flat = array.reshape(-1) if array.size == n_actions else None
        if flat is None:
            raise ValueError(
                f"{source} returned an array of shape {array.shape}, expected ({n_actions},): one boolean per "
                "action of the Discrete action space."
            )
        array = flat
    if array.dtype != np.bool_:
        if not np.all(np.isin(array, (0, 1))):
            raise ValueError(f"{source} must contain booleans (or 0/1), got values {np.unique(array)[:8]}.")
        array = array.astype(bool)
    return array


def stack_masks(masks: Sequence[Any], n_actions: int, source: str = "action_masks()") -> np.ndarray:
    """
    Validate a sequence of per-environment masks and stack them.

    :param masks: one mask per environment
    :param n_actions: number of discrete actions
    :param source: where the masks came from, for error messages
    :return: a boolean array of shape ``(len(masks), n_actions)``
    """
    return np.stack([as_action_mask(mask, n_actions, source) for mask in masks])


def masks_from_infos(infos: Sequence[dict[str, Any]], n_actions: int) -> np.ndarray:
    """
    Read the mask of each returned observation from the ``info`` dicts the safety wrapper fills.

    :param infos: one info dict per environment
    :param n_actions: number of discrete actions
    :return: boolean masks of shape ``(len(infos), n_actions)``
    """
    masks = []
    for index, info in enumerate(infos):
        if ACTION_MASK_INFO_KEY not in info:
            raise MissingSupportError(
                f"The info dict of environment {index} has no '{ACTION_MASK_INFO_KEY}' entry. The mask of each "
                "returned observation must travel in `info` because a VecEnv auto-resets terminal observations: "
                "wrap every environment with `sb3_safeq.SafetyWrapper` (e.g. "
                "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`)."
            )
        masks.append(info[ACTION_MASK_INFO_KEY])
    stacked = np.stack(masks)
    if stacked.dtype == np.bool_ and stacked.shape == (len(infos), n_actions):
        return stacked  # the safety wrapper already validated each mask: the common, fast path of every step
    return stack_masks(masks, n_actions, source=f"info['{ACTION_MASK_INFO_KEY}']")
