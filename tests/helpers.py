"""
Helpers shared by the test modules, most of which are parametrised over the two kinds of safe support: ``"mask"``
(Discrete actions, ``action_masks()``) and ``"box"`` (Box actions, ``safe_action_bounds()``).

The support checks here are written independently of the package (no ``SupportKind`` method is used to decide
whether an action is safe), so a bug in the package cannot hide itself.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from hypothesis import strategies as st
from torch import nn

from sb3_safeq.common.supports.box_utils import BoxScaler
from tests.box_toy_envs import FixedBoxEnv, NoBoundsBoxEnv, RandomBoxEnv
from tests.toy_envs import FixedMaskEnv, NoMaskEnv, RandomMaskEnv

#: The kinds of safe support the tests are parametrised over.
KINDS = ("mask", "box")
#: The public names of each kind: the environment method, the ``info`` key of the safety wrapper, the keyword of
#: ``predict``, the safety wrapper's support-function argument, and a phrase of its empty-support error message.
SUPPORT_METHOD = {"mask": "action_masks", "box": "safe_action_bounds"}
INFO_KEY = {"mask": "action_mask", "box": "safe_action_bounds"}
PREDICT_KEYWORD = {"mask": "action_masks", "box": "safe_bounds"}
WRAPPER_ARGUMENT = {"mask": "action_mask_fn", "box": "safe_bounds_fn"}
EMPTY_SUPPORT_MESSAGE = {"mask": "maximal_invariant_safe_set", "box": "empty safe box"}

#: Tiny networks and buffers: these tests check what the algorithm does, not how well it learns (test_learning.py).
TINY: dict[str, Any] = {
    "batch_size": 16,
    "buffer_size": 2000,
    "policy_kwargs": {"net_arch": [16]},
    "n_behavior_samples": 4,  # Box actions only; no effect on masks
}
#: TINY with a short warm-up, for the tests that train.
SMALL: dict[str, Any] = {**TINY, "learning_starts": 50}

# An asymmetric action space, so that env units and agent units ([-1, 1]) differ on every axis.
ACTION_LOW = np.array([-2.0, 0.0, -0.5], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 5.0, -0.25], dtype=np.float32)
ACTION_SPACE = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
SCALER = BoxScaler(ACTION_SPACE)


# ---------------------------------------------------------------------------------------------- environments


def random_env(kind: str, **kwargs: Any) -> gym.Env:
    """
    :return: :class:`RandomMaskEnv` or :class:`RandomBoxEnv` (random supports encoded in the observation; both raise
        on an action outside the support)
    """
    return RandomMaskEnv(**kwargs) if kind == "mask" else RandomBoxEnv(**kwargs)


def fixed_env(kind: str, empty: bool = False, cost: float | None = 0.0) -> FixedMaskEnv | FixedBoxEnv:
    """
    :param empty: give the environment an empty support (all-False mask, box with low > high)
    :param cost: ``info["cost"]`` of every step (None: no cost entry)
    :return: an environment with a constant support that records its actions: the mask ``[True, False, True]`` or
        the box ``[-0.5, 0.5] x [0, 1]`` in the action space ``[-1, 1]^2``
    """
    if kind == "mask":
        return FixedMaskEnv(np.array([False, False, False] if empty else [True, False, True]), cost=cost)
    if empty:
        return FixedBoxEnv([0.5, 0.0], [-0.5, 1.0], cost=cost)
    return FixedBoxEnv([-0.5, 0.0], [0.5, 1.0], cost=cost)


def no_support_env(kind: str) -> gym.Env:
    """:return: an environment of the kind without the support method"""
    return NoMaskEnv() if kind == "mask" else NoBoundsBoxEnv()


# ---------------------------------------------------------------------------------------------- supports


def as_support(kind: str, method_result: Any) -> np.ndarray:
    """:return: what the support method returned as one array (a mask, or a box ``(2, action_dim)``)"""
    return np.asarray(method_result, dtype=bool) if kind == "mask" else np.stack(method_result)


def decode_supports(kind: str, observations: np.ndarray) -> np.ndarray:
    """
    :param observations: observations of :func:`random_env`, ``(..., obs_dim)``
    :return: the supports they encode (raw units): masks ``(..., n_actions)`` or boxes ``(..., 2, action_dim)``
    """
    observations = np.asarray(observations)
    if kind == "mask":
        return observations[..., :-1].astype(bool)
    action_dim = (observations.shape[-1] - 1) // 2
    return observations[..., : 2 * action_dim].reshape(*observations.shape[:-1], 2, action_dim)


def to_agent_units(action_space: spaces.Space, supports: np.ndarray) -> np.ndarray:
    """:return: supports as the replay buffer stores them: masks unchanged, boxes scaled to ``[-1, 1]``"""
    return BoxScaler(action_space).to_agent(supports) if isinstance(action_space, spaces.Box) else supports


def predict_kwargs(kind: str, supports: np.ndarray) -> dict[str, Any]:
    """:return: ``predict``'s keyword for stacked supports (masks, or boxes given as ``(low, high)``)"""
    if kind == "mask":
        return {"action_masks": supports}
    return {"safe_bounds": (supports[..., 0, :], supports[..., 1, :])}


