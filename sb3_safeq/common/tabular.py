"""
Exact tools for tabular models in gymnasium's toy-text format.

A toy-text model is ``P[s][a] = [(prob, next_state, reward, terminated), ...]`` (what ``env.unwrapped.P`` holds
for FrozenLake, CliffWalking and Taxi). This module derives safe supports from such a model (the maximal
invariant safe set) and computes the exact fixed points that Safe-Support Q-Learning approximates:

- soft (KL-regularized) value iteration for a behavior policy beta and a temperature alpha,
  ``V(s) = alpha * log sum_a beta(a|s) exp(Q(s, a) / alpha)``, with ``alpha = 0`` meaning the hard maximum over
  beta's support (masked value iteration);
- exact policy evaluation by a linear solve, the ``alpha -> inf`` limit of the soft operator.

Conventions shared by every function here:

- A state whose behavior row is all zero has no safe action: its value is ``-inf``.
- ``Q(s, a)`` is computed for *every* action, inside or outside the support, by the Bellman equation; it is
  ``-inf`` exactly when the action can continue (without termination) into a state whose value is ``-inf``.
  ``0 * -inf`` never enters a sum: outcomes with zero probability are ignored.
- A terminated outcome never bootstraps, so the value of terminal states (goal, hole) is irrelevant to ``Q``.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ToyTextModel = Mapping[int, Mapping[int, Sequence[tuple[float, int, float, bool]]]]
"""``P[s][a] = [(prob, next_state, reward, terminated), ...]``, gymnasium's toy-text transition model."""

UnsafeTransitionFn = Callable[[int, int, int, float, bool], bool]
"""``is_unsafe_transition(state, action, next_state, reward, terminated) -> bool``."""

# Outcome probabilities of gymnasium models are sums of floats such as 1/3: allow rounding, nothing more.
_PROB_ATOL = 1e-8


@dataclass(frozen=True)
class TabularModel:
    """
    Dense arrays equivalent to a toy-text model, for vectorised Bellman backups.

    :param continuation: Shape (n_states, n_actions, n_states): probability of moving to ``next_state``
        *without* terminating. Rows sum to one minus the termination probability.
    :param expected_reward: Shape (n_states, n_actions): expected immediate reward.
    """

    continuation: np.ndarray
    expected_reward: np.ndarray

    @property
    def n_states(self) -> int:
        """Number of states."""
        return self.expected_reward.shape[0]

    @property
    def n_actions(self) -> int:
        """Number of actions."""
        return self.expected_reward.shape[1]


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _outcomes(P: ToyTextModel, state: int, action: int, n_states: int) -> list[tuple[float, int, float, bool]]:
    """
    Read and validate the outcome list ``P[state][action]``.

    :param P: Toy-text transition model.
    :param state: State index.
    :param action: Action index.
    :param n_states: Number of states, to range-check ``next_state``.
    :return: The outcomes as ``(prob, next_state, reward, terminated)`` with python types.
    """
    try:
        raw = P[state][action]
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(
            f"P[{state}][{action}] is missing: P must map every state 0..n_states-1 to every action "
            "0..n_actions-1 (check n_states and n_actions against the model)."
        ) from error
    outcomes = []
    for outcome in raw:
        if len(outcome) != 4:
            raise ValueError(
                f"P[{state}][{action}] holds {outcome!r}; every outcome must be (prob, next_state, reward, terminated)."
            )
        prob, next_state, reward, terminated = outcome
        prob = float(prob)
        if not (0.0 <= prob <= 1.0 + _PROB_ATOL):
            raise ValueError(f"P[{state}][{action}] has probability {prob}; probabilities must lie in [0, 1].")
        if not 0 <= int(next_state) < n_states:
            raise ValueError(
                f"P[{state}][{action}] leads to state {next_state}, outside 0..{n_states - 1}; "
                "pass the model's true number of states."
            )
        if not np.isfinite(float(reward)):
            raise ValueError(f"P[{state}][{action}] has a non-finite reward {reward}; rewards must be finite.")
        outcomes.append((prob, int(next_state), float(reward), bool(terminated)))
    total = sum(outcome[0] for outcome in outcomes)
    if abs(total - 1.0) > _PROB_ATOL:
        raise ValueError(f"The outcome probabilities of P[{state}][{action}] sum to {total}, not 1.")
    return outcomes


