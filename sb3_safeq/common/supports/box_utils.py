"""
Array helpers of the ``Box`` support: a per-state box of safe actions ``(low, high)``.

An environment exposes it as ``safe_action_bounds() -> (low, high)`` in its own action units, inside the action
space. An empty box (a state without safe action) is signalled by ``low > high`` on some axis. Internally, as SAC
does with the actions, the bounds are stored and trained on scaled to ``[-1, 1]`` (*agent units*): one array of
shape ``(2, action_dim)`` per state, row 0 the lower and row 1 the upper bound.

Axes where a box is a single point (narrower than :data:`POINT_WIDTH`) carry no density: every behavior and every
extracted policy puts the same point mass there, so log-densities are taken over the other axes (they cancel in
every ratio SafeSupportQ uses).
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_safeq.common.supports.errors import EmptySupportError

#: Name of the environment method that returns the safe box ``(low, high)`` of the current observation.
SAFE_BOUNDS_METHOD = "safe_action_bounds"
#: ``info`` key under which the safety wrapper writes the safe box (env units, shape ``(2, action_dim)``).
SAFE_BOUNDS_INFO_KEY = "safe_action_bounds"
#: Axes narrower than this (in action units) are treated as a single point: no density along them.
POINT_WIDTH = 1e-9

# Bounds may stick out of the action space by this fraction of its width (float rounding of the user's geometry);
# they are clipped back in. Anything farther out is an error.
_OUTSIDE_TOLERANCE = 1e-6


def empty_box_message(where: str) -> str:
    """
    :param where: description of the state whose safe box is empty
    :return: the explanation shared by every empty-box error
    """
    return (
        f"{where} has an empty safe box (low > high): no action is safe there, so no safe-supported behavior policy "
        "can act. The safe set must be *invariant*: every state reachable with safe actions needs a non-empty box. "
        "Make the bounds more conservative earlier (e.g. a braking margin) so that such states are never reached."
    )


def check_box_action_space(action_space: spaces.Box) -> None:
    """
    :param action_space: a ``Box`` action space
    :raises ValueError: if the space is not a flat, bounded, floating-point box
    """
    if len(action_space.shape) != 1:
        raise ValueError(
            f"SafeSupportQ supports flat Box action spaces (shape (action_dim,)), got shape {action_space.shape}. "
            "Flatten the actions with `gymnasium.wrappers.FlattenObservation`-style reshaping in your environment."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"The Box action space {action_space!r} has infinite bounds: actions are scaled to [-1, 1], so every "
            "axis needs finite limits. Give the action space the physical limits of your actuators."
        )
    if not np.issubdtype(action_space.dtype, np.floating):
        raise ValueError(f"The Box action space must have a floating-point dtype, got {action_space.dtype}.")


def as_safe_bounds(bounds: Any, action_space: spaces.Box, source: str = f"{SAFE_BOUNDS_METHOD}()") -> np.ndarray:
    """
    Convert and validate one safe box.

    :param bounds: ``(low, high)`` (two arrays of the action shape) or an array of shape ``(2, action_dim)``
    :param action_space: the Box action space
    :param source: where the bounds came from, for error messages
    :return: float32 array of shape ``(2, action_dim)`` in action units; ``low > high`` on an axis means empty
    """
    action_dim = int(action_space.shape[0])
    try:
        array = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source} must return (low, high), two arrays of shape ({action_dim},): {error}") from None
    if array.shape == (2,) and action_dim == 1:
        array = array.reshape(2, 1)  # (low, high) as two numbers for a one-axis action
    if array.shape != (2, action_dim):
        # No reshaping: one row per axis, (action_dim, 2), has the same size and would scramble the box.
        layout = (
            f" It looks like one row per axis, shape ({action_dim}, 2): give `(low, high)` (e.g. `bounds.T`)."
            if array.shape == (action_dim, 2)
            else ""
        )
        raise ValueError(
            f"{source} gave bounds of shape {array.shape}, expected (low, high) with low and high of shape "
            f"({action_dim},) each, i.e. an array of shape (2, {action_dim}): row 0 the lower, row 1 the upper "
            f"bound.{layout}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{source} returned NaN or infinite bounds {array.tolist()}: every bound must be finite.")
    space_low = action_space.low.astype(np.float64)
    space_high = action_space.high.astype(np.float64)
    tolerance = _OUTSIDE_TOLERANCE * (space_high - space_low)
    if np.any(array < space_low - tolerance) or np.any(array > space_high + tolerance):
        raise ValueError(
            f"{source} returned bounds {array.tolist()} outside the action space [{action_space.low.tolist()}, "
            f"{action_space.high.tolist()}]: safe bounds are in the environment's action units and must lie inside "
            "the action space (clip them into it)."
        )
    return np.clip(array, space_low, space_high).astype(np.float32)


def empty_boxes(bounds: np.ndarray) -> np.ndarray:
    """
    :param bounds: boxes of shape ``(..., 2, action_dim)``
    :return: boolean array of shape ``(...)``: True where the box is empty (``low > high`` on some axis)
    """
    return np.asarray((bounds[..., 0, :] > bounds[..., 1, :]).any(axis=-1))


def check_boxes(bounds: th.Tensor, where: str = "A state given to the behavior policy") -> None:
    """
    :param bounds: safe boxes ``(batch, 2, action_dim)``
    :param where: description of the states, for the error message
    :raises EmptySupportError: if a box is empty
    """
    if bool((bounds[:, 0] > bounds[:, 1]).any()):
        raise EmptySupportError(empty_box_message(where))


def clip_into(actions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """
    Clip actions into their boxes, exactly (no rounding can leave the box).

    :param actions: shape ``(batch, action_dim)``
    :param bounds: shape ``(batch, 2, action_dim)``, non-empty boxes of the same dtype
    :return: clipped actions, same dtype as ``bounds``
    """
    return np.minimum(np.maximum(actions.astype(bounds.dtype), bounds[:, 0]), bounds[:, 1])


def clamp_into(actions: th.Tensor, bounds: th.Tensor) -> th.Tensor:
    """
    :param actions: ``(batch, n, action_dim)`` or ``(batch, action_dim)``
    :param bounds: ``(batch, 2, action_dim)``
    :return: the actions clamped into their boxes (guards against rounding; a no-op for in-box actions)
    """
    low, high = bounds[:, 0], bounds[:, 1]
    if actions.dim() == 3:
        low, high = low.unsqueeze(1), high.unsqueeze(1)
    return th.minimum(th.maximum(actions, low), high)


def inside_mask(actions: th.Tensor, bounds: th.Tensor) -> th.Tensor:
    """
    :param actions: ``(batch, n, action_dim)``
    :param bounds: ``(batch, 2, action_dim)``
    :return: boolean ``(batch, n)``: the action lies in its box (bounds included)
    """
    low, high = bounds[:, 0].unsqueeze(1), bounds[:, 1].unsqueeze(1)
    return ((actions >= low) & (actions <= high)).all(dim=-1)


def fill_empty_boxes(boxes: th.Tensor) -> th.Tensor:
    """
    :param boxes: boxes ``(batch, 2, action_dim)`` in agent units
    :return: the boxes with each empty one replaced by the whole action space ``[-1, 1]``
    """
    empty = (boxes[:, 0] > boxes[:, 1]).any(dim=-1)
    whole = th.stack([-th.ones_like(boxes[:, 0]), th.ones_like(boxes[:, 0])], dim=1)
    return th.where(empty[:, None, None], whole, boxes)


def full_boxes(batch: int, action_dim: int, device: th.device) -> th.Tensor:
    """:return: the whole action space ``[-1, 1]`` as agent-unit boxes ``(batch, 2, action_dim)``"""
    box = th.stack([-th.ones(action_dim, device=device), th.ones(action_dim, device=device)])
    return box.expand(batch, 2, action_dim)


class BoxScaler:
    """
    Affine map between the environment's action units and the agent's ``[-1, 1]`` units, for actions and bounds.

    :param action_space: the Box action space
    """

    def __init__(self, action_space: spaces.Box) -> None:
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)
        self.half_width = (self.high - self.low) / 2.0
        self._tensors: dict[th.device, tuple[th.Tensor, th.Tensor]] = {}

    def to_agent(self, values: np.ndarray) -> np.ndarray:
        """
        :param values: actions ``(..., action_dim)`` or bounds ``(..., 2, action_dim)`` in env units
        :return: the same in ``[-1, 1]`` units (float32, clipped into ``[-1, 1]`` against rounding)
        """
        scaled = (np.asarray(values, dtype=np.float64) - self.low) / self.half_width - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def to_env(self, values: np.ndarray) -> np.ndarray:
        """
        :param values: actions or bounds in ``[-1, 1]`` units
        :return: the same in env units (float32)
        """
        return (self.low + (np.asarray(values, dtype=np.float64) + 1.0) * self.half_width).astype(np.float32)

    def _affine(self, device: th.device) -> tuple[th.Tensor, th.Tensor]:
        if device not in self._tensors:
            low = th.as_tensor(self.low, dtype=th.float32, device=device)
            half_width = th.as_tensor(self.half_width, dtype=th.float32, device=device)
            self._tensors[device] = (low, half_width)
        return self._tensors[device]

    def to_env_tensor(self, values: th.Tensor) -> th.Tensor:
        """:param values: actions or bounds in ``[-1, 1]`` units (tensor) :return: the same in env units"""
        low, half_width = self._affine(values.device)
        return low + (values + 1.0) * half_width

    def to_agent_tensor(self, values: th.Tensor) -> th.Tensor:
        """:param values: actions or bounds in env units (tensor) :return: the same in ``[-1, 1]`` units"""
        low, half_width = self._affine(values.device)
        return ((values - low) / half_width - 1.0).clamp(-1.0, 1.0)

    def log_half_width_tensor(self, device: th.device) -> th.Tensor:
        """
        :param device: the device of the result
        :return: ``log |d env / d agent|`` per axis (converts log-densities between the units)
        """
        return self._affine(device)[1].log()
