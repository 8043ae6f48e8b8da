import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safeq.common.backup import induced_log_probs, soft_bellman_target, soft_value


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