def dense_model(P: ToyTextModel, n_states: int, n_actions: int) -> TabularModel:
    """
    Convert (and validate) a toy-text model into dense arrays.

    :param P: Toy-text transition model ``P[s][a] = [(prob, next_state, reward, terminated), ...]``.
    :param n_states: Number of states.
    :param n_actions: Number of actions.
    :return: The equivalent :class:`TabularModel`.
    """
    _check_size("n_states", n_states)
    _check_size("n_actions", n_actions)
    continuation = np.zeros((n_states, n_actions, n_states))
    expected_reward = np.zeros((n_states, n_actions))
    for state in range(n_states):
        for action in range(n_actions):
            for prob, next_state, reward, terminated in _outcomes(P, state, action, n_states):
                expected_reward[state, action] += prob * reward
                if not terminated:
                    continuation[state, action, next_state] += prob
    return TabularModel(continuation=continuation, expected_reward=expected_reward)


def _as_model(P: ToyTextModel | TabularModel, n_states: int, n_actions: int) -> TabularModel:
    if isinstance(P, TabularModel):
        if (P.n_states, P.n_actions) != (n_states, n_actions):
            raise ValueError(
                f"The model has {P.n_states} states and {P.n_actions} actions but the policy table has shape "
                f"({n_states}, {n_actions}); they must match."
            )
        return P
    return dense_model(P, n_states, n_actions)


def maximal_invariant_safe_set(
    P: ToyTextModel,
    n_states: int,
    n_actions: int,
    is_unsafe_transition: UnsafeTransitionFn,
) -> np.ndarray:
    """
    Largest safe-action table that can be followed forever without an unsafe transition.

    An action is safe iff every outcome with positive probability is a safe transition that either terminates
    (reaching a goal is fine) or lands in a state that keeps at least one safe action. Starting from "no unsafe
    outcome in one step", actions that can lead to a state without safe actions are removed until nothing changes:
    the greatest fixed point, so no safe behavior is excluded needlessly.

    :param P: Toy-text transition model ``P[s][a] = [(prob, next_state, reward, terminated), ...]``.
    :param n_states: Number of states.
    :param n_actions: Number of actions.
    :param is_unsafe_transition: ``(state, action, next_state, reward, terminated) -> bool``, the ground
        truth of which single transitions are unsafe (e.g. "next_state is a hole").
    :return: Boolean table of shape (n_states, n_actions), True where the action is safe.
    """
    _check_size("n_states", n_states)
    _check_size("n_actions", n_actions)
    if not callable(is_unsafe_transition):
        raise ValueError("is_unsafe_transition must be a callable (state, action, next_state, reward, terminated).")
    safe = np.ones((n_states, n_actions), dtype=bool)
    # Non-terminated successors with positive probability: the only ones whose own safety matters.
    successors = np.zeros((n_states, n_actions, n_states), dtype=bool)
    for state in range(n_states):
        for action in range(n_actions):
            for prob, next_state, reward, terminated in _outcomes(P, state, action, n_states):
                if prob <= 0.0:
                    continue
                if is_unsafe_transition(state, action, next_state, reward, terminated):
                    safe[state, action] = False
                elif not terminated:
                    successors[state, action, next_state] = True
    # Each pass removes at least one action, so this ends after at most n_states * n_actions passes.
    while True:
        dead_states = ~safe.any(axis=1)
        pruned = safe & ~(successors & dead_states).any(axis=2)
        if np.array_equal(pruned, safe):
            return safe
        safe = pruned


