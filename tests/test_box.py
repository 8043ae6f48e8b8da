"""
Continuous (``Box``) actions: safe boxes, Box behavior policies, the squashed-box extraction, the sampled soft target,
saving, vectorised training and the safety wrapper.
"""

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from sb3_safeq import (
    CallableBoxBehavior,
    EmptySupportError,
    MaskedUniformBehavior,
    MissingSupportError,
    SafeReplayBuffer,
    SafeSupportQ,
    SafetyWrapper,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
    UnsafeVisitError,
)
from sb3_safeq.common.buffers import SafeReplayBufferSamples
from sb3_safeq.common.supports import squashed_box
from sb3_safeq.common.supports.box_utils import BoxScaler, as_safe_bounds, clip_into, empty_boxes
from sb3_safeq.safeq.box_policies import BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import SafeSupportQPolicy
from tests.box_toy_envs import FixedBoxEnv, NoBoundsBoxEnv, RandomBoxEnv
from tests.toy_envs import RandomMaskEnv

# An asymmetric action space, so that env units and agent units ([-1, 1]) differ on every axis.
ACTION_LOW = np.array([-2.0, 0.0, -0.5], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 5.0, -0.25], dtype=np.float32)
ACTION_SPACE = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
SCALER = BoxScaler(ACTION_SPACE)

TINY = {"batch_size": 16, "buffer_size": 2000, "policy_kwargs": {"net_arch": [16]}, "n_behavior_samples": 4}
POINT_MASS_KWARGS = {
    "learning_starts": 100,
    "batch_size": 32,
    "policy_kwargs": {"net_arch": [32, 32]},
    "n_behavior_samples": 4,
}


# ----------------------------------------------------------------------------------------------------------- helpers


def _boxes_from_fractions(fractions: Any, low: np.ndarray, high: np.ndarray) -> np.ndarray:
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
    return st.lists(axes, min_size=1, max_size=max_batch).map(lambda f: _boxes_from_fractions(f, low, high))


def assert_inside(actions: Any, boxes: Any) -> None:
    """Every action lies in its box, exactly (no tolerance; NaN counts as outside)."""
    actions = actions.detach().cpu().numpy() if isinstance(actions, th.Tensor) else np.asarray(actions)
    boxes = boxes.detach().cpu().numpy() if isinstance(boxes, th.Tensor) else np.asarray(boxes)
    low, high = boxes[:, 0], boxes[:, 1]
    if actions.ndim == 3:
        low, high = low[:, None], high[:, None]
    inside = (actions >= low) & (actions <= high)
    assert inside.all(), f"actions {actions[~inside].tolist()} outside their boxes (low {low}, high {high})"


