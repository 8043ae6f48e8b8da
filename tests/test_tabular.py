import itertools

import gymnasium as gym
import numpy as np
import pytest

from sb3_safeq.common.tabular import (
    dense_model,
    hard_value_iteration,
    masked_uniform_behavior,
    maximal_invariant_safe_set,
    policy_evaluation,
    reachable_states,
    soft_bellman_operator,
    soft_greedy_policy,
    soft_state_values,
    soft_value_iteration,
)
from sb3_safeq.envs import register_envs

register_envs()


def random_model(seed: int, n_states: int = 5, n_actions: int = 3, terminal_prob: float = 0.2) -> dict:
    """Random toy-text model with 1-3 outcomes per (state, action), some of them terminating."""
    rng = np.random.default_rng(seed)
    model = {}
    for state in range(n_states):
        model[state] = {}
        for action in range(n_actions):
            n_outcomes = int(rng.integers(1, 4))
            probs = rng.dirichlet(np.ones(n_outcomes))
            model[state][action] = [
                (float(prob), int(rng.integers(n_states)), float(rng.normal()), bool(rng.random() < terminal_prob))
                for prob in probs
            ]
    return model


def random_behavior(seed: int, n_states: int = 5, n_actions: int = 3) -> np.ndarray:
    """Random behavior with a random support of at least one action per state."""
    rng = np.random.default_rng(seed)
    support = rng.random((n_states, n_actions)) < 0.6
    support[np.arange(n_states), rng.integers(n_actions, size=n_states)] = True
    weights = rng.random((n_states, n_actions)) * support
    return weights / weights.sum(axis=1, keepdims=True)


def all_deterministic_policies(mask_table: np.ndarray):
    """Every deterministic policy that only takes allowed actions, as probability tables."""
    n_states, n_actions = mask_table.shape
    for choice in itertools.product(*(np.flatnonzero(row) for row in mask_table)):
        policy = np.zeros((n_states, n_actions))
        policy[np.arange(n_states), choice] = 1.0
        yield policy


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0, 10.0])
def test_soft_operator_is_gamma_contraction(seed: int, alpha: float) -> None:
    gamma = 0.9
    model = dense_model(random_model(seed), 5, 3)
    behavior = random_behavior(seed)
    rng = np.random.default_rng(seed + 100)
    for _ in range(20):
        first, second = rng.normal(scale=10.0, size=(2, 5, 3))
        distance = np.abs(
            soft_bellman_operator(first, model, behavior, gamma, alpha)
            - soft_bellman_operator(second, model, behavior, gamma, alpha)
        ).max()
        assert distance <= gamma * np.abs(first - second).max() + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_fixed_point_solves_soft_bellman_equation(seed: int) -> None:
    model = random_model(seed)
    behavior = random_behavior(seed)
    q_values, state_values = soft_value_iteration(model, behavior, gamma=0.9, alpha=0.5, tol=1e-11)
    backup = soft_bellman_operator(q_values, dense_model(model, 5, 3), behavior, 0.9, 0.5)
    np.testing.assert_allclose(backup, q_values, atol=1e-10)
    np.testing.assert_allclose(state_values, soft_state_values(q_values, behavior, 0.5))


@pytest.mark.parametrize("seed", range(5))
def test_hard_value_iteration_is_best_masked_deterministic_policy(seed: int) -> None:
    model = random_model(seed)
    mask = random_behavior(seed) > 0.0
    _, hard_values = hard_value_iteration(model, mask, gamma=0.9, tol=1e-11)
    best = np.max([policy_evaluation(model, policy, 0.9)[1] for policy in all_deterministic_policies(mask)], axis=0)
    np.testing.assert_allclose(hard_values, best, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [1e-1, 1e-2, 1e-4])
def test_small_alpha_tends_to_hard_masked_value_iteration(seed: int, alpha: float) -> None:
    gamma = 0.9
    model = random_model(seed)
    behavior = random_behavior(seed)
    soft_q, _ = soft_value_iteration(model, behavior, gamma, alpha, tol=1e-11)
    hard_q, _ = hard_value_iteration(model, behavior > 0.0, gamma, tol=1e-11)
    # alpha * log(beta_min) <= V_soft - V_hard <= 0 in every state, amplified by gamma / (1 - gamma).
    gap = gamma * alpha * np.log(1.0 / behavior[behavior > 0.0].min()) / (1.0 - gamma)
    assert np.all(soft_q <= hard_q + 1e-9)
    assert np.all(soft_q >= hard_q - gap - 1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [1e2, 1e4])
