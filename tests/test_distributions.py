"""
Probability densities over a safe support: the Gaussian squashed into the box by the Box extraction head (its
actions stay inside the box, its log-density agrees with its samples and integrates to one), and the
log-probabilities of the behavior policies (minus infinity outside the support, normalised, matching their samples,
point axes without density).
"""

import math
from typing import Any

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safeq import (
    CallableBoxBehavior,
    CallableDiscreteBehavior,
    MaskedUniformBehavior,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.common.supports import squashed_box
from tests.helpers import (
    ACTION_SPACE,
    KINDS,
    SCALER,
    assert_in_supports,
    beta_in_box,
    env_boxes,
    random_supports,
    uniform_in_box,
)

# ------------------------------------------------------------------------------------ the squashed box (actor)


@settings(max_examples=50, deadline=None)
@given(boxes=env_boxes(), data=st.data(), seed=st.integers(0, 2**16))
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
    assert_in_supports(actions, bounds)
    assert th.isfinite(log_density).all()
    assert_in_supports(squashed_box.mode(mean, bounds), bounds)
    pre_squash = th.as_tensor(data.draw(arrays(np.float32, (batch, 8, dim), elements=st.floats(-50.0, 50.0, width=32))))
    assert_in_supports(squashed_box.squash(pre_squash, bounds), bounds)
    assert_in_supports(squashed_box.squash(pre_squash[:, 0], bounds), bounds)


def test_extracted_actions_lie_in_many_random_boxes() -> None:
    # The property above at scale: thousands of random float32 boxes make sure that the rounding of every unit
    # conversion and of every "low + width * fraction" is met, saturated means included.
    rng = np.random.default_rng(0)
    th.manual_seed(0)
    boxes = random_supports("box", rng, 5000, ACTION_SPACE)
    bounds = th.as_tensor(SCALER.to_agent(boxes))
    saturated = th.as_tensor(rng.choice([-30.0, 30.0], (len(boxes), 3)), dtype=th.float32)
    moderate = th.as_tensor(rng.normal(0.0, 3.0, (len(boxes), 3)), dtype=th.float32)
    for mean in (saturated, moderate):
        assert_in_supports(squashed_box.mode(mean, bounds), bounds)
        assert_in_supports(squashed_box.rsample(mean, th.zeros_like(mean), bounds)[0], bounds)
        assert_in_supports(squashed_box.squash(mean, bounds), bounds)


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


# --------------------------------------------------------------------------------- behavior log-probabilities


def _mask_log_prob_case() -> tuple[list[Any], th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    support = th.tensor([[True, False, True, False]])
    observations = th.zeros(1, 2)
    outside, inside = th.tensor([[1, 3]]), th.tensor([[0, 2]])
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    behaviors = [MaskedUniformBehavior(), CallableDiscreteBehavior(lambda obs, masks: masks * weights)]
    return behaviors, observations, support, inside, outside


def _box_log_prob_case() -> tuple[list[Any], th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    support = th.tensor([[[-0.5, 0.0], [0.5, 2.0]]])
    observations = th.tensor([[0.0, 1.0]])
    outside = th.tensor([[[0.6, 1.0], [0.0, -0.1], [-0.51, 2.5], [0.0, 2.0 + 1e-6]]])
    inside = th.tensor([[[0.0, 1.0]]])  # inside, away from the bounds where the Beta density is infinite
    behaviors = [
        TruncatedGaussianBehavior(lambda obs: obs, noise_std=0.3),
        CallableBoxBehavior(uniform_in_box),
        CallableBoxBehavior(beta_in_box),
        UniformBoxBehavior(),
    ]
    return behaviors, observations, support, inside, outside


@pytest.mark.parametrize("kind", KINDS)
def test_log_probs_are_minus_inf_outside_the_support(kind: str) -> None:
    case = _mask_log_prob_case if kind == "mask" else _box_log_prob_case
    behaviors, observations, support, inside, outside = case()
    for behavior in behaviors:
        assert th.isneginf(behavior.log_prob(observations, support, outside)).all(), behavior
        assert th.isfinite(behavior.log_prob(observations, support, inside)).all(), behavior


def test_callable_box_behavior_with_independent_axes_gets_the_joint_density() -> None:
    # A callable with independent axes (batch_shape (batch, action_dim)) gets the joint density: the sum.
    support = th.tensor([[[-0.5, 0.0], [0.5, 2.0]]])
    uniform = CallableBoxBehavior(uniform_in_box).log_prob(th.tensor([[0.0, 1.0]]), support, th.tensor([[[0.0, 1.0]]]))
    np.testing.assert_allclose(uniform.numpy(), [[-math.log(2.0)]], rtol=1e-6)


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


# ------------------------------------------------------------------------------ the truncated Gaussian behavior


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