def _beta_in_box(observations: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    """A U-shaped Beta distribution stretched to the box (much of its mass right next to the bounds)."""
    beta = th.distributions.Beta(th.full_like(low, 0.5), th.full_like(low, 0.5))
    stretched = th.distributions.TransformedDistribution(beta, th.distributions.AffineTransform(low, high - low))
    return th.distributions.Independent(stretched, 1)


def _uniform_in_box(observations: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    return th.distributions.Uniform(low, high)  # batch_shape (batch, action_dim): independent axes


class LinearQ(nn.Module):
    """A stand-in Q-network: ``Q(s, a) = slope * a + offset`` for 1-D actions (the last input), in agent units."""

    def __init__(self, slope: float, offset: float = 0.0) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        return self.slope * inputs[:, -1:] + self.offset


def _point_mass(**kwargs: Any) -> gym.Env:
    return gym.make("SafePointMass-v0", **kwargs)


_MODEL_CACHE: dict[str, SafeSupportQ] = {}


def _predict_model() -> SafeSupportQ:
    """
    An untrained model on the asymmetric 3-D action space, built once (predict does not change it); each test sets
    the actor's output biases it relies on.
    """
    if "model" not in _MODEL_CACHE:
        env = RandomBoxEnv(action_low=tuple(ACTION_LOW), action_high=tuple(ACTION_HIGH))
        _MODEL_CACHE["model"] = SafeSupportQ("MlpPolicy", env, seed=0, **TINY)
    return _MODEL_CACHE["model"]


# ------------------------------------------------------------------------------ 1. every action lies inside its box


@pytest.mark.parametrize("kind", ["uniform", "truncated_gaussian", "callable"])
@settings(max_examples=30, deadline=None)
@given(boxes=env_boxes(), data=st.data())
def test_behavior_samples_lie_in_the_box(kind: str, boxes: np.ndarray, data: st.DataObject) -> None:
    batch, _, dim = boxes.shape
    if kind == "uniform":
        behavior = UniformBoxBehavior()
    elif kind == "truncated_gaussian":
        # The controller's action may lie far outside the box (and outside the action space).
        mean_values = st.one_of(st.floats(-3.0, 6.0), st.floats(-100.0, 100.0))
        means = data.draw(arrays(np.float64, (batch, dim), elements=mean_values), label="means")
        noise = data.draw(st.one_of(st.floats(1e-3, 10.0), arrays(np.float64, dim, elements=st.floats(1e-3, 10.0))))
        behavior = TruncatedGaussianBehavior(lambda observations: means, noise_std=noise)
    else:
        behavior = CallableBoxBehavior(_beta_in_box)
    th.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    observations = th.zeros(batch, 2 * dim + 1)
    support = th.as_tensor(boxes)

    samples = behavior.sample(observations, support, 16)
    assert samples.shape == (batch, 16, dim) and samples.dtype == th.float32
    assert_inside(samples, boxes)
    actions = behavior.act(observations, boxes)
    assert actions.shape == (batch, dim)
    assert_inside(actions, boxes)
    if kind != "callable":  # the behavior's density is positive wherever it samples
        assert th.isfinite(behavior.log_prob(observations, support, samples)).all()


@settings(max_examples=50, deadline=None)
@given(
    boxes=env_boxes(),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_extracted_actions_lie_in_the_box(boxes: np.ndarray, data: st.DataObject, seed: int) -> None:
    batch, _, dim = boxes.shape
    bounds = th.as_tensor(SCALER.to_agent(boxes))  # the actor works in agent units
    # Means far out saturate tanh: the squashed action is then exactly at a bound.
    mean_values = st.one_of(st.floats(-50.0, 50.0, width=32), st.sampled_from([-30.0, 30.0]))
    mean = th.as_tensor(data.draw(arrays(np.float32, (batch, dim), elements=mean_values)))
    log_std = th.as_tensor(data.draw(arrays(np.float32, (batch, dim), elements=st.floats(-5.0, 2.0, width=32))))
    th.manual_seed(seed)
    actions, log_density = squashed_box.rsample(mean, log_std, bounds)
    assert actions.shape == (batch, dim) and log_density.shape == (batch,)
    assert_inside(actions, bounds)
    assert th.isfinite(log_density).all()
    assert_inside(squashed_box.mode(mean, bounds), bounds)
    pre_squash = th.as_tensor(data.draw(arrays(np.float32, (batch, 8, dim), elements=st.floats(-50.0, 50.0, width=32))))
    assert_inside(squashed_box.squash(pre_squash, bounds), bounds)
    assert_inside(squashed_box.squash(pre_squash[:, 0], bounds), bounds)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` float32 boxes ``(n, 2, 3)`` in the action space: random fractions, a fifth of the axes degenerate."""
    fractions = rng.random((n, 3, 2))
    point = rng.random((n, 3)) < 0.2
    fractions[point, 1] = fractions[point, 0]
    return _boxes_from_fractions(fractions, ACTION_LOW, ACTION_HIGH)


def test_every_sampled_extracted_and_predicted_action_lies_in_many_random_boxes() -> None:
    # The same guarantees as the property tests above, at scale: thousands of random float32 boxes make sure that the
    # rounding of every unit conversion and of every "low + width * fraction" is met, saturated means included.
    rng = np.random.default_rng(0)
    th.manual_seed(0)
    boxes = _random_boxes(rng, 5000)
    support = th.as_tensor(boxes)
    observations = th.zeros(len(boxes), 7)
    means = rng.uniform(-40.0, 40.0, (len(boxes), 3))
    behaviors = [
        UniformBoxBehavior(),
        TruncatedGaussianBehavior(lambda obs: means, noise_std=[0.01, 1.0, 30.0]),
        CallableBoxBehavior(_beta_in_box),
    ]
    for behavior in behaviors:
        assert_inside(behavior.sample(observations, support, 4), boxes)
        assert_inside(behavior.act(observations, boxes), boxes)

    bounds = th.as_tensor(SCALER.to_agent(boxes))
    saturated = th.as_tensor(rng.choice([-30.0, 30.0], (len(boxes), 3)), dtype=th.float32)
    moderate = th.as_tensor(rng.normal(0.0, 3.0, (len(boxes), 3)), dtype=th.float32)
    for mean in (saturated, moderate):
        assert_inside(squashed_box.mode(mean, bounds), bounds)
        assert_inside(squashed_box.rsample(mean, th.zeros_like(mean), bounds)[0], bounds)
        assert_inside(squashed_box.squash(mean, bounds), bounds)

    model = _predict_model()
    with th.no_grad():
        model.actor.mean.bias.copy_(th.tensor([30.0, -30.0, 30.0]))
    obs = rng.uniform(-1.0, 1.0, (len(boxes), 7)).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(obs, deterministic=deterministic, safe_bounds=(boxes[:, 0], boxes[:, 1]))
        assert_inside(actions, boxes)


@settings(max_examples=40, deadline=None)
@given(
    boxes=env_boxes(),
    single=st.booleans(),
    deterministic=st.booleans(),
    layout=st.sampled_from(["tuple", "array", "pairs"]),
    mean_bias=arrays(np.float32, 3, elements=st.floats(-30.0, 30.0, width=32)),
    log_std_bias=st.floats(-5.0, 2.0),
)
def test_predicted_actions_lie_in_the_box_in_env_units(
    boxes: np.ndarray, single: bool, deterministic: bool, layout: str, mean_bias: np.ndarray, log_std_bias: float
) -> None:
    model = _predict_model()
    with th.no_grad():  # push the squashed mean anywhere in the box, up to its very bounds
        model.actor.mean.bias.copy_(th.as_tensor(mean_bias))
        model.actor.log_std.bias.fill_(log_std_bias)
    rng = np.random.default_rng(len(boxes))
    observations = rng.uniform(-1.0, 1.0, (len(boxes), 7)).astype(np.float32)
    if single:  # one observation of shape (7,) and one box: low and high of shape (3,)
        boxes, observations = boxes[:1], observations[0]
    if layout == "tuple":
        safe_bounds: Any = (boxes[0, 0], boxes[0, 1]) if single else (boxes[:, 0], boxes[:, 1])
    elif layout == "array":
        safe_bounds = boxes[0] if single else boxes
    else:  # one (low, high) pair per observation, as VecEnv.env_method("safe_action_bounds") returns them
        safe_bounds = [(box[0], box[1]) for box in boxes]
    actions, state = model.predict(observations, deterministic=deterministic, safe_bounds=safe_bounds)
    assert state is None
    assert actions.shape == ((3,) if single else (len(boxes), 3))
    actions = actions.reshape(-1, 3)
    assert actions.dtype == np.float32
    assert_inside(actions, boxes)


def test_predicted_actions_without_bounds_lie_in_the_action_space() -> None:
    model = _predict_model()
    with th.no_grad():
        model.actor.mean.bias.copy_(th.tensor([30.0, -30.0, 30.0]))
    observations = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic)
        assert actions.shape == (64, 3) and actions.dtype == np.float32
        assert np.all(actions >= ACTION_LOW) and np.all(actions <= ACTION_HIGH)
    deterministic_actions, _ = model.predict(observations, deterministic=True)
    np.testing.assert_allclose(deterministic_actions, np.broadcast_to([1.0, 0.0, -0.25], (64, 3)), atol=1e-5)


def test_predict_with_a_narrow_box_follows_the_box_in_env_units() -> None:
    # The squashed mean of the whole action space is far from the box: predict must still answer inside the box,
    # in the environment's units (a box in [0, 5] stays there, not in [-1, 1]).
    model = _predict_model()
    with th.no_grad():
        model.actor.mean.bias.zero_()
        model.actor.log_std.bias.fill_(-5.0)
    low = np.array([0.75, 4.5, -0.3], dtype=np.float32)
    high = np.array([0.875, 4.5, -0.3], dtype=np.float32)
    observation = np.zeros(7, dtype=np.float32)
    for deterministic in (True, False):
        action, _ = model.predict(observation, deterministic=deterministic, safe_bounds=(low, high))
        assert np.all(action >= low) and np.all(action <= high)
        assert action[1] == np.float32(4.5) and action[2] == np.float32(-0.3)


def test_clip_into_and_scaler() -> None:
    boxes = np.array([[[-2.0, 1.0, -0.5], [0.5, 1.0, -0.25]]], dtype=np.float32)
    actions = np.array([[7.0, 0.9999, np.float32(-0.37)]], dtype=np.float64)
    clipped = clip_into(actions, boxes)
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, [[0.5, 1.0, np.float32(-0.37)]])
    np.testing.assert_array_equal(SCALER.to_agent(np.stack([ACTION_LOW, ACTION_HIGH])), [[-1, -1, -1], [1, 1, 1]])
    values = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    np.testing.assert_allclose(SCALER.to_agent(SCALER.to_env(values)), values, atol=1e-5)
    np.testing.assert_array_equal(empty_boxes(np.array([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 0.5]]])), [0, 1])


# ------------------------------------------------------------------------------------------- 2. densities


def _grid(low: float, high: float, centre: float, scale: float, n_uniform: int = 20001, n_log: int = 2000) -> Any:
    """Integration nodes on ``[low, high]``: uniform, geometric towards both bounds, dense around ``centre``."""
    width = high - low
    offsets = np.geomspace(1e-12 * width, width, n_log)
    around = np.clip(centre + scale * np.linspace(-10.0, 10.0, n_log), low, high)
    nodes = np.concatenate([np.linspace(low, high, n_uniform), low + offsets, high - offsets, around])
    return np.unique(np.clip(nodes, low, high))


def _truncated_gaussian(mean: Any, std: Any, low: Any, high: Any) -> tuple[Any, th.Tensor, th.Tensor]:
    """:return: the behavior (its controller returns the observation), the observation and the support (float64)"""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    behavior = TruncatedGaussianBehavior(lambda observations: observations, noise_std=np.asarray(std, np.float64))
    observation = th.as_tensor(mean.reshape(1, -1))
    support = th.as_tensor(np.stack([np.atleast_1d(low), np.atleast_1d(high)]).reshape(1, 2, -1), dtype=th.float64)
    return behavior, observation, support


def _log_density(behavior: Any, observation: th.Tensor, support: th.Tensor, points: np.ndarray) -> np.ndarray:
    actions = th.as_tensor(points.reshape(1, len(points), -1), dtype=th.float64)
    return behavior.log_prob(observation, support, actions)[0].numpy()


def _ks_distance(samples: np.ndarray, grid: np.ndarray, density: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the samples and the distribution of the density (on its grid)."""
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2.0 * np.diff(grid))])
    model_cdf = np.interp(np.sort(samples), grid, cdf)
    n = len(samples)
    return float(max(np.max(np.arange(1, n + 1) / n - model_cdf), np.max(model_cdf - np.arange(n) / n)))


# (low, high, mean, std): inside, 40 standard deviations right and left of the box, almost flat, very peaked, and
# 1000 standard deviations away.
TRUNCATED_CASES = [
    (-1.0, 0.5, 0.2, 0.3),
    (-1.0, 0.5, 0.5 + 40 * 0.05, 0.05),
    (-1.0, 0.5, -1.0 - 40 * 0.05, 0.05),
    (0.0, 5.0, 2.5, 20.0),
    (-1.0, 1.0, 0.3, 1e-3),
    (2.0, 3.0, 2.0 - 1000.0, 1.0),
]


@pytest.mark.parametrize(("low", "high", "mean", "std"), TRUNCATED_CASES)
def test_truncated_gaussian_density_integrates_to_one_and_matches_its_samples(
    low: float, high: float, mean: float, std: float
) -> None:
    behavior, observation, support = _truncated_gaussian(mean, std, low, high)
    grid = _grid(low, high, min(max(mean, low), high), std)
    density = np.exp(_log_density(behavior, observation, support, grid[:, None]))
    assert np.all(np.isfinite(density))
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)

    th.manual_seed(0)
    n = 4000
    samples = behavior.sample(observation, support, n)[0, :, 0].numpy()
    assert np.all((samples >= low) & (samples <= high))
    assert _ks_distance(samples, grid, density) < 2.2 / math.sqrt(n)  # p ~ 1e-4 under the density
    mean_d = np.trapezoid(grid * density, grid)
    std_d = math.sqrt(np.trapezoid((grid - mean_d) ** 2 * density, grid))
    assert abs(samples.mean() - mean_d) < 5 * std_d / math.sqrt(n)
    assert samples.std() == pytest.approx(std_d, rel=0.1)
    # A mean outside the box concentrates the mass at the nearest bound, within a few std / distance of it.
    if mean > high:
        assert high - mean_d == pytest.approx(std**2 / (mean - high), rel=0.05)
    if mean < low:
        assert mean_d - low == pytest.approx(std**2 / (low - mean), rel=0.05)


def test_truncated_gaussian_density_in_2d() -> None:
    low, high = np.array([-1.0, 0.0]), np.array([0.5, 2.0])
    std = np.array([0.05, 0.7])
    mean = np.array([0.5 + 40 * 0.05, 0.0 - 40 * 0.7])  # 40 std right of the box on x, 40 std below it on y
    behavior, observation, support = _truncated_gaussian(mean, std, low, high)
    grids = [_grid(low[i], high[i], min(max(mean[i], low[i]), high[i]), std[i], 800, 500) for i in range(2)]
    xs, ys = np.meshgrid(*grids, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=-1)
    density = np.exp(_log_density(behavior, observation, support, points)).reshape(xs.shape)
    total = np.trapezoid(np.trapezoid(density, grids[1], axis=1), grids[0])
    assert total == pytest.approx(1.0, abs=2e-3)

    th.manual_seed(1)
    n = 4000
    samples = behavior.sample(observation, support, n)[0].numpy()
    assert np.all((samples >= low) & (samples <= high))
    for axis in range(2):  # independent axes: each marginal is the 1-D truncated Gaussian
        marginal, marginal_obs, marginal_support = _truncated_gaussian(mean[axis], std[axis], low[axis], high[axis])
        marginal_density = np.exp(_log_density(marginal, marginal_obs, marginal_support, grids[axis][:, None]))
        integrated = np.trapezoid(density, grids[1 - axis], axis=1 - axis)
        np.testing.assert_allclose(integrated, marginal_density, rtol=2e-3, atol=1e-8)
        assert _ks_distance(samples[:, axis], grids[axis], marginal_density) < 2.2 / math.sqrt(n)


def test_truncated_gaussian_with_a_degenerate_axis() -> None:
    low, high = np.array([-1.0, 0.7]), np.array([0.5, 0.7])
    mean, std = np.array([3.0, 5.0]), np.array([0.05, 0.1])  # far outside on both axes
    behavior, observation, support = _truncated_gaussian(mean, std, low, high)
    grid = _grid(-1.0, 0.5, 0.5, 0.05)
    points = np.stack([grid, np.full_like(grid, 0.7)], axis=-1)
    density = np.exp(_log_density(behavior, observation, support, points))
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)  # the point axis carries no density
    th.manual_seed(2)
    samples = behavior.sample(observation, support, 2000)[0].numpy()
    assert np.all(samples[:, 1] == 0.7)
    assert _ks_distance(samples[:, 0], grid, density) < 2.2 / math.sqrt(2000)
    off_axis = th.tensor([[[0.0, 0.7 + 1e-6], [0.6, 0.7]]], dtype=th.float64)
    assert th.isneginf(behavior.log_prob(observation, support, off_axis)).all()


@settings(max_examples=40, deadline=None)
@given(boxes=env_boxes(), seed=st.integers(0, 2**16))
def test_uniform_log_prob_is_minus_log_volume_inside_and_minus_inf_outside(boxes: np.ndarray, seed: int) -> None:
    behavior = UniformBoxBehavior()
    batch, _, dim = boxes.shape
    support = th.as_tensor(boxes)
    observations = th.zeros(batch, 2 * dim + 1)
    th.manual_seed(seed)
    inside = behavior.sample(observations, support, 8)
    corners = support.unsqueeze(1)  # both corners are in the box
    inside = th.cat([inside, corners[:, :, 0], corners[:, :, 1]], dim=1)
    widths = (boxes[:, 1] - boxes[:, 0]).astype(np.float64)
    log_volume = np.where(widths > 1e-9, np.log(np.maximum(widths, 1e-300)), 0.0).sum(-1)
    log_prob = behavior.log_prob(observations, support, inside).numpy()
    np.testing.assert_allclose(log_prob, np.broadcast_to(-log_volume[:, None], log_prob.shape), rtol=1e-5, atol=1e-5)

    outside = inside.clone()
    axis = seed % dim
    outside[:, : inside.shape[1] // 2, axis] = support[:, 1, axis].unsqueeze(1) + 0.25
    outside[:, inside.shape[1] // 2 :, axis] = support[:, 0, axis].unsqueeze(1) - 1e-3
    assert th.isneginf(behavior.log_prob(observations, support, outside)).all()


def test_log_probs_are_minus_inf_outside_the_box() -> None:
    support = th.tensor([[[-0.5, 0.0], [0.5, 2.0]]])
    observations = th.tensor([[0.0, 1.0]])
    outside = th.tensor([[[0.6, 1.0], [0.0, -0.1], [-0.51, 2.5], [0.0, 2.0 + 1e-6]]])
    inside = th.tensor([[[0.0, 1.0], [0.5, 2.0], [-0.5, 0.0]]])
    behaviors = [
        TruncatedGaussianBehavior(lambda obs: obs, noise_std=0.3),
        CallableBoxBehavior(_uniform_in_box),
        CallableBoxBehavior(_beta_in_box),
        UniformBoxBehavior(),
    ]
    for behavior in behaviors:
        assert th.isneginf(behavior.log_prob(observations, support, outside)).all(), behavior
        assert th.isfinite(behavior.log_prob(observations, support, inside[:, :1])).all(), behavior
    # A callable with independent axes (batch_shape (batch, action_dim)) gets the joint density: the sum.
    uniform = CallableBoxBehavior(_uniform_in_box).log_prob(observations, support, inside[:, :1])
    np.testing.assert_allclose(uniform.numpy(), [[-math.log(2.0)]], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(boxes=env_boxes(), data=st.data(), seed=st.integers(0, 2**16))
def test_squashed_log_prob_agrees_with_rsample(boxes: np.ndarray, data: st.DataObject, seed: int) -> None:
    batch, _, dim = boxes.shape
    bounds = th.as_tensor(SCALER.to_agent(boxes), dtype=th.float64)
    # The change of variables to tanh-space is ill-conditioned on very narrow axes: keep them points or >= 1e-4 wide.
    narrow = (bounds[:, 1] - bounds[:, 0]) < 1e-4
    bounds[:, 1] = th.where(narrow, bounds[:, 0], bounds[:, 1])
    mean = th.as_tensor(data.draw(arrays(np.float64, (batch, dim), elements=st.floats(-1.0, 1.0))))
    log_std = th.as_tensor(data.draw(arrays(np.float64, (batch, dim), elements=st.floats(-2.0, 0.0))))
    th.manual_seed(seed)
    actions, log_density = squashed_box.rsample(mean, log_std, bounds)
    scored = squashed_box.log_prob(actions.unsqueeze(1), mean, log_std, bounds)
    assert scored.shape == (batch, 1)
    np.testing.assert_allclose(scored[:, 0].numpy(), log_density.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("low", "high", "mean", "log_std"),
    [(-1.0, 1.0, 0.0, 0.0), (-0.3, 0.8, 1.0, -1.0), (-1.0, -0.9, -0.5, 0.3), (0.2, 0.201, 0.0, -2.0)],
)
def test_squashed_density_integrates_to_one(low: float, high: float, mean: float, log_std: float) -> None:
    pre_squash = np.linspace(-12.0, 12.0, 48001)
    grid = np.unique(np.clip(low + (high - low) * (np.tanh(pre_squash) + 1.0) / 2.0, low, high))
    bounds = th.tensor([[[low], [high]]], dtype=th.float64)
    log_density = squashed_box.log_prob(
        th.as_tensor(grid).reshape(1, -1, 1), th.tensor([[mean]]).double(), th.tensor([[log_std]]).double(), bounds
    )
    assert np.trapezoid(np.exp(log_density[0].numpy()), grid) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------------ 3. the sampled soft target


def _soft_value(slope: float, alpha: float, low: float, high: float) -> float:
    """``alpha * log E_{a ~ U[low, high]} exp(slope * a / alpha)`` in closed form (stable for small alpha)."""
    log_width = math.log(slope * (high - low) / alpha)
    return alpha * (slope * high / alpha + math.log1p(-math.exp(slope * (low - high) / alpha)) - log_width)


def _soft_target_model() -> SafeSupportQ:
    # Action space [-3, 5]: the uniform behavior samples in env units, the target works in agent units.
    env = RandomBoxEnv(action_low=(-3.0,), action_high=(5.0,))
    return SafeSupportQ("MlpPolicy", env, gamma=1.0, learning_starts=10**6, seed=0, **TINY)


def _soft_targets(model: SafeSupportQ, alpha: float, n_samples: int, n_repeats: int, box: tuple[float, float]) -> Any:
    """The critic targets of ``n_repeats`` copies of one transition (reward 0, gamma 1), through ``losses``."""
    captured: list[th.Tensor] = []

    def capture(current_q: th.Tensor, targets: th.Tensor) -> th.Tensor:
        captured.append(targets)
        return ((current_q - targets) ** 2).mean()

    model.critic_regression_loss = capture  # type: ignore[method-assign]
    model.n_behavior_samples = n_samples
    zeros = th.zeros(n_repeats, 1)
    boxes = th.tensor([[box[0]], [box[1]]]).expand(n_repeats, 2, 1)
    data = SafeReplayBufferSamples(
        observations=th.zeros(n_repeats, 3),
        actions=zeros,
        next_observations=th.zeros(n_repeats, 3),
        dones=zeros,
        rewards=zeros,
        supports=boxes,
        next_supports=boxes,
    )
    with th.no_grad():
        model.support_kind.losses(model, data, alpha, False)
    assert len(captured) == 2 and th.equal(captured[0], captured[1])  # one target for both twin critics
    return captured[0][:, 0].numpy().astype(np.float64)


def test_sampled_soft_target_converges_to_the_closed_form() -> None:
    slope, alpha, low, high = 2.0, 0.5, -0.6, 0.9
    model = _soft_target_model()
    model.critic_target.q_networks = [LinearQ(slope), LinearQ(slope)]
    exact = _soft_value(slope, alpha, low, high)
    th.manual_seed(0)
    errors = {}
    for n_samples, n_repeats in ((4, 4000), (64, 4000), (4096, 400)):
        targets = _soft_targets(model, alpha, n_samples, n_repeats, (low, high))
        errors[n_samples] = targets.mean() - exact
    # log-mean-exp underestimates (Jensen), less and less as the samples grow.
    assert errors[4] < -0.1 and errors[64] < 0.0
    assert abs(errors[4]) > abs(errors[64]) > abs(errors[4096])
    assert abs(errors[4096]) < 0.005


def test_sampled_soft_target_limits_and_twins() -> None:
    slope, low, high = 2.0, -0.6, 0.9
    model = _soft_target_model()
    model.critic_target.q_networks = [LinearQ(slope), LinearQ(slope, offset=1.0)]
    th.manual_seed(1)
    # alpha -> 0: the maximum over the box; alpha -> infinity: the behavior's expectation of Q.
    cold = _soft_targets(model, 1e-3, 4096, 50, (low, high))
    assert _soft_value(slope, 1e-3, low, high) == pytest.approx(slope * high, abs=0.02)
    assert cold.mean() == pytest.approx(slope * high, abs=0.03)
    assert np.all(cold <= slope * high + 1e-5)
    hot = _soft_targets(model, 100.0, 4096, 50, (low, high))
    # alpha * log E exp(Q / alpha) = E[Q] + Var[Q] / (2 alpha) + O(1 / alpha^2)
    assert _soft_value(slope, 100.0, low, high) == pytest.approx(slope * (low + high) / 2, abs=5e-3)
    assert hot.mean() == pytest.approx(slope * (low + high) / 2, abs=0.01)
    assert hot.mean() == pytest.approx(_soft_value(slope, 100.0, low, high), abs=5e-3)
    # twin_min takes the smaller critic (slope * a), else the mean of both (slope * a + 0.5).
    hot_min = hot.mean()
    model.twin_min = False
    hot_mean = _soft_targets(model, 100.0, 4096, 50, (low, high)).mean()
    assert hot_mean - hot_min == pytest.approx(0.5, abs=0.01)


def test_terminal_transitions_with_empty_boxes_target_the_reward() -> None:
    model = _soft_target_model()
    model.critic_target.q_networks = [LinearQ(1.0), LinearQ(1.0)]
    captured: list[th.Tensor] = []
    model.critic_regression_loss = lambda q, targets: captured.append(targets) or ((q - targets) ** 2).mean()  # type: ignore
    empty = th.tensor([[[0.5], [-0.5]]])  # low > high: a terminal state may have no safe action
    data = SafeReplayBufferSamples(
        observations=th.zeros(1, 3),
        actions=th.zeros(1, 1),
        next_observations=th.zeros(1, 3),
        dones=th.ones(1, 1),
        rewards=th.full((1, 1), 3.0),
        supports=th.tensor([[[-1.0], [1.0]]]),
        next_supports=empty,
    )
    model.support_kind.losses(model, data, 0.5, False)
    assert captured[0].item() == 3.0


@pytest.mark.parametrize("share", [False, True])
def test_shared_target_draws_fit_the_head_to_the_target_at_next_states(share: bool, monkeypatch: Any) -> None:
    # The online critic prefers the bottom of the box, the target the top: the head follows the one it is given.
    import sb3_safeq.common.supports.box as box_module

    model = _soft_target_model()
    model.share_target_draws = share
    model.critic.q_networks = [LinearQ(-4.0), LinearQ(-4.0)]
    model.critic_target.q_networks = [LinearQ(4.0), LinearQ(4.0)]
    passes = []
    counted = box_module.q_values_of_samples
    monkeypatch.setattr(box_module, "q_values_of_samples", lambda *args: passes.append(1) or counted(*args))
    n = 64
    full = th.tensor([[-1.0], [1.0]]).expand(n, 2, 1)
    data = SafeReplayBufferSamples(
        observations=th.zeros(n, 3),
        actions=th.zeros(n, 1),
        next_observations=th.ones(n, 3),
        dones=th.zeros(n, 1),
        rewards=th.zeros(n, 1),
        supports=full,
        next_supports=full,
    )
    optimizer = th.optim.Adam(model.actor.parameters(), lr=1e-2)
    th.manual_seed(0)
    for _ in range(150):
        _, _, actor_terms = model.support_kind.losses(model, data, 0.25, True)
        assert actor_terms is not None
        optimizer.zero_grad()
        actor_terms[0].backward()
        optimizer.step()
    # One pass of the twin critics over batch x N draws per gradient step instead of two.
    assert len(passes) == 150 * (1 if share else 2)
    trained_at = data.next_observations if share else data.observations
    with th.no_grad():
        action = model.actor.action(trained_at[:1], full[:1], deterministic=True).item()
    assert (action > 0.5) if share else (action < -0.5), action
    # Terminal next states carry no action to learn: with every transition terminal, the shared loss is 0.
    terminal = data._replace(dones=th.ones(n, 1))
    _, _, (loss, _) = model.support_kind.losses(model, terminal, 0.25, True)
    assert (loss.item() == 0.0) if share else (loss.item() != 0.0)


def test_induced_exploration_samples_pi_q() -> None:
    # pi_Q ∝ beta * exp(Q / alpha): with Q = a, a cold alpha picks the top of the box, a hot one stays uniform.
    env = RandomBoxEnv(action_low=(-3.0,), action_high=(5.0,))
    model = SafeSupportQ("MlpPolicy", env, alpha=0.01, seed=0, **{**TINY, "n_behavior_samples": 64})
    model.critic.q_networks = [LinearQ(1.0), LinearQ(1.0)]
    low, high = -0.6, 0.9
    boxes = th.tensor([[low], [high]]).expand(2000, 2, 1)
    observations = th.zeros(2000, 3)
    th.manual_seed(0)
    cold = model.support_kind.induced_step(model, observations, boxes, model.current_alpha(), False).actions
    assert_inside(cold, boxes)
    assert cold.mean().item() > high - 0.1
    model.alpha_schedule = lambda _: 100.0
    hot = model.support_kind.induced_step(model, observations, boxes, model.current_alpha(), False).actions
    assert_inside(hot, boxes)
    assert hot.mean().item() == pytest.approx((low + high) / 2, abs=0.05)


# --------------------------------------------------------------------------------------------- 4. save and load


@pytest.mark.parametrize("extraction", ["forward_kl", "reverse_kl"])
def test_save_load_round_trip(tmp_path: Any, extraction: str) -> None:
    model = SafeSupportQ("MlpPolicy", _point_mass(), extraction=extraction, twin_min=False, seed=0, **POINT_MASS_KWARGS)
    model.learn(300)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = SafeSupportQ.load(tmp_path / "model.zip", env=_point_mass())

    assert isinstance(loaded.policy, BoxSafeSupportQPolicy)
    assert (loaded.n_behavior_samples, loaded.extraction, loaded.twin_min) == (4, extraction, False)
    assert isinstance(loaded.behavior_policy, UniformBoxBehavior)
    assert loaded.actor is loaded.policy.actor and loaded.critic_target is loaded.policy.critic_target
    for name in ("actor", "critic", "critic_target"):
        for saved, restored in zip(getattr(model, name).parameters(), getattr(loaded, name).parameters(), strict=True):
            assert th.equal(saved, restored), name
    for optimizer in ("critic_optimizer", "actor_optimizer"):
        saved_state = getattr(model.policy, optimizer).state_dict()
        restored_state = getattr(loaded.policy, optimizer).state_dict()
        assert saved_state["state"], optimizer  # it has stepped
        assert saved_state["state"].keys() == restored_state["state"].keys()
        for key, values in saved_state["state"].items():
            for field, value in values.items():
                assert th.equal(value, restored_state["state"][key][field]), (optimizer, field)

    env = _point_mass().unwrapped
    observations, boxes = [], []
    for position in [(-1.2, 0.0), (-0.45, 0.1), (0.0, 0.0), (-0.5, 0.36), (1.4, 1.45), (-1.3, -1.49)]:
        observation, _ = env.reset(options={"position": position})
        observations.append(observation)
        boxes.append(env.safe_action_bounds())
    observations = np.stack(observations)
    low, high = np.stack([box[0] for box in boxes]), np.stack([box[1] for box in boxes])
    for safe_bounds in (None, (low, high)):
        expected, _ = model.predict(observations, deterministic=True, safe_bounds=safe_bounds)
        actual, _ = loaded.predict(observations, deterministic=True, safe_bounds=safe_bounds)
        np.testing.assert_array_equal(actual, expected)
    assert np.all((expected >= low) & (expected <= high))
    th.manual_seed(3)
    expected, _ = model.predict(observations, safe_bounds=(low, high))
    th.manual_seed(3)
    np.testing.assert_array_equal(loaded.predict(observations, safe_bounds=(low, high))[0], expected)

    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert isinstance(loaded.replay_buffer, SafeReplayBuffer)
    np.testing.assert_array_equal(loaded.replay_buffer.next_supports, model.replay_buffer.next_supports)
    before = [parameter.clone() for parameter in loaded.actor.parameters()]
    loaded.learn(50, reset_num_timesteps=False)  # training goes on after loading
    assert loaded.num_timesteps == 350
    assert any(not th.equal(a, b) for a, b in zip(before, loaded.actor.parameters(), strict=True))
    assert loaded.safety_counters.unsafe_visits == 0 and loaded.safety_counters.out_of_support_actions == 0


@pytest.mark.parametrize("env_id", ["SafePointMass-v0", "SafeDoubleIntegrator-v0"])
def test_model_accepts_the_continuous_env_ids(env_id: str) -> None:
    # SB3 documents `Algorithm(policy, "EnvId-v0")`; it builds the env with gym.make(env_id, render_mode="rgb_array").
    model = SafeSupportQ("MlpPolicy", env_id, learning_starts=10, seed=0, **TINY)
    model.learn(20)
    assert model.safety_counters.steps == 20 and model.safety_counters.unsafe_visits == 0


# ---------------------------------------------------------------------------------------------- 5. several envs


class _BoxRecorder(gym.Wrapper):
    """Records the safe box of every observation the environment returns (keyed by the observation's bytes)."""

    def __init__(self, env: gym.Env, table: dict[bytes, np.ndarray]) -> None:
        super().__init__(env)
        self.table = table

    def _record(self, observation: np.ndarray) -> None:
        self.table[np.asarray(observation, dtype=np.float32).tobytes()] = np.stack(
            self.env.get_wrapper_attr("safe_action_bounds")()
        ).astype(np.float32)

    def reset(self, **kwargs: Any) -> Any:
        observation, info = self.env.reset(**kwargs)
        self._record(observation)
        return observation, info

    def step(self, action: Any) -> Any:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(observation)
        return observation, reward, terminated, truncated, info


def _check_stored_boxes(model: SafeSupportQ, table: dict[bytes, np.ndarray]) -> int:
    """
    Check the supports in the replay buffer against the recorded boxes of the stored (next) observations.

    :return: the number of stored episode ends
    """
    buffer = model.replay_buffer
    assert isinstance(buffer, SafeReplayBuffer) and not buffer.full
    n, n_envs, dim = buffer.pos, model.n_envs, model.action_space.shape[0]
    assert buffer.supports.shape == buffer.next_supports.shape == (buffer.buffer_size, n_envs, 2, dim)
    supports, next_supports = buffer.supports[:n], buffer.next_supports[:n]
    assert supports.dtype == np.float32
    assert np.all((supports >= -1.0) & (supports <= 1.0)) and np.all((next_supports >= -1.0) & (next_supports <= 1.0))
    actions = buffer.actions[:n]  # agent units
    assert np.all((actions >= supports[:, :, 0]) & (actions <= supports[:, :, 1]))
    scaler = BoxScaler(model.action_space)
    for t in range(n):
        for env in range(n_envs):
            box = table[buffer.observations[t, env].astype(np.float32).tobytes()]
            next_box = table[buffer.next_observations[t, env].astype(np.float32).tobytes()]
            np.testing.assert_array_equal(supports[t, env], scaler.to_agent(box))
            np.testing.assert_array_equal(next_supports[t, env], scaler.to_agent(next_box))
    return int(buffer.dones[:n].sum())


@pytest.mark.parametrize("env_id", ["SafePointMass-v0", "SafeDoubleIntegrator-v0"])
def test_multi_env_training_is_safe_and_stores_every_box(env_id: str) -> None:
    table: dict[bytes, np.ndarray] = {}
    vec_env = make_vec_env(
        env_id,
        n_envs=2,
        seed=0,
        env_kwargs={"max_episode_steps": 60},
        wrapper_class=lambda env: SafetyWrapper(_BoxRecorder(env, table)),
    )
    model = SafeSupportQ("MlpPolicy", vec_env, seed=0, **POINT_MASS_KWARGS)
    model.learn(300)
    assert model.num_timesteps == 300
    counters = model.safety_counters
    assert counters.steps == 300
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0
    assert all(wrapper_counters.unsafe_visits == 0 for wrapper_counters in vec_env.get_attr("counters"))
    assert _check_stored_boxes(model, table) >= 4  # TimeLimit truncations: two per environment
    buffer = model.replay_buffer
    n = buffer.pos
    assert n == 150
    # Within an episode, the box of each next observation is the box of the next step's observation.
    continued = ~buffer.dones[: n - 1].astype(bool)
    same_box = np.all(buffer.next_supports[: n - 1] == buffer.supports[1:n], axis=(-2, -1))
    assert np.all(same_box[continued])


@pytest.mark.parametrize("terminate", [True, False])
def test_terminal_transitions_keep_the_terminal_box(terminate: bool) -> None:
    # Terminations reach an empty box (allowed: the episode ends there); truncations a random one. The auto-reset
    # starts a new episode with another box: the buffer must keep the terminal observation's.
    def make_env() -> gym.Env:
        env = RandomBoxEnv(episode_length=5, terminate=terminate, terminal_box="empty" if terminate else "random")
        return env if terminate else TimeLimit(env, 5)

    table: dict[bytes, np.ndarray] = {}
    wrap = lambda env: SafetyWrapper(_BoxRecorder(env, table))  # noqa: E731
    vec_env = make_vec_env(make_env, n_envs=2, seed=0, wrapper_class=wrap)
    model = SafeSupportQ("MlpPolicy", vec_env, learning_starts=30, seed=0, **TINY)
    model.learn(100)
    assert _check_stored_boxes(model, table) == 20
    buffer = model.replay_buffer
    n = buffer.pos
    done = buffer.dones[:n].astype(bool)
    terminal_boxes = buffer.next_supports[:n][done]
    assert np.all(buffer.timeouts[:n][done] == (not terminate))
    if terminate:
        assert np.all(empty_boxes(terminal_boxes))
        assert not np.any(empty_boxes(buffer.next_supports[:n][~done]))
    # The box of the observation after the reset is another one.
    after_reset = buffer.supports[1:n][done[: n - 1]]
    assert np.all(np.any(terminal_boxes[: len(after_reset)] != after_reset, axis=(-2, -1)))
    # The observations encode their boxes (RandomBoxEnv): a direct check of the terminal ones.
    terminal_observations = buffer.next_observations[:n][done]
    scaler = BoxScaler(model.action_space)
    encoded = terminal_observations[:, :4].reshape(-1, 2, 2)
    np.testing.assert_array_equal(terminal_boxes, scaler.to_agent(encoded))


# ----------------------------------------------------------------------------------------------- 6. bad inputs


def test_bad_bounds_fail_clearly() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match="outside the action space"):
        as_safe_bounds(([-1.5, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="outside the action space"):
        as_safe_bounds(([-1.0, 0.0], [0.0, 1.01]), space)
    with pytest.raises(ValueError, match="NaN"):
        as_safe_bounds(([np.nan, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="NaN"):
        as_safe_bounds(([-np.inf, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="shape"):
        as_safe_bounds(([0.0, 0.0, 0.0], [0.0, 0.5, 1.0]), space)
    # Rounding noise just outside the space is clipped back in; an empty box is returned as such.
    np.testing.assert_array_equal(as_safe_bounds(([-1.0 - 1e-9, 0.0], [0.0, 1.0 + 1e-9]), space), [[-1, 0], [0, 1]])
    assert empty_boxes(as_safe_bounds(([0.5, 0.0], [0.0, 0.5]), space))


def test_predict_rejects_bad_bounds() -> None:
    model = _predict_model()
    observation = np.zeros(7, dtype=np.float32)
    low, high = ACTION_LOW.copy(), ACTION_HIGH.copy()
    with pytest.raises(ValueError, match="outside the action space"):
        model.predict(observation, safe_bounds=(low - 1.0, high))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(observation, safe_bounds=(np.array([np.nan, 0.0, -0.5]), high))
    with pytest.raises(EmptySupportError, match="low > high"):
        model.predict(observation, safe_bounds=(high, low))
    with pytest.raises(EmptySupportError, match="low > high"):
        model.predict(np.zeros((2, 7), np.float32), safe_bounds=(np.stack([low, high]), np.stack([high, low])))
    with pytest.raises(ValueError, match="boxes for"):
        model.predict(np.zeros((3, 7), np.float32), safe_bounds=(low, high))
    with pytest.raises(ValueError, match="action_masks does not apply to the action space Box"):
        model.predict(observation, action_masks=np.ones(3, dtype=bool))


def test_discrete_model_rejects_safe_bounds() -> None:
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), seed=0, **TINY)
    observation, _ = RandomMaskEnv().reset(seed=0)
    with pytest.raises(ValueError, match="safe_bounds does not apply to the action space Discrete"):
        model.predict(observation, safe_bounds=(np.zeros(1), np.ones(1)))


def test_environments_without_boxes_fail_clearly() -> None:
    with pytest.raises(MissingSupportError, match="safe_action_bounds"):
        SafeSupportQ("MlpPolicy", NoBoundsBoxEnv())
    with pytest.raises(MissingSupportError, match="safe_action_bounds"):
        SafetyWrapper(NoBoundsBoxEnv())
    with pytest.raises(MissingSupportError, match="SafetyWrapper"):
        SafeSupportQ("MlpPolicy", DummyVecEnv([RandomBoxEnv]))
    with pytest.raises(MissingSupportError, match="lack a `safe_action_bounds\\(\\)`"):
        SafeSupportQ("MlpPolicy", DummyVecEnv([NoBoundsBoxEnv]))
    # A VecEnv whose sub-environments carry the wrapper is accepted.
    SafeSupportQ("MlpPolicy", DummyVecEnv([lambda: SafetyWrapper(RandomBoxEnv())]), **TINY)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32), "infinite bounds"),
        (spaces.Box(-1.0, 1.0, shape=(2, 2), dtype=np.float32), "flat Box"),
    ],
)
def test_unsupported_box_spaces_fail_clearly(space: spaces.Box, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SafeSupportQ("MlpPolicy", FixedBoxEnv(np.zeros(2), np.zeros(2), action_space=space))


def test_empty_box_reached_during_training_fails_clearly() -> None:
    model = SafeSupportQ("MlpPolicy", RandomBoxEnv(empty_at=3, episode_length=10), learning_starts=100, **TINY)
    with pytest.raises(EmptySupportError, match="empty safe box"):
        model.learn(50)
    assert model.num_timesteps == 3
    # The same empty box at a terminal state is fine (no action is taken there).
    terminal_env = RandomBoxEnv(episode_length=3, terminal_box="empty")
    terminal = SafeSupportQ("MlpPolicy", terminal_env, learning_starts=10, **TINY)
    terminal.learn(40)
    # ... but not at a truncated one, which the target bootstraps from.
    truncated = SafeSupportQ("MlpPolicy", TimeLimit(RandomBoxEnv(empty_at=3, terminate=False), 3), **TINY)
    with pytest.raises(EmptySupportError, match="empty safe box"):
        truncated.learn(10)
    # An empty box at reset cannot be acted in either.
    start = SafeSupportQ("MlpPolicy", FixedBoxEnv([0.5, 0.5], [-0.5, 0.5]), **TINY)
    with pytest.raises(EmptySupportError, match="empty safe box"):
        start.learn(10)


def test_behavior_errors() -> None:
    support = th.tensor([[[-0.5, 0.0], [0.5, 1.0]]])
    observations = th.zeros(1, 2)

    def too_wide(obs: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
        return th.distributions.Independent(th.distributions.Normal(th.zeros_like(low), 5.0), 1)

    with pytest.raises(ValueError, match="outside the safe box"):
        CallableBoxBehavior(too_wide).sample(observations, support, 64)
    model = SafeSupportQ("MlpPolicy", RandomBoxEnv(), behavior=too_wide, seed=0, **TINY)
    with pytest.raises(ValueError, match="outside the safe box"):
        model.learn(20)
    with pytest.raises(TypeError, match="Distribution"):
        CallableBoxBehavior(lambda obs, low, high: low).sample(observations, support, 1)
    for noise_std in (0.0, -1.0, np.nan, np.inf, [0.3, 0.0], [[0.1]]):
        with pytest.raises(ValueError, match="noise_std"):
            TruncatedGaussianBehavior(lambda obs: obs, noise_std=noise_std)
    with pytest.raises(TypeError, match="controller"):
        TruncatedGaussianBehavior("not a function", noise_std=0.1)  # type: ignore[arg-type]
    wrong_shape = TruncatedGaussianBehavior(lambda obs: np.zeros((1, 3)), noise_std=0.1)
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        wrong_shape.sample(observations, support, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        TruncatedGaussianBehavior(lambda obs: np.full((1, 2), np.nan), noise_std=0.1).sample(observations, support)
    controller_model = SafeSupportQ(
        "MlpPolicy", RandomBoxEnv(), behavior=TruncatedGaussianBehavior(lambda obs: np.zeros(5), 0.1), **TINY
    )
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        controller_model.learn(5)
    empty = th.tensor([[[0.5, 0.0], [-0.5, 1.0]]])
    for behavior in (UniformBoxBehavior(), TruncatedGaussianBehavior(lambda obs: obs, 0.1)):
        with pytest.raises(EmptySupportError):
            behavior.sample(observations, empty)
        with pytest.raises(EmptySupportError):
            behavior.act(observations, empty.numpy())
    with pytest.raises(TypeError, match="does not fit the action space"):
        SafeSupportQ("MlpPolicy", RandomBoxEnv(), behavior=MaskedUniformBehavior(), **TINY)


class _DiscreteOnlyPolicy(SafeSupportQPolicy):
    """A user's policy class for Discrete actions (the policy names' classes are swapped for their Box twins)."""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_behavior_samples": 0}, "n_behavior_samples"),
        ({"n_behavior_samples": -3}, "n_behavior_samples"),
        ({"n_behavior_samples": 2.5}, "n_behavior_samples"),
        ({"extraction": "foo"}, "extraction='foo'"),
        ({"policy": _DiscreteOnlyPolicy}, "does not fit the action space"),
    ],
)
def test_bad_box_hyperparameters_fail_clearly(kwargs: dict[str, Any], match: str) -> None:
    policy = kwargs.pop("policy", "MlpPolicy")
    with pytest.raises(ValueError, match=match):
        SafeSupportQ(policy, RandomBoxEnv(), **{**TINY, **kwargs})


def test_box_policy_class_on_a_discrete_env_fails_clearly() -> None:
    with pytest.raises(ValueError, match="does not fit the action space"):
        SafeSupportQ(BoxSafeSupportQPolicy, RandomMaskEnv(), **TINY)


# ----------------------------------------------------------------------------------------- 7. the safety wrapper


def test_wrapper_carries_the_box_in_info() -> None:
    env = SafetyWrapper(_point_mass())
    _, info = env.reset(seed=0)
    for step in range(40):
        box = info["safe_action_bounds"]
        assert box.dtype == np.float32 and box.shape == (2, 2)
        low, high = env.safe_action_bounds()
        assert low.dtype == high.dtype == np.float32
        np.testing.assert_array_equal(box, np.stack([low, high]))
        np.testing.assert_array_equal(box, np.stack(env.unwrapped.safe_action_bounds()))
        action = np.array([1.0, 0.1 * step % 1.0], dtype=np.float32)  # towards the goal, clipped into the box
        _, _, terminated, truncated, info = env.step(np.clip(action, low, high))
        assert info["out_of_support"] is False and info["cost"] == 0.0 and info["empty_support"] is False
        if terminated or truncated:
            _, info = env.reset()
    assert env.counters.steps == 40 and env.counters.out_of_support_actions == 0


def test_wrapper_bounds_are_copies() -> None:
    env = SafetyWrapper(FixedBoxEnv([-0.5, 0.0], [0.5, 1.0]))
    _, info = env.reset()
    low, high = env.safe_action_bounds()
    low[:] = 7.0
    high[:] = -7.0
    info["safe_action_bounds"][:] = 3.0
    np.testing.assert_array_equal(np.stack(env.safe_action_bounds()), [[-0.5, 0.0], [0.5, 1.0]])
    _, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["out_of_support"] is False
    info["safe_action_bounds"][:] = 3.0
    np.testing.assert_array_equal(np.stack(env.safe_action_bounds()), [[-0.5, 0.0], [0.5, 1.0]])
    with pytest.raises(AttributeError, match="safe_action_bounds"):
        env.action_masks()
    with pytest.raises(ValueError, match="action_mask_fn does not apply"):
        SafetyWrapper(FixedBoxEnv([-0.5, 0.0], [0.5, 1.0]), action_mask_fn=lambda e: np.ones(2, bool))


def test_wrapper_counts_out_of_box_actions() -> None:
    inner = FixedBoxEnv([-0.5, 0.0], [0.5, 1.0])
    env = SafetyWrapper(inner)
    env.reset()
    flags = []
    for action in ([0.6, 0.5], [0.0, -1e-3], [np.nan, 0.5], [0.5, 1.0], [-0.5, 0.0], [0.1, 0.2]):
        _, _, _, _, info = env.step(np.array(action, dtype=np.float32))
        flags.append(info["out_of_support"])
        assert info["shielded"] is False
    assert flags == [True, True, True, False, False, False]
    assert env.counters.out_of_support_actions == 3 and env.counters.shielded_actions == 0
    assert np.isnan(inner.actions[2][0])  # without the shield the environment gets the action as it came


def test_shield_clips_into_the_box() -> None:
    inner = FixedBoxEnv([-0.5, 0.0], [0.5, 1.0])
    env = SafetyWrapper(inner, shield=True)
    env.reset()
    cases = [
        ([0.6, 0.5], [0.5, 0.5]),
        ([-3.0, 2.0], [-0.5, 1.0]),
        ([np.nan, 0.5], [0.0, 0.5]),  # NaN goes to the box's midpoint on that axis
        ([0.25, 0.75], [0.25, 0.75]),  # inside: untouched
    ]
    for action, executed in cases:
        _, _, _, _, info = env.step(np.array(action, dtype=np.float32))
        np.testing.assert_array_equal(inner.actions[-1], np.array(executed, dtype=np.float32))
        assert info["shielded"] is info["out_of_support"] is (action != executed)
    assert env.counters.shielded_actions == 3 == env.counters.out_of_support_actions


def test_shield_clips_float64_actions_just_outside_the_box() -> None:
    # A float64 action may lie outside the float32 box by less than float32 rounding: it is still outside the box,
    # and the environment (which computes in float64) must not receive it.
    inner = FixedBoxEnv([-0.5, 0.0], [0.5, 1.0])
    env = SafetyWrapper(inner, shield=True)
    env.reset()
    _, _, _, _, info = env.step(np.array([0.5 + 1e-9, 1.0 + 1e-10], dtype=np.float64))
    executed = np.asarray(inner.actions[-1], dtype=np.float64)
    assert np.all(executed <= [0.5, 1.0]), f"the environment got {executed.tolist()}, outside [0.5, 1.0]"
    assert info["out_of_support"] is True and info["shielded"] is True


def test_wrapper_strict_mode_and_empty_boxes() -> None:
    strict = SafetyWrapper(FixedBoxEnv([-0.5, 0.0], [0.5, 1.0], cost=1.0), strict=True)
    strict.reset()
    with pytest.raises(UnsafeVisitError, match="strict mode"):
        strict.step(np.zeros(2, dtype=np.float32))
    counting = SafetyWrapper(FixedBoxEnv([-0.5, 0.0], [0.5, 1.0], cost=0.5))
    counting.reset()
    for _ in range(3):
        counting.step(np.zeros(2, dtype=np.float32))
    assert counting.counters.unsafe_visits == 3 and counting.counters.cumulative_cost == 1.5
    empty = SafetyWrapper(FixedBoxEnv([0.5, 0.0], [-0.5, 1.0]))
    _, info = empty.reset()
    assert info["empty_support"] is True and empty_boxes(info["safe_action_bounds"])
    _, _, _, _, info = empty.step(np.zeros(2, dtype=np.float32))
    assert info["empty_support"] is True and info["out_of_support"] is True
    assert empty.counters.empty_support_states == 2
    with pytest.raises(ValueError, match="outside the action space"):
        SafetyWrapper(FixedBoxEnv([-2.0, 0.0], [0.5, 1.0])).reset()
    custom = SafetyWrapper(NoBoundsBoxEnv(), safe_bounds_fn=lambda env: ([0.0, -0.25], [0.0, 0.25]))
    _, info = custom.reset()
    np.testing.assert_array_equal(info["safe_action_bounds"], [[0.0, -0.25], [0.0, 0.25]])


# ------------------------------------------------------------------------------------------ 8. exploration modes


@pytest.mark.parametrize("exploration", ["induced", "mixture"])
@pytest.mark.parametrize("env_name", ["random_box", "point_mass"])
def test_induced_and_mixture_exploration_stay_in_the_box(exploration: str, env_name: str) -> None:
    # RandomBoxEnv raises on any action outside its box (degenerate axes included); the point mass reports costs.
    env = RandomBoxEnv() if env_name == "random_box" else _point_mass()
    model = SafeSupportQ("MlpPolicy", env, exploration=exploration, learning_starts=50, seed=0, **TINY)
    induced_calls = []
    induced = model.support_kind.induced_step

    def counting_induced(learner: Any, observations: Any, boxes: th.Tensor, alpha: float, deterministic: bool) -> Any:
        induced_calls.append(len(boxes))
        return induced(learner, observations, boxes, alpha, deterministic)

    model.support_kind.induced_step = counting_induced  # type: ignore[method-assign]
    model.learn(150)
    counters = model.safety_counters
    assert counters.steps == 150 and counters.unsafe_visits == 0 and counters.out_of_support_actions == 0
    if exploration == "induced":
        assert len(induced_calls) == 100  # every step after learning_starts
    else:
        assert 25 < len(induced_calls) < 75  # about mixture_weight = 0.5 of them
    buffer = model.replay_buffer
    actions, supports = buffer.actions[: buffer.pos], buffer.supports[: buffer.pos]
    assert np.all((actions >= supports[:, :, 0]) & (actions <= supports[:, :, 1]))


def _towards_goal(observations: np.ndarray) -> np.ndarray:
    return np.clip(5.0 * observations[:, 2:4], -1.0, 1.0)  # goal minus position, scaled and clipped


@pytest.mark.parametrize("extraction", ["forward_kl", "reverse_kl"])
def test_truncated_gaussian_behavior_around_a_controller_trains(extraction: str) -> None:
    shapes = []

    def controller(observations: np.ndarray) -> np.ndarray:
        shapes.append(observations.shape)
        return _towards_goal(observations)

    behavior = TruncatedGaussianBehavior(controller, noise_std=0.3)
    kwargs = {**POINT_MASS_KWARGS, "policy_kwargs": {"net_arch": [16]}}
    model = SafeSupportQ("MlpPolicy", _point_mass(), behavior=behavior, extraction=extraction, seed=0, **kwargs)
    model.learn(200)
    assert model.behavior_policy is behavior
    counters = model.safety_counters
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0
    assert (1, 16) in shapes and (32, 16) in shapes  # acting, and sampling for the target on batches
    buffer = model.replay_buffer
    actions, supports = buffer.actions[: buffer.pos, 0], buffer.supports[: buffer.pos, 0]
    assert np.all((actions >= supports[:, 0]) & (actions <= supports[:, 1]))
    # The behavior follows the controller (the goal is to the right): uniform actions would average about 0.
    assert actions[:, 0].mean() > 0.3
    assert all(th.isfinite(parameter).all() for parameter in model.policy.parameters())