def test_large_alpha_tends_to_evaluation_of_behavior(seed: int, alpha: float) -> None:
    gamma = 0.9
    model = random_model(seed)
    behavior = random_behavior(seed)
    soft_q, _ = soft_value_iteration(model, behavior, gamma, alpha, tol=1e-11)
    sarsa_q, _ = policy_evaluation(model, behavior, gamma)
    # Jensen: V_soft >= E_beta Q; Hoeffding: V_soft - E_beta Q <= range(Q)^2 / (8 alpha).
    support = behavior > 0.0
    spread = (np.where(support, soft_q, -np.inf).max(1) - np.where(support, soft_q, np.inf).min(1)).max()
    assert np.all(soft_q >= sarsa_q - 1e-9)
    assert np.all(soft_q <= sarsa_q + gamma * spread**2 / (8.0 * alpha * (1.0 - gamma)) + 1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 3.0])
def test_soft_greedy_policy_keeps_support_and_attains_soft_value(alpha: float) -> None:
    model = random_model(7)
    behavior = random_behavior(7)
    q_values, state_values = soft_value_iteration(model, behavior, 0.9, alpha)
    policy = soft_greedy_policy(q_values, behavior, alpha)
    np.testing.assert_allclose(policy.sum(axis=1), 1.0)
    assert np.all(policy[behavior == 0.0] == 0.0)
    # Variational form of the soft value: V = E_pi[Q] - alpha * KL(pi || beta).
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(policy > 0.0, policy * np.log(policy / behavior), 0.0)
    np.testing.assert_allclose((policy * q_values).sum(1) - alpha * kl_terms.sum(1), state_values, atol=1e-9)


def test_invariant_safe_set_on_hand_made_mdp() -> None:
    # 0 start, 1 corridor, 2 trap (every action risks the hazard), 3 goal, 4 hazard,
    # 5 -> 6 -> trap: 6 loses its actions in the first pass, 5's action 0 only in the second.
    goal, hazard = 3, 4
    model = {
        0: {0: [(1.0, 1, 0.0, False), (0.0, hazard, 0.0, True)], 1: [(0.5, 0, 0.0, False), (0.5, hazard, 0.0, True)]},
        1: {0: [(1.0, 2, 0.0, False)], 1: [(1.0, goal, 1.0, True)]},
        2: {0: [(0.9, 2, 0.0, False), (0.1, hazard, 0.0, True)], 1: [(1.0, hazard, 0.0, True)]},
        3: {0: [(1.0, goal, 0.0, True)], 1: [(1.0, goal, 0.0, True)]},
        4: {0: [(1.0, hazard, 0.0, True)], 1: [(1.0, hazard, 0.0, True)]},
        5: {0: [(1.0, 6, 0.0, False)], 1: [(1.0, 0, 0.0, False)]},
        6: {0: [(1.0, 2, 0.0, False)], 1: [(0.5, 2, 0.0, False), (0.5, 6, 0.0, False)]},
    }

    def enters_hazard(state: int, action: int, next_state: int, reward: float, terminated: bool) -> bool:
        return next_state == hazard

    table = maximal_invariant_safe_set(model, 7, 2, enters_hazard)
    expected = np.array([[1, 0], [0, 1], [0, 0], [1, 1], [0, 0], [0, 1], [0, 0]], dtype=bool)
    np.testing.assert_array_equal(table, expected)
    # Following the table from 0 or 5 never meets a state without a safe action.
    reached = reachable_states(model, 7, 2, [0, 5], table)
    np.testing.assert_array_equal(np.flatnonzero(reached), [0, 1, 5])
    assert table[reached].any(axis=1).all()
    # The trap keeps -inf value; the start still reaches the goal.
    q_values, state_values = hard_value_iteration(model, table, gamma=0.9)
    assert np.isneginf(state_values[[2, 4, 6]]).all()
    assert state_values[0] == pytest.approx(0.9)
    assert np.isneginf(q_values[5, 0]) and np.isneginf(q_values[1, 0])