def reachable_states(
    P: ToyTextModel,
    n_states: int,
    n_actions: int,
    start_states: Iterable[int],
    allowed_actions: np.ndarray | None = None,
) -> np.ndarray:
    """
    States where an agent can be asked to act: the start states and every state reachable from them by a
    non-terminated transition with positive probability, using only allowed actions.

    :param P: Toy-text transition model.
    :param n_states: Number of states.
    :param n_actions: Number of actions.
    :param start_states: Indices of the possible initial states.
    :param allowed_actions: Optional boolean table (n_states, n_actions) restricting the actions taken
        (e.g. a safe-action table); all actions when None.
    :return: Boolean vector of shape (n_states,).
    """
    _check_size("n_states", n_states)
    _check_size("n_actions", n_actions)
    if allowed_actions is None:
        allowed_actions = np.ones((n_states, n_actions), dtype=bool)
    _check_table("allowed_actions", allowed_actions, n_states, n_actions, dtype=np.bool_)
    reached = np.zeros(n_states, dtype=bool)
    frontier = []
    for state in start_states:
        if not 0 <= int(state) < n_states:
            raise ValueError(f"start state {state} is outside 0..{n_states - 1}.")
        if not reached[int(state)]:
            reached[int(state)] = True
            frontier.append(int(state))
    while frontier:
        state = frontier.pop()
        for action in np.flatnonzero(allowed_actions[state]):
            for prob, next_state, _, terminated in _outcomes(P, state, int(action), n_states):
                if prob > 0.0 and not terminated and not reached[next_state]:
                    reached[next_state] = True
                    frontier.append(next_state)
    return reached


def _check_table(name: str, table: np.ndarray, n_states: int, n_actions: int, dtype: type | None = None) -> None:
    if not isinstance(table, np.ndarray) or table.shape != (n_states, n_actions):
        shape = getattr(table, "shape", type(table).__name__)
        raise ValueError(f"{name} must be a numpy array of shape ({n_states}, {n_actions}), got {shape}.")
    if dtype is not None and table.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {table.dtype}.")


def masked_uniform_behavior(mask_table: np.ndarray) -> np.ndarray:
    """
    Behavior policy that is uniform over the safe actions of each state.

    :param mask_table: Boolean table (n_states, n_actions), True where an action is safe.
    :return: Probability table of the same shape; rows without a safe action are all zero.
    """
    if not isinstance(mask_table, np.ndarray) or mask_table.ndim != 2 or mask_table.dtype != np.bool_:
        raise ValueError(
            "mask_table must be a boolean numpy array of shape (n_states, n_actions); "
            f"got {getattr(mask_table, 'dtype', type(mask_table).__name__)} "
            f"with shape {getattr(mask_table, 'shape', None)}."
        )
    counts = mask_table.sum(axis=1, keepdims=True)
    # np.maximum avoids 0 / 0 on rows without a safe action, which stay all zero.
    return mask_table / np.maximum(counts, 1)


def _check_policy(
    name: str, probs: np.ndarray, support: np.ndarray | None = None, allow_empty_rows: bool = True
) -> None:
    """
    Validate a (n_states, n_actions) probability table.

    :param name: Name used in error messages.
    :param probs: The table.
    :param support: Optional boolean table; the probabilities must vanish where it is False.
    :param allow_empty_rows: Whether all-zero rows (states without a safe action) are accepted.
    """
    if not isinstance(probs, np.ndarray) or probs.ndim != 2 or not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(
            f"{name} must be a float numpy array of shape (n_states, n_actions), "
            f"got {getattr(probs, 'dtype', type(probs).__name__)} with shape {getattr(probs, 'shape', None)}."
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0.0):
        raise ValueError(f"{name} must hold finite, non-negative probabilities.")
    row_sums = probs.sum(axis=1)
    valid = np.isclose(row_sums, 1.0, rtol=0.0, atol=_PROB_ATOL)
    if allow_empty_rows:
        valid |= row_sums == 0.0
    if not np.all(valid):
        bad = int(np.flatnonzero(~valid)[0])
        empty_hint = " or be all zero (a state without a safe action)" if allow_empty_rows else ""
        raise ValueError(f"Row {bad} of {name} sums to {row_sums[bad]}; every row must sum to 1{empty_hint}.")
    if support is not None:
        _check_table("support", support, probs.shape[0], probs.shape[1], dtype=np.bool_)
        outside = (probs > 0.0) & ~support
        if np.any(outside):
            state, action = np.argwhere(outside)[0]
            raise ValueError(
                f"{name} puts mass {probs[state, action]} on action {action} in state {state}, outside the support; "
                "a safe-supported behavior must be zero wherever the mask is False."
            )


