"""
The soft value ``V(s) = alpha log E_beta exp(Q(s, .) / alpha)`` and the soft Bellman target: the exact masked forms of
``common/backup.py`` (brute force, the limits alpha -> 0 and alpha -> infinity, numerical range, contraction, the
induced policy's support), the sampled Box target converging to its closed form with its limits and twin critics,
and terminal transitions without any safe action targeting the reward, for both kinds.
"""

import math
from typing import Any

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safeq import SafeSupportQ
from sb3_safeq.common.backup import (
    induced_log_probs,
    log_expectation_around_mean,
    soft_bellman_target,
    soft_value,
)
from sb3_safeq.common.buffers import SafeReplayBufferSamples
from tests.helpers import KINDS, TINY, LinearQ, random_env

# ------------------------------------------------------------------------------------ exact forms (masks)


def log_uniform(masks: th.Tensor) -> th.Tensor:
    return th.where(masks, -th.log(masks.sum(-1, keepdim=True).float()), th.tensor(-th.inf))


def brute_force_value(q: np.ndarray, beta: np.ndarray, alpha: float) -> float:
    # V = alpha * log sum_a beta(a) exp(q(a) / alpha), straight from the definition, in float64.
    return alpha * np.log(np.sum(beta * np.exp(q / alpha)))