def random_supports(kind: str, rng: np.random.Generator, n: int, action_space: spaces.Space) -> np.ndarray:
    """:return: ``n`` non-empty random supports of the action space (a fifth of the box axes are points)"""
    if kind == "mask":
        masks = rng.random((n, int(action_space.n))) < 0.5
        masks[np.arange(n), rng.integers(action_space.n, size=n)] = True
        return masks
    dim = action_space.shape[0]
    fractions = rng.random((n, dim, 2))
    point = rng.random((n, dim)) < 0.2
    fractions[point, 1] = fractions[point, 0]
    return boxes_from_fractions(fractions, action_space.low, action_space.high)


def assert_in_supports(actions: Any, supports: Any) -> None:
    """
    Every action lies in its support, exactly (no tolerance; NaN counts as outside).

    :param actions: masks: ``(batch,)`` or ``(batch, n)`` action indices; boxes: ``(batch, action_dim)`` or
        ``(batch, n, action_dim)``
    :param supports: masks ``(batch, n_actions)`` or boxes ``(batch, 2, action_dim)`` (numpy or tensors)
    """
    actions = actions.detach().cpu().numpy() if isinstance(actions, th.Tensor) else np.asarray(actions)
    supports = supports.detach().cpu().numpy() if isinstance(supports, th.Tensor) else np.asarray(supports)
    if supports.dtype == np.bool_:
        index = actions.astype(np.int64)
        n_actions = supports.shape[-1]
        rows = np.broadcast_to(np.arange(len(supports)).reshape(-1, *([1] * (index.ndim - 1))), index.shape)
        inside = (index >= 0) & (index < n_actions) & supports[rows, np.clip(index, 0, n_actions - 1)]
        assert inside.all(), f"actions {index[~inside].tolist()} outside their masks"
        return
    low, high = supports[:, 0], supports[:, 1]
    if actions.ndim == 3:
        low, high = low[:, None], high[:, None]
    inside = (actions >= low) & (actions <= high)
    assert inside.all(), f"actions {actions[~inside].tolist()} outside their boxes (low {low}, high {high})"


# ---------------------------------------------------------------------------------------------- boxes


def boxes_from_fractions(fractions: Any, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    :param fractions: ``(batch, action_dim, 2)`` positions of the two bounds of each axis in ``[0, 1]``
    :return: float32 boxes ``(batch, 2, action_dim)`` inside ``[low, high]``, ``low <= high``
    """
    ordered = np.sort(np.asarray(fractions, dtype=np.float64), axis=-1)
    low64, high64 = low.astype(np.float64)[None, :, None], high.astype(np.float64)[None, :, None]
    boxes = (low64 + ordered * (high64 - low64)).astype(np.float32)  # float32 rounding is monotone: order kept
    boxes = np.clip(boxes, low[None, :, None], high[None, :, None])
    return np.ascontiguousarray(boxes.transpose(0, 2, 1))


_FRACTION = st.floats(0.0, 1.0)
_AXIS = st.one_of(
    st.tuples(_FRACTION, _FRACTION),
    _FRACTION.map(lambda u: (u, u)),  # a degenerate axis, low == high
    st.sampled_from([(0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (0.5, 0.5)]),
)


def env_boxes(
    low: np.ndarray = ACTION_LOW, high: np.ndarray = ACTION_HIGH, max_batch: int = 4
) -> st.SearchStrategy[np.ndarray]:
    """:return: strategy for float32 safe boxes ``(batch, 2, action_dim)`` inside ``[low, high]``"""
    dim = len(low)
    axes = st.lists(_AXIS, min_size=dim, max_size=dim)
    return st.lists(axes, min_size=1, max_size=max_batch).map(lambda f: boxes_from_fractions(f, low, high))


def beta_in_box(observations: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    """A U-shaped Beta distribution stretched to the box (much of its mass right next to the bounds)."""
    beta = th.distributions.Beta(th.full_like(low, 0.5), th.full_like(low, 0.5))
    stretched = th.distributions.TransformedDistribution(beta, th.distributions.AffineTransform(low, high - low))
    return th.distributions.Independent(stretched, 1)


def uniform_in_box(observations: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    """The uniform distribution on the box, with ``batch_shape (batch, action_dim)``: independent axes."""
    return th.distributions.Uniform(low, high)


# ------------------------------------------------------------------------------ behaviors importable by path


def highest_safe_action(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A deterministic safe behavior for masks, importable by path (``tests.helpers:highest_safe_action``)."""
    probs = np.zeros(masks.shape)
    probs[np.arange(len(masks)), [np.flatnonzero(m)[-1] for m in masks]] = 1.0
    return probs


def upper_corner(observations: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    """
    A deterministic safe behavior for boxes, importable by path (``tests.helpers:upper_corner``): all its mass on
    the upper corner of the box (a uniform distribution of zero width, which torch only builds unvalidated).
    """
    return th.distributions.Uniform(high, high, validate_args=False)


# ---------------------------------------------------------------------------------------- stand-in critics


class LinearQ(nn.Module):
    """A stand-in Box Q-network: ``Q(s, a) = slope * a + offset`` for 1-D actions (the last input), in agent units."""

    def __init__(self, slope: float, offset: float = 0.0) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        return self.slope * inputs[:, -1:] + self.offset


class IndexQ(nn.Module):
    """A stand-in Discrete critic: ``Q(s, a) = a``, whatever the observation."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.n_actions = n_actions

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.arange(self.n_actions, dtype=th.float32).expand(observations.shape[0], self.n_actions)