def _check_gamma_alpha(gamma: float, alpha: float | None = None) -> None:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(
            f"gamma must lie in [0, 1) so that value iteration converges, got {gamma}; "
            "for episodic tasks use a discount such as 0.99."
        )
    if alpha is not None and not (0.0 <= alpha < np.inf):
        raise ValueError(f"alpha must be a finite temperature >= 0 (0 means the hard maximum), got {alpha}.")


def _row_logsumexp(values: np.ndarray) -> np.ndarray:
    """Stable ``log(sum(exp(values), axis=1))``; rows that are all ``-inf`` give ``-inf``."""
    row_max = values.max(axis=1)
    finite_max = np.where(np.isfinite(row_max), row_max, 0.0)
    with np.errstate(under="ignore"):
        summed = np.exp(values - finite_max[:, None]).sum(axis=1)
    with np.errstate(divide="ignore"):
        return finite_max + np.log(summed)


def soft_state_values(q_values: np.ndarray, behavior_probs: np.ndarray, alpha: float) -> np.ndarray:
    """
    Soft state values ``V(s) = alpha * log sum_a beta(a|s) exp(Q(s, a) / alpha)``.

    :param q_values: Table (n_states, n_actions); entries may be ``-inf``.
    :param behavior_probs: Behavior policy beta, same shape, rows summing to 1 or all zero.
    :param alpha: Temperature >= 0; 0 gives ``max`` over beta's support.
    :return: Vector (n_states,); ``-inf`` where beta has no support.
    """
    support = behavior_probs > 0.0
    if alpha == 0.0:
        return np.where(support, q_values, -np.inf).max(axis=1)
    with np.errstate(divide="ignore"):
        log_beta = np.log(behavior_probs)
    # log beta = -inf outside the support removes those actions whatever their Q.
    return alpha * _row_logsumexp(np.where(support, log_beta + q_values / alpha, -np.inf))


def _bootstrap(model: TabularModel, state_values: np.ndarray) -> np.ndarray:
    """``sum_s' continuation(s, a, s') V(s')`` ignoring zero-probability successors, ``-inf`` if any is dead."""
    dead = np.isneginf(state_values)
    expected = model.continuation @ np.where(dead, 0.0, state_values)
    reaches_dead = (model.continuation > 0.0) @ dead
    return np.where(reaches_dead, -np.inf, expected)


def soft_bellman_operator(
    q_values: np.ndarray, model: TabularModel, behavior_probs: np.ndarray, gamma: float, alpha: float
) -> np.ndarray:
    """
    One application of the KL-regularized Bellman operator:
    ``(T Q)(s, a) = E[r + gamma * (1 - terminated) * V(s')]`` with ``V`` from :func:`soft_state_values`.

    :param q_values: Table (n_states, n_actions).
    :param model: Dense model (see :func:`dense_model`).
    :param behavior_probs: Behavior policy beta (n_states, n_actions).
    :param gamma: Discount factor in [0, 1).
    :param alpha: Temperature >= 0.
    :return: The new Q table.
    """
    _check_gamma_alpha(gamma, alpha)
    _check_table("q_values", q_values, model.n_states, model.n_actions)
    _check_policy("behavior_probs", behavior_probs)
    return model.expected_reward + gamma * _bootstrap(model, soft_state_values(q_values, behavior_probs, alpha))


