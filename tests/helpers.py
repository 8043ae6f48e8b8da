"""
Helpers shared by the test modules, most of which are parametrised over the three kinds of safe support: ``"mask"``
(Discrete actions, ``action_masks()``), ``"box"`` (Box actions, ``safe_action_bounds()``) and ``"polytope"``
(``ConstrainedBox`` actions, ``safe_action_constraints() -> (A, b)``).

The support checks here are written independently of the package (no ``SupportKind`` method is used to decide
whether an action is safe), so a bug in the package cannot hide itself. Polytope supports are compared in the
stored layout of the kind (padded rows ``[A | b]`` then ``[chebyshev_centre | radius]``): the centre row is computed
by the package's gate (it is storage, not a safety decision); containment reads the rows only, with the kind's
contract of :data:`tests.polytope_toy_envs.ROW_TOLERANCE` (1e-6) distance per row.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import strategies as st
from torch import nn

from sb3_safeq import ConstrainedBox, make_support_kind
from sb3_safeq.common.supports.box_utils import BoxScaler
from tests.box_toy_envs import FixedBoxEnv, NoBoundsBoxEnv, RandomBoxEnv
from tests.polytope_toy_envs import FixedPolytopeEnv, NoConstraintsEnv, RandomPolytopeEnv, pad_rows, rows_contain
from tests.toy_envs import FixedMaskEnv, NoMaskEnv, RandomMaskEnv

#: The kinds of safe support the tests are parametrised over.
KINDS = ("mask", "box", "polytope")
#: The public names of each kind: the environment method, the ``info`` key of the safety wrapper, the keyword of
#: ``predict``, the safety wrapper's support-function argument, and a phrase of its empty-support error message.
SUPPORT_METHOD = {"mask": "action_masks", "box": "safe_action_bounds", "polytope": "safe_action_constraints"}
INFO_KEY = {"mask": "action_mask", "box": "safe_action_bounds", "polytope": "safe_action_constraints"}
PREDICT_KEYWORD = {"mask": "action_masks", "box": "safe_bounds", "polytope": "safe_constraints"}
WRAPPER_ARGUMENT = {"mask": "action_mask_fn", "box": "safe_bounds_fn", "polytope": "safe_constraints_fn"}
EMPTY_SUPPORT_MESSAGE = {"mask": "maximal_invariant_safe_set", "box": "empty safe box", "polytope": "empty polytope"}
#: The action space of :func:`random_env` ``("polytope")`` with its default arguments (what decoding assumes).
POLYTOPE_SPACE = RandomPolytopeEnv().action_space


def kinds(**skipped: str) -> list[Any]:
    """
    :param skipped: kinds a concern does not apply to, each with the reason (shown by ``pytest -rs``)
    :return: :data:`KINDS` as pytest parameters, those skipped marked so
    """
    return [
        pytest.param(kind, marks=pytest.mark.skip(reason=skipped[kind])) if kind in skipped else kind for kind in KINDS
    ]


def box_like(kind: str) -> bool:
    """:return: whether the kind has continuous (``Box``) actions"""
    return kind in ("box", "polytope")


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
    if kind == "polytope":
        return RandomPolytopeEnv(**kwargs)
    return RandomMaskEnv(**kwargs) if kind == "mask" else RandomBoxEnv(**kwargs)


def fixed_env(
    kind: str, empty: bool = False, cost: float | None = 0.0
) -> FixedMaskEnv | FixedBoxEnv | FixedPolytopeEnv:
    """
    :param empty: give the environment an empty support (all-False mask, box with low > high)
    :param cost: ``info["cost"]`` of every step (None: no cost entry)
    :return: an environment with a constant support that records its actions: the mask ``[True, False, True]`` or
        the box ``[-0.5, 0.5] x [0, 1]`` in the action space ``[-1, 1]^2``, or the polytope ``a_0 + a_1 <= 0.5,
        -a_0 <= 0.5`` of ``[-1, 1]^2`` (empty: ``a_0 <= -2``)
    """
    if kind == "polytope":
        if empty:
            return FixedPolytopeEnv([[1.0, 0.0]], [-2.0], cost=cost)
        return FixedPolytopeEnv([[1.0, 1.0], [-1.0, 0.0]], [0.5, 0.5], cost=cost)
    if kind == "mask":
        return FixedMaskEnv(np.array([False, False, False] if empty else [True, False, True]), cost=cost)
    if empty:
        return FixedBoxEnv([0.5, 0.0], [-0.5, 1.0], cost=cost)
    return FixedBoxEnv([-0.5, 0.0], [0.5, 1.0], cost=cost)


def no_support_env(kind: str) -> gym.Env:
    """:return: an environment of the kind without the support method"""
    if kind == "polytope":
        return NoConstraintsEnv()
    return NoMaskEnv() if kind == "mask" else NoBoundsBoxEnv()


# ---------------------------------------------------------------------------------------------- supports


def stored_polytope(action_space: ConstrainedBox, matrix: Any, offsets: Any) -> np.ndarray:
    """
    :return: the stored layout of the polytope ``A a <= b`` (raw units, float32 ``(max_constraints + 1, d + 1)``):
        its rows padded, then the Chebyshev centre and radius as the package's gate computes them
    """
    return make_support_kind(action_space).validate((matrix, offsets), source="tests")


def as_support(kind: str, method_result: Any, action_space: ConstrainedBox = POLYTOPE_SPACE) -> np.ndarray:
    """
    :return: what the support method returned as one array (a mask, a box ``(2, action_dim)``, or a polytope in the
        stored layout, see :func:`stored_polytope`)
    """
    if kind == "polytope":
        return stored_polytope(action_space, *method_result)
    return np.asarray(method_result, dtype=bool) if kind == "mask" else np.stack(method_result)


def safe_action(kind: str, support: np.ndarray, action_space: spaces.Box = POLYTOPE_SPACE) -> Any:
    """
    :param support: one raw support (see :func:`as_support`), not empty
    :return: a safe action of it: the first safe action of a mask, the lower corner of a box, the Chebyshev centre of
        a polytope (clipped into the action box; inside every row within 1e-6)
    """
    if kind == "mask":
        return np.flatnonzero(support)[0]
    if kind == "box":
        return support[0]
    return np.clip(support[-1, :-1], action_space.low, action_space.high)


def decode_supports(kind: str, observations: np.ndarray) -> np.ndarray:
    """
    :param observations: observations of :func:`random_env`, ``(..., obs_dim)``
    :return: the supports they encode (raw units): masks ``(..., n_actions)``, boxes ``(..., 2, action_dim)`` or
        polytopes ``(..., max_constraints + 1, action_dim + 1)`` (of :data:`POLYTOPE_SPACE`)
    """
    observations = np.asarray(observations)
    if kind == "polytope":
        rows_shape = (POLYTOPE_SPACE.max_constraints, POLYTOPE_SPACE.shape[0] + 1)
        flat = observations[..., :-1].reshape(-1, *rows_shape)
        stored = [stored_polytope(POLYTOPE_SPACE, rows[:, :-1], rows[:, -1]) for rows in flat]
        return np.stack(stored).reshape(*observations.shape[:-1], rows_shape[0] + 1, rows_shape[1])
    if kind == "mask":
        return observations[..., :-1].astype(bool)
    action_dim = (observations.shape[-1] - 1) // 2
    return observations[..., : 2 * action_dim].reshape(*observations.shape[:-1], 2, action_dim)


def to_agent_units(action_space: spaces.Space, supports: np.ndarray) -> np.ndarray:
    """:return: supports as the replay buffer stores them: masks unchanged, boxes and polytopes in ``[-1, 1]`` units"""
    if isinstance(action_space, ConstrainedBox):
        return make_support_kind(action_space).to_agent(supports)
    return BoxScaler(action_space).to_agent(supports) if isinstance(action_space, spaces.Box) else supports


def predict_kwargs(kind: str, supports: np.ndarray) -> dict[str, Any]:
    """
    :return: ``predict``'s keyword for stacked supports (masks, boxes given as ``(low, high)``, polytopes in the
        stored layout given as ``(A, b)``)
    """
    if kind == "polytope":
        rows = np.asarray(supports)[..., :-1, :]
        return {"safe_constraints": (rows[..., :-1], rows[..., -1])}
    if kind == "mask":
        return {"action_masks": supports}
    return {"safe_bounds": (supports[..., 0, :], supports[..., 1, :])}


def random_supports(kind: str, rng: np.random.Generator, n: int, action_space: spaces.Space) -> np.ndarray:
    """
    :return: ``n`` non-empty random supports of the action space (a fifth of the box axes are points; polytopes:
        0 to ``max_constraints`` random rows through a random action, in the stored layout)
    """
    if kind == "polytope":
        stored = []
        for _ in range(n):
            dim, n_rows = action_space.shape[0], int(rng.integers(0, action_space.max_constraints + 1))
            point = action_space.low + rng.random(dim) * (action_space.high - action_space.low)
            matrix = rng.normal(size=(n_rows, dim))
            rows = pad_rows(matrix, matrix @ point + rng.random(n_rows), action_space.max_constraints)
            stored.append(stored_polytope(action_space, rows[:, :-1], np.nextafter(rows[:, -1], np.float32(np.inf))))
        return np.stack(stored)
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
    Every action lies in its support, exactly for masks and boxes, within the polytope kind's contract of 1e-6
    distance per row (:func:`tests.polytope_toy_envs.rows_contain`) for polytopes; NaN counts as outside.

    :param actions: masks: ``(batch,)`` or ``(batch, n)`` action indices; boxes and polytopes: ``(batch,
        action_dim)`` or ``(batch, n, action_dim)``
    :param supports: masks ``(batch, n_actions)``, boxes ``(batch, 2, action_dim)`` or polytopes in the stored
        layout ``(batch, max_constraints + 1, action_dim + 1)`` (numpy or tensors; the units of the actions)
    """
    actions = actions.detach().cpu().numpy() if isinstance(actions, th.Tensor) else np.asarray(actions)
    supports = supports.detach().cpu().numpy() if isinstance(supports, th.Tensor) else np.asarray(supports)
    if supports.dtype != np.bool_ and supports.shape[-1] == actions.shape[-1] + 1:  # polytopes: [A | b] rows
        rows = supports[:, :-1]
        inside = rows_contain(rows[:, None] if actions.ndim == 3 else rows, actions)
        assert inside.all(), f"actions {actions[~inside].tolist()} outside their polytopes (rows {rows.tolist()})"
        return
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


def cliff_dataset_without_supports(dataset_id: str = "cliff/nosupport-v0") -> str:
    """
    Write a local Minari dataset of one short cliff-walking episode whose infos carry costs but no supports (as a
    logger that knows nothing of safe supports would write it).

    :param dataset_id: the local dataset id (``MINARI_DATASETS_PATH`` decides where it goes)
    :return: ``dataset_id``
    """
    import minari  # the offline extra: imported only by the tests that need it
    from minari.data_collector.episode_buffer import EpisodeBuffer

    episode = EpisodeBuffer(
        id=0,
        observations=[36, 24, 25],
        actions=[0, 1],
        rewards=[-1.0, -1.0],
        terminations=[False, False],
        truncations=[False, True],
        infos={"cost": [0.0, 0.0, 0.0]},
    )
    space = gym.make("SafeCliffWalking-v0").observation_space
    minari.create_dataset_from_buffers(dataset_id, [episode], observation_space=space, action_space=spaces.Discrete(4))
    return dataset_id