def test_masked_uniform_behavior() -> None:
    mask = np.array([[True, False, True], [False, False, False], [True, True, True]])
    behavior = masked_uniform_behavior(mask)
    np.testing.assert_allclose(behavior, [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    with pytest.raises(ValueError, match="boolean"):
        masked_uniform_behavior(mask.astype(float))


def test_states_without_support_get_minus_infinity() -> None:
    # State 1 has no support; state 0's action 1 continues into it, action 0 does not.
    model = {
        0: {0: [(1.0, 0, 1.0, True)], 1: [(1.0, 1, 5.0, False)]},
        1: {0: [(1.0, 1, 0.0, False)], 1: [(1.0, 0, 0.0, False)]},
    }
    behavior = np.array([[1.0, 0.0], [0.0, 0.0]])
    for alpha in (0.0, 1.0):
        q_values, state_values = soft_value_iteration(model, behavior, 0.9, alpha)
        assert np.isneginf(state_values[1])
        assert q_values[0, 0] == pytest.approx(1.0)
        assert np.isneginf(q_values[0, 1])
        assert np.isfinite(state_values[0])
    _, evaluated = policy_evaluation(model, behavior, 0.9)
    assert evaluated[0] == pytest.approx(1.0) and np.isneginf(evaluated[1])


def test_input_validation() -> None:
    model = random_model(0)
    behavior = random_behavior(0)
    with pytest.raises(ValueError, match="gamma"):
        soft_value_iteration(model, behavior, gamma=1.0, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        soft_value_iteration(model, behavior, gamma=0.9, alpha=-0.1)
    with pytest.raises(ValueError, match="sums to"):
        soft_value_iteration(model, behavior * 0.5, gamma=0.9, alpha=1.0)
    with pytest.raises(ValueError, match="outside the support"):
        soft_value_iteration(model, np.full((5, 3), 1 / 3), gamma=0.9, alpha=1.0, support=behavior > 0.0)
    with pytest.raises(ValueError, match="tol"):
        soft_value_iteration(model, behavior, gamma=0.9, alpha=1.0, tol=0.0)
    with pytest.raises(ValueError, match="shape"):
        soft_value_iteration(dense_model(model, 5, 3), behavior[:4], gamma=0.9, alpha=1.0)
    with pytest.raises(ValueError, match="missing"):
        dense_model(model, 6, 3)
    with pytest.raises(ValueError, match="outside"):
        dense_model(model, 2, 3)
    broken = {0: {0: [(0.5, 0, 0.0, False)]}}
    with pytest.raises(ValueError, match="sum to"):
        dense_model(broken, 1, 1)
    with pytest.raises(ValueError, match="n_actions"):
        maximal_invariant_safe_set(model, 5, 0, lambda *transition: False)
    with pytest.raises(RuntimeError, match="max_iterations"):
        soft_value_iteration(model, behavior, gamma=0.9, alpha=1.0, max_iterations=3)


def test_cliff_walking_hard_value_is_thirteen_step_path() -> None:
    env = gym.make("SafeCliffWalking-v0").unwrapped
    table = env.safe_action_table
    _, state_values = hard_value_iteration(env.P, table, gamma=0.99)
    assert state_values[env.start_state_index] == pytest.approx(-sum(0.99**step for step in range(13)), abs=1e-8)
    q_values, soft_values = soft_value_iteration(env.P, masked_uniform_behavior(table), gamma=0.99, alpha=1.0)
    assert np.isfinite(q_values[table]).all()
    assert np.isfinite(soft_values[table.any(axis=1)]).all()


def test_slippery_cliff_soft_values_finite_on_safe_actions() -> None:
    env = gym.make("SafeCliffWalkingSlippery-v0").unwrapped
    table = env.safe_action_table
    q_values, _ = soft_value_iteration(env.P, masked_uniform_behavior(table), gamma=0.99, alpha=0.5)
    assert np.isfinite(q_values[table]).all()


def test_frozen_lake_goal_reachable_under_mask() -> None:
    env = gym.make("SafeFrozenLake8x8-v0").unwrapped
    table = env.safe_action_table
    start = int(np.flatnonzero(env.initial_state_distrib)[0])
    # The only reward is 1 at the goal, so the value is a discounted success probability: a lower bound of it.
    _, hard_values = hard_value_iteration(env.P, table, gamma=0.999, tol=1e-6)
    _, soft_values = soft_value_iteration(env.P, masked_uniform_behavior(table), gamma=0.999, alpha=0.01, tol=1e-6)
    _, unmasked_values = hard_value_iteration(env.P, np.ones_like(table), gamma=0.999, tol=1e-6)
    assert 0.0 < soft_values[start] <= hard_values[start] <= unmasked_values[start] + 1e-6
    assert hard_values[start] > 0.85