def _sup_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Sup-norm distance that treats equal infinities as equal and different infinity patterns as infinitely far."""
    first_dead, second_dead = np.isneginf(first), np.isneginf(second)
    if np.any(first_dead != second_dead):
        return np.inf
    live = ~first_dead
    return float(np.max(np.abs(first[live] - second[live]), initial=0.0))


def soft_value_iteration(
    P: ToyTextModel | TabularModel,
    behavior_probs: np.ndarray,
    gamma: float,
    alpha: float,
    tol: float = 1e-10,
    max_iterations: int = 1_000_000,
    support: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Exact KL-regularized (soft) value iteration for a behavior policy beta:

    ``Q(s, a) = sum_outcomes p * (r + gamma * (1 - terminated) * V(s'))`` and
    ``V(s) = alpha * log sum_a beta(a|s) exp(Q(s, a) / alpha)`` (log beta = -inf outside the support),
    whose optimal policy is ``pi(a|s) ∝ beta(a|s) exp(Q(s, a) / alpha)`` (:func:`soft_greedy_policy`).
    ``alpha = 0`` is the hard limit ``V(s) = max_{a in supp beta(s)} Q(s, a)`` (masked value iteration) and
    ``alpha -> inf`` tends to the evaluation of beta (:func:`policy_evaluation`).

    States without support get ``V = -inf``; Q is computed for all actions (see the module docstring).

    :param P: Toy-text model ``P[s][a] = [(prob, next_state, reward, terminated), ...]`` or a :class:`TabularModel`.
    :param behavior_probs: Behavior policy table (n_states, n_actions); rows sum to 1, or are all zero for
        states without a safe action.
    :param gamma: Discount factor in [0, 1).
    :param alpha: Temperature >= 0.
    :param tol: Stop when the returned Q is provably within ``tol`` of the fixed point in sup norm
        (contraction bound ``gamma / (1 - gamma) * ||Q_k+1 - Q_k||``), up to floating-point rounding.
    :param max_iterations: Give up (RuntimeError) after this many backups.
    :param support: Optional boolean mask table; if given, beta must put no mass outside it.
    :return: ``(Q, V)`` of shapes (n_states, n_actions) and (n_states,).
    """
    _check_gamma_alpha(gamma, alpha)
    _check_policy("behavior_probs", behavior_probs, support)
    if not tol > 0.0:
        raise ValueError(f"tol must be positive, got {tol}.")
    _check_size("max_iterations", max_iterations)
    model = _as_model(P, *behavior_probs.shape)
    q_values = np.zeros(behavior_probs.shape)
    # Below this step size the contraction bound guarantees ||Q - Q*|| <= tol.
    step_tol = tol * (1.0 - gamma) / gamma if gamma > 0.0 else np.inf
    for _ in range(max_iterations):
        new_q = model.expected_reward + gamma * _bootstrap(model, soft_state_values(q_values, behavior_probs, alpha))
        step = _sup_distance(new_q, q_values)
        q_values = new_q
        if step <= step_tol:
            return q_values, soft_state_values(q_values, behavior_probs, alpha)
    raise RuntimeError(
        f"Soft value iteration did not reach tol={tol} in {max_iterations} iterations (last step {step:.3g}); "
        "raise max_iterations or tol, or lower gamma."
    )


