"""Soft calibration, the induced step's KL and the tabular errors, checked against exact soft value iteration."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_safeq import InducedActions, SafeSupportQ
from sb3_safeq.bench.calibration import evaluate_soft_calibration, tabular_q_error
from sb3_safeq.bench.induced import induced_step_fn
from sb3_safeq.common.tabular import (
    discounted_occupancy,
    masked_uniform_behavior,
    soft_greedy_policy,
    soft_value_iteration,
)
from sb3_safeq.common.wrappers import SafetyWrapper

ENV = "SafeCliffWalking-v0"


def _exact_model(alpha: float) -> tuple[SafeSupportQ, np.ndarray]:
    """A SafeSupportQ whose critic is one linear layer on the one-hot state holding exactly ``Q*_alpha``."""
    env = SafetyWrapper(gym.make(ENV))
    model = SafeSupportQ("MlpPolicy", env, policy_kwargs={"net_arch": []}, alpha=alpha, seed=0)
    unwrapped = env.unwrapped
    q_star, _ = soft_value_iteration(
        unwrapped.P, masked_uniform_behavior(unwrapped.safe_action_table), model.gamma, alpha
    )
    (layer,) = [module for module in model.critic.modules() if isinstance(module, th.nn.Linear)]
    with th.no_grad():
        layer.weight.copy_(th.as_tensor(np.where(np.isfinite(q_star), q_star, -1e3).T, dtype=th.float32))
        layer.bias.zero_()
    return model, q_star


def test_soft_calibration_of_the_exact_soft_q_is_unbiased() -> None:
    model, _ = _exact_model(alpha=1.0)
    long_env = SafetyWrapper(gym.make(ENV, max_episode_steps=1000))
    soft = evaluate_soft_calibration(model, long_env, n_episodes=60, tail_tolerance=0.05, return_pairs=True)
    assert soft["n_states"] == len(soft["q_hat"]) > 60
    # Q*_alpha is the expected soft return of pi_Q: only sampling noise is left (measured: about -0.01).
    assert abs(soft["norm_bias"]) < 0.05
    assert soft["rank_corr"] > 0.9


def test_soft_calibration_needs_the_kl_penalties(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same exact critic scored against returns without the KL penalties (plain returns of pi_Q) looks low.
    from sb3_safeq.bench import induced

    model, _ = _exact_model(alpha=1.0)
    exact_step = induced.induced_step_fn(model)
    assert exact_step is not None

    def without_kl(observation: np.ndarray, **kwargs: object) -> InducedActions:
        step = exact_step(observation, **kwargs)
        return dataclasses.replace(step, kl=np.zeros_like(step.kl))

    monkeypatch.setattr(induced, "induced_step_fn", lambda _: without_kl)
    long_env = SafetyWrapper(gym.make(ENV, max_episode_steps=1000))
    plain = evaluate_soft_calibration(model, long_env, n_episodes=30, tail_tolerance=0.05)
    assert plain["norm_bias"] < -0.1


def test_soft_calibration_is_nan_for_models_without_an_induced_policy() -> None:
    from sb3_safeq.bench.algorithms import BehaviorAgent

    env = SafetyWrapper(gym.make(ENV))
    result = evaluate_soft_calibration(BehaviorAgent(env.action_space), env, n_episodes=1, return_pairs=True)
    assert math.isnan(result["bias"]) and result["n_states"] == 0 and result["q_hat"] == []


def test_induced_step_kl_is_exact_for_discrete_actions() -> None:
    model, q_star = _exact_model(alpha=0.5)
    step = induced_step_fn(model)
    assert step is not None
    table = model.get_env().envs[0].unwrapped.safe_action_table
    states = np.array([0, 12, 24, 36])
    induced = step(states, deterministic=False, action_masks=table[states])
    behavior = masked_uniform_behavior(table)[states]
    policy = soft_greedy_policy(q_star, masked_uniform_behavior(table), 0.5)[states]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(policy > 0, policy * np.log(policy / behavior), 0.0).sum(axis=1)
    np.testing.assert_allclose(induced.kl, expected, atol=1e-4)
    assert np.all(table[states, induced.actions])
    np.testing.assert_allclose(induced.q_values, q_star[states, induced.actions], atol=1e-4)


def test_induced_step_kl_of_box_actions_is_between_zero_and_log_n() -> None:
    env = SafetyWrapper(gym.make("SafePointMass-v0"))
    model = SafeSupportQ("MlpPolicy", env, learning_starts=50, n_behavior_samples=8, alpha=0.01, seed=0)
    model.learn(100)
    step = induced_step_fn(model)
    assert step is not None
    observations = np.repeat(env.reset(seed=0)[0][None], 16, axis=0)
    low, high = np.full((16, 2), -0.5, np.float32), np.full((16, 2), 0.5, np.float32)
    induced = step(observations, deterministic=False, safe_bounds=(low, high))
    assert np.all(induced.kl >= -1e-6) and np.all(induced.kl <= math.log(8) + 1e-6)
    assert induced.q_values.shape == (16,) and np.all(np.isfinite(induced.q_values))
    assert np.all(induced.actions >= low) and np.all(induced.actions <= high)
    result = evaluate_soft_calibration(model, SafetyWrapper(gym.make("SafePointMass-v0")), n_episodes=1)
    assert result["n_states"] > 0 and np.isfinite(result["bias"])


def test_tabular_errors_max_and_occupancy_weighted() -> None:
    model, _ = _exact_model(alpha=0.5)
    env = model.get_env().envs[0]
    assert tabular_q_error(model, env) < 1e-4
    assert tabular_q_error(model, env, reduction="occupancy") < 1e-4
    # Spoil a safe pair the soft-optimal policy never uses (top-left corner, far from the path): the max sees it,
    # the occupancy-weighted error does not.
    (layer,) = [module for module in model.critic.modules() if isinstance(module, th.nn.Linear)]
    with th.no_grad():
        layer.weight[0, 0] += 50.0  # action 0 (up) in state 0, the top-left corner
    assert tabular_q_error(model, env) == pytest.approx(50.0, abs=1e-3)
    assert tabular_q_error(model, env, reduction="occupancy") < 1e-3
    with pytest.raises(ValueError, match="reduction"):
        tabular_q_error(model, env, reduction="mean")


def test_discounted_occupancy_of_a_two_state_chain() -> None:
    # State 0 -> state 1 -> state 1 forever: d = (1 - gamma) * [1, gamma / (1 - gamma)].
    model = {0: {0: [(1.0, 1, 0.0, False)]}, 1: {0: [(1.0, 1, 0.0, False)]}}
    occupancy = discounted_occupancy(model, np.ones((2, 1)), np.array([1.0, 0.0]), gamma=0.9)
    np.testing.assert_allclose(occupancy, [0.1, 0.9])
    # Terminating from state 0: the mass leaves.
    model[0][0] = [(1.0, 1, 0.0, True)]
    np.testing.assert_allclose(discounted_occupancy(model, np.ones((2, 1)), np.array([1.0, 0.0]), 0.9), [0.1, 0.0])
    with pytest.raises(ValueError, match="start_probs"):
        discounted_occupancy(model, np.ones((2, 1)), np.array([0.5, 0.0]), 0.9)