def test_target_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(32, 6))
    masks = rng.random((32, 6)) < 0.6
    masks[:, 0] = True
    beta = rng.random((32, 6)) * masks
    beta /= beta.sum(-1, keepdims=True)
    rewards = rng.normal(size=(32, 1))
    dones = (rng.random((32, 1)) < 0.3).astype(np.float64)
    alpha, gamma = 0.7, 0.95
    with np.errstate(divide="ignore"):
        log_beta = th.tensor(np.log(beta))
    targets = soft_bellman_target(th.tensor(rewards), th.tensor(dones), th.tensor(q), log_beta, alpha, gamma)
    expected = [rewards[i, 0] + gamma * (1 - dones[i, 0]) * brute_force_value(q[i], beta[i], alpha) for i in range(32)]
    np.testing.assert_allclose(targets[:, 0].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_small_alpha_gives_masked_max() -> None:
    q = th.tensor([[1.0, 5.0, 3.0, -2.0], [0.5, -1.0, 2.0, 9.0]])
    masks = th.tensor([[True, False, True, True], [True, True, True, False]])
    values = soft_value(q, log_uniform(masks), alpha=1e-4)
    # The unsafe actions (5.0 and 9.0) must not count: the result is the max over the mask.
    np.testing.assert_allclose(values.numpy(), [3.0, 2.0], atol=1e-3)


def test_large_alpha_gives_behavior_expectation() -> None:
    q = th.tensor([[1.0, 5.0, 3.0, -2.0], [0.5, -1.0, 2.0, 9.0]])
    masks = th.tensor([[True, False, True, True], [True, True, True, False]])
    values = soft_value(q, log_uniform(masks), alpha=1e6)
    np.testing.assert_allclose(values.numpy(), [(1.0 + 3.0 - 2.0) / 3, (0.5 - 1.0 + 2.0) / 3], atol=1e-4)


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_extreme_ratio_of_q_to_alpha_stays_finite(dtype: th.dtype) -> None:
    # |Q| / alpha ~ 1e4: a naive exp(Q / alpha) overflows.
    q = th.tensor([[-1000.0, -1001.0, 1000.0], [1000.0, 999.5, -5.0]], dtype=dtype)
    masks = th.tensor([[True, True, False], [True, True, True]])
    alpha = 0.1
    values = soft_value(q, log_uniform(masks).to(dtype), alpha)
    assert th.isfinite(values).all()
    np.testing.assert_allclose(values.numpy(), [-1000.0 - 0.1 * np.log(2), 1000.0 - 0.1 * np.log(3)], atol=1e-3)
    log_probs = induced_log_probs(q, log_uniform(masks).to(dtype), alpha)
    assert th.isfinite(log_probs[masks]).all()


@pytest.mark.parametrize("alpha", [1e-4, 0.05, 1.0, 1e3, 1e6])
def test_selecting_the_form_on_the_device_or_on_the_host_gives_the_same_bits(alpha: float) -> None:
    # soft_value reads the form's condition on a CPU and selects on the device elsewhere: the two must agree exactly,
    # in both regimes (small alpha: the log-sum-exp; large alpha: the expm1 form), with masked actions and an empty row.
    generator = th.Generator().manual_seed(0)
    q = th.randn(256, 7, generator=generator) * 30
    masks = th.rand(256, 7, generator=generator) < 0.5
    masks[:, 0] = True
    masks[3] = False
    log_behavior = log_uniform(masks)
    behavior_probs = log_behavior.exp()
    outside = behavior_probs == 0
    mean = (behavior_probs * q.masked_fill(outside, 0.0)).sum(dim=-1, keepdim=True)
    scaled = (q - mean).masked_fill(outside, 0.0) / alpha
    on_host = log_expectation_around_mean(scaled, behavior_probs, log_behavior, select_on_device=False)
    on_device = log_expectation_around_mean(scaled, behavior_probs, log_behavior, select_on_device=True)
    assert th.equal(on_host, on_device)
    assert th.isfinite(on_host[masks.any(-1)]).all()


def test_terminal_next_state_without_safe_action_is_not_nan() -> None:
    q = th.zeros(2, 3)
    masks = th.tensor([[False, False, False], [True, False, False]])
    targets = soft_bellman_target(
        th.tensor([[1.0], [2.0]]), th.tensor([[1.0], [0.0]]), q, log_uniform(masks), alpha=0.5, gamma=0.9
    )
    np.testing.assert_allclose(targets.numpy(), [[1.0], [2.0]])


def test_soft_backup_is_a_contraction() -> None:
    rng = np.random.default_rng(1)
    masks = th.tensor(rng.random((64, 5)) < 0.5)
    masks[:, 2] = True
    q1, q2 = th.tensor(rng.normal(size=(64, 5)) * 10), th.tensor(rng.normal(size=(64, 5)) * 10)
    for alpha in (0.01, 1.0, 100.0):
        gap = soft_value(q1, log_uniform(masks).double(), alpha) - soft_value(q2, log_uniform(masks).double(), alpha)
        # |V1 - V2| <= max over the support of |Q1 - Q2|.
        bound = th.where(masks, (q1 - q2).abs(), th.zeros_like(q1)).max(dim=-1).values
        assert (gap.abs() <= bound + 1e-9).all()


@pytest.mark.parametrize("extraction", ["forward_kl", "reverse_kl"])
def test_the_discrete_head_loss_and_its_kl_match_their_definitions(extraction: str) -> None:
    # Forward KL: the loss is the cross-entropy of the head's full softmax to pi_Q = softmax(log beta + Q / alpha)
    # (masked) and the logged statistic KL(pi_Q || head); reverse KL: both are KL(head masked || pi_Q). Recomputed
    # here from the critic's and the head's outputs in float64.
    model = SafeSupportQ("MlpPolicy", random_env("mask"), extraction=extraction, seed=0, learning_starts=20, **TINY)
    model.learn(60)
    data = model.replay_buffer.sample(32)
    alpha = model.current_alpha()
    _, _, actor_terms = model.support_kind.losses(model, data, alpha, update_actor=True)
    assert actor_terms is not None
    with th.no_grad():
        q = model.critic(data.observations).double()
        logits = model.actor(data.observations).double()
    masks = data.supports
    target_log = th.log_softmax((q / alpha).masked_fill(~masks, -th.inf), dim=-1)  # uniform beta: a constant shift
    target = target_log.exp()
    if extraction == "forward_kl":
        head_log = th.log_softmax(logits, dim=-1)
        expected_loss = -(target * head_log).sum(-1).mean()
        expected_kl = (target * (target_log - head_log)).masked_fill(~masks, 0.0).sum(-1).mean()
    else:
        head_log = th.log_softmax(logits.masked_fill(~masks, -th.inf), dim=-1)
        expected_loss = (head_log.exp() * (head_log - target_log)).masked_fill(~masks, 0.0).sum(-1).mean()
        expected_kl = expected_loss
    assert float(actor_terms[0]) == pytest.approx(float(expected_loss), abs=1e-5)
    assert float(actor_terms[1]) == pytest.approx(float(expected_kl), abs=1e-5)
    assert float(actor_terms[1]) >= -1e-6


@settings(max_examples=60, deadline=None)
@given(
    masks=arrays(np.bool_, st.tuples(st.integers(1, 8), st.integers(1, 7))),
    q_scale=st.floats(1e-3, 1e4),
    alpha=st.floats(1e-3, 1e3),
)
def test_induced_policy_has_no_mass_outside_the_mask(masks: np.ndarray, q_scale: float, alpha: float) -> None:
    masks[np.arange(masks.shape[0]), 0] = True  # at least one safe action per state
    q = th.tensor(np.random.default_rng(0).normal(size=masks.shape) * q_scale, dtype=th.float32)
    probs = induced_log_probs(q, log_uniform(th.tensor(masks)), alpha).exp().numpy()
    assert np.all(probs[~masks] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------- the sampled target (boxes)


def _soft_value(slope: float, alpha: float, low: float, high: float) -> float:
    """``alpha * log E_{a ~ U[low, high]} exp(slope * a / alpha)`` in closed form (stable for small alpha)."""
    log_width = math.log(slope * (high - low) / alpha)
    return alpha * (slope * high / alpha + math.log1p(-math.exp(slope * (low - high) / alpha)) - log_width)


def _soft_target_model(kind: str = "box") -> SafeSupportQ:
    # Box action space [-3, 5]: the uniform behavior samples in env units, the target works in agent units.
    box_like = kind in ("box", "polytope")
    env = random_env(kind, action_low=(-3.0,), action_high=(5.0,)) if box_like else random_env("mask")
    return SafeSupportQ("MlpPolicy", env, gamma=1.0, learning_starts=10**6, seed=0, **TINY)


def _capture_targets(model: SafeSupportQ) -> list[th.Tensor]:
    """:return: the list the critic's regression targets will be appended to, one tensor per twin critic"""
    captured: list[th.Tensor] = []

    def capture(current_q: th.Tensor, targets: th.Tensor) -> th.Tensor:
        captured.append(targets)
        return ((current_q - targets) ** 2).mean()

    model.critic_regression_loss = capture  # type: ignore[method-assign]
    return captured


def _soft_targets(model: SafeSupportQ, alpha: float, n_samples: int, n_repeats: int, box: tuple[float, float]) -> Any:
    """The critic targets of ``n_repeats`` copies of one transition (reward 0, gamma 1), through ``losses``."""
    captured = _capture_targets(model)
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


# ------------------------------------------------------------------------------------------ both kinds


@pytest.mark.parametrize("kind", KINDS)
def test_terminal_transitions_without_safe_action_target_the_reward(kind: str) -> None:
    # A terminal state may have no safe action (all-False mask, box with low > high): its value is never used.
    model = _soft_target_model(kind)
    if kind == "mask":
        observations, supports = th.zeros(1, 6), th.ones(1, 5, dtype=th.bool)
        next_supports = th.zeros(1, 5, dtype=th.bool)
    elif kind == "polytope":  # agent units: three padding rows and the centre row; next: a <= -2, radius < 0
        model.critic_target.q_networks = [LinearQ(1.0), LinearQ(1.0)]
        observations = th.zeros(1, 7)
        supports = th.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 4.0]]])
        next_supports = th.tensor([[[1.0, -2.0], [0.0, 1.0], [0.0, 1.0], [0.0, -1.0]]])
    else:
        model.critic_target.q_networks = [LinearQ(1.0), LinearQ(1.0)]
        observations, supports = th.zeros(1, 3), th.tensor([[[-1.0], [1.0]]])
        next_supports = th.tensor([[[0.5], [-0.5]]])
    captured = _capture_targets(model)
    data = SafeReplayBufferSamples(
        observations=observations,
        actions=th.zeros(1, 1),
        next_observations=observations.clone(),
        dones=th.ones(1, 1),
        rewards=th.full((1, 1), 3.0),
        supports=supports,
        next_supports=next_supports,
    )
    model.support_kind.losses(model, data, 0.5, False)
    assert captured[0].item() == 3.0