def hard_value_iteration(
    P: ToyTextModel | TabularModel,
    mask_table: np.ndarray,
    gamma: float,
    tol: float = 1e-10,
    max_iterations: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Value iteration restricted to the safe actions: ``V(s) = max_{a safe} Q(s, a)``, the ``alpha -> 0`` limit of
    :func:`soft_value_iteration` (masked Q-learning's fixed point).

    :param P: Toy-text model or :class:`TabularModel`.
    :param mask_table: Boolean table (n_states, n_actions), True where an action is safe.
    :param gamma: Discount factor in [0, 1).
    :param tol: Sup-norm accuracy of the returned Q.
    :param max_iterations: Give up (RuntimeError) after this many backups.
    :return: ``(Q, V)``; ``V = -inf`` for states without a safe action.
    """
    behavior = masked_uniform_behavior(mask_table)
    return soft_value_iteration(P, behavior, gamma, 0.0, tol=tol, max_iterations=max_iterations)


def soft_greedy_policy(q_values: np.ndarray, behavior_probs: np.ndarray, alpha: float) -> np.ndarray:
    """
    Policy induced by a soft Q table: ``pi(a|s) ∝ beta(a|s) exp(Q(s, a) / alpha)``, with the support of beta.

    :param q_values: Table (n_states, n_actions).
    :param behavior_probs: Behavior policy beta, same shape.
    :param alpha: Temperature >= 0; 0 spreads the mass uniformly over the supported maximisers.
    :return: Probability table; rows where beta (or every supported Q) is empty or ``-inf`` are all zero.
    """
    if not 0.0 <= alpha < np.inf:
        raise ValueError(f"alpha must be a finite temperature >= 0, got {alpha}.")
    _check_policy("behavior_probs", behavior_probs)
    _check_table("q_values", q_values, *behavior_probs.shape)
    state_values = soft_state_values(q_values, behavior_probs, alpha)
    live = np.isfinite(state_values)[:, None] & (behavior_probs > 0.0)
    if alpha == 0.0:
        chosen = live & (q_values == state_values[:, None])
        return masked_uniform_behavior(chosen)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        weights = behavior_probs * np.exp((q_values - state_values[:, None]) / alpha)
    return np.where(live, weights, 0.0)


def policy_evaluation(
    P: ToyTextModel | TabularModel,
    policy_probs: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Exact evaluation of a stochastic policy by a linear solve: ``V = (I - gamma P_pi)^-1 r_pi`` and
    ``Q(s, a) = E[r + gamma (1 - terminated) V(s')]`` (expected SARSA's fixed point).

    States whose policy row is all zero cannot act: their value is ``-inf``, and so is the value of every state
    whose policy continues into them with positive probability.

    :param P: Toy-text model or :class:`TabularModel`.
    :param policy_probs: Policy table (n_states, n_actions); rows sum to 1 or are all zero.
    :param gamma: Discount factor in [0, 1).
    :return: ``(Q, V)`` of shapes (n_states, n_actions) and (n_states,).
    """
    _check_gamma_alpha(gamma)
    _check_policy("policy_probs", policy_probs)
    model = _as_model(P, *policy_probs.shape)
    state_transition = np.einsum("sa,sat->st", policy_probs, model.continuation)
    dead = policy_probs.sum(axis=1) == 0.0
    # Propagate -inf backwards: any positive chance of continuing into a dead state makes the mean -inf.
    while True:
        grown = dead | ((state_transition > 0.0) @ dead)
        if np.array_equal(grown, dead):
            break
        dead = grown
    live = ~dead
    state_values = np.full(model.n_states, -np.inf)
    reward = (policy_probs * model.expected_reward).sum(axis=1)
    system = np.eye(int(live.sum())) - gamma * state_transition[np.ix_(live, live)]
    state_values[live] = np.linalg.solve(system, reward[live])
    return model.expected_reward + gamma * _bootstrap(model, state_values), state_values


def discounted_occupancy(
    P: ToyTextModel | TabularModel,
    policy_probs: np.ndarray,
    start_probs: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """
    Normalised discounted state occupancy ``d(s) = (1 - gamma) sum_t gamma^t Pr(s_t = s)`` of a policy from a start
    distribution, by a linear solve. Mass that terminates leaves, so ``d`` sums to less than one when episodes end.

    :param P: Toy-text model or :class:`TabularModel`.
    :param policy_probs: Policy table (n_states, n_actions); rows sum to 1 or are all zero (a state that cannot act
        keeps its occupancy but passes none on).
    :param start_probs: Start distribution, shape (n_states,), summing to 1.
    :param gamma: Discount factor in [0, 1).
    :return: Occupancy vector of shape (n_states,).
    """
    _check_gamma_alpha(gamma)
    _check_policy("policy_probs", policy_probs)
    start_probs = np.asarray(start_probs, dtype=np.float64)
    if start_probs.shape != (policy_probs.shape[0],) or abs(start_probs.sum() - 1.0) > 1e-6 or (start_probs < 0).any():
        raise ValueError(
            f"start_probs must be a distribution over the {policy_probs.shape[0]} states, got shape "
            f"{start_probs.shape} summing to {start_probs.sum()}."
        )
    model = _as_model(P, *policy_probs.shape)
    state_transition = np.einsum("sa,sat->st", policy_probs, model.continuation)
    system = np.eye(model.n_states) - gamma * state_transition.T
    return (1.0 - gamma) * np.linalg.solve(system, start_probs)
