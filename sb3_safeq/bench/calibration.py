"""
Value calibration: the critic's estimate Q̂(s, a) of the action the deployed policy takes, against the Monte-Carlo
discounted return actually collected from there.
"""

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from scipy import stats
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_safeq import SafeSupportQ, SafetyWrapper, acting_without_support


def q_value_fn(model: Any) -> Any:
    """
    The critic of a model as a function ``(observations, actions) -> Q̂`` (numpy in, numpy out), or None.

    DQN: ``q_net``; QR-DQN: mean of ``quantile_net``'s quantiles; SAC: the first critic; TQC: the quantile mean of
    the first critic; SafeSupportQ: :meth:`~sb3_safeq.SafeSupportQ.critic_values`.

    :param model: a trained model
    :return: the function, or None when the model has no critic (behavior policy, MaskablePPO)
    """
    if isinstance(model, SafeSupportQ):
        return model.critic_values
    policy = getattr(model, "policy", None)
    if policy is None:
        return None
    net = getattr(model, "q_net", None)
    quantiles = getattr(model, "quantile_net", None)
    critic = getattr(model, "critic", None)
    if net is None and quantiles is None and critic is None:
        return None

    def values(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        obs_tensor, _ = policy.obs_to_tensor(observations)
        with th.no_grad():
            if quantiles is not None:
                table = quantiles(obs_tensor).mean(dim=1)
            elif net is not None:
                table = net(obs_tensor)
            else:
                action_tensor = th.as_tensor(policy.scale_action(actions), dtype=th.float32, device=model.device)
                assert critic is not None
                output = critic(obs_tensor, action_tensor)
                if isinstance(output, th.Tensor):  # TQC: (batch, n_critics, n_quantiles)
                    return output[:, 0, :].mean(dim=-1).cpu().numpy()
                return output[0][:, 0].cpu().numpy()
            index = th.as_tensor(np.asarray(actions, dtype=np.int64).reshape(-1, 1), device=table.device)
            return table.gather(1, index)[:, 0].cpu().numpy()

    return values


def complete_horizon(max_episode_steps: int, gamma: float, tail_tolerance: float) -> int:
    """
    :param max_episode_steps: the environment's time limit
    :param gamma: discount factor
    :param tail_tolerance: the largest weight ``gamma ** steps_left`` of a missing tail to accept
    :return: a time limit under which every state of the first ``max_episode_steps`` has a return complete up to
        ``tail_tolerance``
    """
    if not 0.0 < tail_tolerance < 1.0 or not 0.0 < gamma < 1.0:
        raise ValueError(f"tail_tolerance and gamma must lie in (0, 1), got {tail_tolerance} and {gamma}.")
    return max_episode_steps + math.ceil(math.log(tail_tolerance) / math.log(gamma))


def discounted_returns(rewards: list[float], gamma: float) -> np.ndarray:
    """
    :param rewards: rewards of one episode
    :param gamma: discount factor
    :return: the discounted return from every step
    """
    returns = np.zeros(len(rewards))
    running = 0.0
    for index in range(len(rewards) - 1, -1, -1):
        running = rewards[index] + gamma * running
        returns[index] = running
    return returns


def _one_env(env: gym.Env | VecEnv, caller: str) -> VecEnv:
    """:return: ``env`` as a one-environment VecEnv (wrapped with :class:`SafetyWrapper` when needed)"""
    if not isinstance(env, VecEnv):
        gym_env = env if is_wrapped(env, SafetyWrapper) else SafetyWrapper(env)
        env = DummyVecEnv([lambda: gym_env])
    if env.num_envs != 1:
        raise ValueError(f"{caller} needs one environment, got a VecEnv with {env.num_envs}.")
    return env


def _time_limit(env: VecEnv) -> int | None:
    """:return: the ``max_episode_steps`` of the environment's ``TimeLimit`` wrapper, None without one"""
    try:
        (limit,) = env.get_attr("_max_episode_steps")
    except AttributeError:
        return None
    return None if limit is None else int(limit)


def rollout_pairs(
    env: VecEnv,
    n_episodes: int,
    act: Callable[[Any, dict[str, Any]], tuple[np.ndarray, float, float]],
    gamma: float,
    kl_weight: float,
    use_support: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Run ``n_episodes`` episodes and pair every visited state's ``Q̂(s, a)`` with the return collected from there,
    ``sum_k gamma^k r_{t+k} - kl_weight * sum_{k>=1} gamma^k KL_{t+k}`` (a soft return when ``kl_weight > 0``;
    the KL of a state after termination is 0: the soft target does not bootstrap there).

    :param env: a one-environment VecEnv
    :param n_episodes: number of episodes
    :param act: ``(observations, supports) -> (actions, Q̂ of the action, KL at the state)``
    :param gamma: discount factor
    :param kl_weight: the weight of the KL terms (``alpha``; 0 for the plain return)
    :param use_support: query the safe support of every state for ``act`` (else it gets ``{}``)
    :return: ``Q̂``, the returns and, per state, ``gamma ** (time_limit - t)`` with ``t`` its step in the episode:
        the largest weight its return's missing tail can have. It depends on ``t`` only, never on how the episode
        went on: dropping only the late states of episodes that were cut (and keeping those of episodes that
        terminated in time) would select on the future, e.g. keep the walks that reached a goal and drop the ones
        that wandered, and bias the returns. The time limit is the environment's ``TimeLimit`` (else the length of
        the episodes cut by one); all 0 without any (then every return is complete).
    """
    from sb3_safeq.bench.algorithms import current_supports

    q_hat: list[float] = []
    returns: list[float] = []
    steps: list[int] = []
    time_limit = _time_limit(env)
    observations = env.reset()
    for _ in range(n_episodes):
        rewards: list[float] = []
        kls: list[float] = []
        done = False
        while not done:
            actions, q_value, kl = act(observations, current_supports(env) if use_support else {})
            q_hat.append(q_value)
            kls.append(kl)
            observations, step_rewards, dones, infos = env.step(actions)
            rewards.append(float(step_rewards[0]))
            done = bool(dones[0])
            if done and infos[0].get("TimeLimit.truncated", False) and time_limit is None:
                time_limit = len(rewards)
        # r_t - kl_weight * gamma * KL_{t+1}, discounted: the KL penalty of every later state of the episode.
        later_kls = np.append(np.asarray(kls[1:]), 0.0)
        returns.extend(discounted_returns((np.asarray(rewards) - kl_weight * gamma * later_kls).tolist(), gamma))
        steps.extend(range(len(rewards)))
    tail_weights = np.zeros(len(steps)) if time_limit is None else gamma ** (time_limit - np.asarray(steps, float))
    return np.asarray(q_hat), np.asarray(returns), tail_weights


def calibration_statistics(
    q_array: np.ndarray,
    g_array: np.ndarray,
    tail_weights: np.ndarray,
    tail_tolerance: float | None,
    return_pairs: bool,
) -> dict[str, Any]:
    """:return: the statistics of :func:`evaluate_calibration` for these pairs"""
    if tail_tolerance is not None:
        complete = tail_weights <= tail_tolerance
        q_array, g_array = q_array[complete], g_array[complete]
    if len(q_array) == 0:
        return _no_calibration(return_pairs)
    errors = q_array - g_array
    scale = float(np.abs(g_array).mean())
    constant = np.ptp(g_array) == 0 or np.ptp(q_array) == 0
    result: dict[str, Any] = {
        "bias": float(errors.mean()),
        # Undefined when every return is 0 (e.g. a policy that never reaches a sparse reward): NaN, not 1e8 * bias.
        "norm_bias": float(errors.mean() / (scale + 1e-8)) if scale > 1e-6 else np.nan,
        "spread": float(errors.std()),
        "rank_corr": np.nan if constant else float(stats.spearmanr(q_array, g_array).statistic),
        "n_states": len(q_array),
    }
    if return_pairs:
        result.update(q_hat=q_array.tolist(), mc_return=g_array.tolist())
    return result


def _no_calibration(return_pairs: bool) -> dict[str, Any]:
    nan: dict[str, Any] = {"bias": np.nan, "norm_bias": np.nan, "spread": np.nan, "rank_corr": np.nan, "n_states": 0}
    return {**nan, "q_hat": [], "mc_return": []} if return_pairs else nan


def evaluate_calibration(
    model: Any,
    env: gym.Env | VecEnv,
    n_episodes: int = 5,
    gamma: float | None = None,
    use_support: bool = True,
    return_pairs: bool = False,
    tail_tolerance: float | None = None,
) -> dict[str, Any]:
    """
    Run the deployed (deterministic) policy and compare its critic's Q̂(s, a) at every visited state with the
    Monte-Carlo discounted return collected from there. Episodes cut by a time limit give truncated returns (the
    tail is missing), as in any Monte-Carlo estimate; a critic trained with SB3's time-limit bootstrapping estimates
    the untruncated value, so late states of truncated episodes look pessimistic. ``tail_tolerance`` keeps only the
    states whose missing tail can weigh at most that much, ``gamma ** (time_limit - t) <= tail_tolerance`` for the
    state at step ``t`` of its episode (a rule on ``t`` alone, for every episode alike: see :func:`rollout_pairs`):
    give the environment a time limit long enough (see :func:`complete_horizon`) for those to be the states of
    interest.

    :param model: a trained model with ``predict`` and a critic (see :func:`q_value_fn`)
    :param env: the environment (wrapped with :class:`SafetyWrapper` when needed), or a one-environment VecEnv
    :param n_episodes: number of episodes
    :param gamma: discount factor (default: ``model.gamma``)
    :param use_support: pass the safe support to ``predict`` (``action_masks=`` / ``safe_bounds=``)
    :param return_pairs: also return the per-state pairs (``"q_hat"``, ``"mc_return"``)
    :param tail_tolerance: keep only states with a complete enough return (None: every state)
    :return: ``bias`` (mean of Q̂ - G), ``norm_bias`` (bias / (mean |G| + 1e-8); NaN when every G is 0),
        ``spread`` (std of Q̂ - G), ``rank_corr`` (Spearman), ``n_states``; all NaN when the model has no critic
    """
    values = q_value_fn(model)
    if values is None:
        return _no_calibration(return_pairs)
    gamma = float(model.gamma if gamma is None else gamma)
    vec_env = _one_env(env, "evaluate_calibration")

    def act(observations: Any, supports: dict[str, Any]) -> tuple[np.ndarray, float, float]:
        with acting_without_support():  # without `use_support` the head is calibrated on its own, on purpose
            actions, _ = model.predict(observations, deterministic=True, **supports)
        return actions, float(values(observations, np.asarray(actions))[0]), 0.0

    pairs = rollout_pairs(vec_env, n_episodes, act, gamma, kl_weight=0.0, use_support=use_support)
    return calibration_statistics(*pairs, tail_tolerance, return_pairs)


def evaluate_soft_calibration(
    model: Any,
    env: gym.Env | VecEnv,
    n_episodes: int = 5,
    return_pairs: bool = False,
    tail_tolerance: float | None = None,
) -> dict[str, Any]:
    """
    The calibration of a SafeSupportQ critic against the quantity it estimates: its Q is the *soft* value of the
    induced policy ``pi_Q ∝ beta exp(Q / alpha)``, ``Q(s, a) = r + gamma E[Q(s', a') - alpha KL(pi_Q || beta)(s')]``
    with ``a' ~ pi_Q``. So this samples the actions from ``pi_Q`` (see
    :meth:`~sb3_safeq.SafeSupportQ.induced_policy`) and compares ``Q̂(s, a)`` with the Monte-Carlo soft return
    ``sum_k gamma^k r_{t+k} - alpha sum_{k>=1} gamma^k KL(pi_Q || beta)(s_{t+k})`` (the model's current ``alpha``
    and ``gamma``). Exact for Discrete actions; for Box actions ``pi_Q`` is importance-resampled from the
    ``n_behavior_samples`` draws and the KL estimated from them, as in training. Against hard returns of the greedy
    policy (:func:`evaluate_calibration`) a soft critic is low by design, by the discounted KL penalties.

    :param model: a trained :class:`~sb3_safeq.SafeSupportQ`
    :param env: the environment (wrapped with :class:`SafetyWrapper` when needed), or a one-environment VecEnv
    :param n_episodes: number of episodes
    :param return_pairs: also return the per-state pairs (``"q_hat"``, ``"mc_return"``: the soft returns)
    :param tail_tolerance: keep only states with a complete enough return (see :func:`evaluate_calibration`)
    :return: the statistics of :func:`evaluate_calibration` for the soft pairs; all NaN for other models
    """
    from sb3_safeq.bench.induced import induced_step_fn

    step = induced_step_fn(model)
    if step is None:
        return _no_calibration(return_pairs)
    vec_env = _one_env(env, "evaluate_soft_calibration")

    def act(observations: Any, supports: dict[str, Any]) -> tuple[np.ndarray, float, float]:
        induced = step(observations, deterministic=False, **supports)
        return induced.actions, float(induced.q_values[0]), float(induced.kl[0])

    pairs = rollout_pairs(vec_env, n_episodes, act, float(model.gamma), kl_weight=model.current_alpha())
    return calibration_statistics(*pairs, tail_tolerance, return_pairs)


def tabular_q_error(model: Any, env: gym.Env, reduction: str = "max") -> float:
    """
    The error ``|Q̂ - Q*_alpha|`` against exact soft value iteration on the environment's toy-text model (the
    masked-uniform behavior, the model's final temperature and discount).

    :param model: a trained :class:`~sb3_safeq.SafeSupportQ` with Discrete actions and the masked-uniform behavior
    :param env: the environment; its unwrapped env must have ``P`` and ``safe_action_table`` (bundled tabular envs)
    :param reduction: ``"max"``: the largest error over the safe state-action pairs reachable from the start (rarely
        visited pairs included, where a sampled critic is least accurate); ``"occupancy"``: the mean error weighted
        by where the soft-optimal policy ``pi_{Q*}`` goes, its discounted state occupancy from the start
        distribution times its action probabilities
    :return: the error, NaN when not applicable (no tabular model, another behavior, Box actions)
    """
    from sb3_safeq import MaskedUniformBehavior
    from sb3_safeq.common.tabular import (
        discounted_occupancy,
        masked_uniform_behavior,
        reachable_states,
        soft_greedy_policy,
        soft_value_iteration,
    )

    if reduction not in ("max", "occupancy"):
        raise ValueError(f"reduction must be 'max' or 'occupancy', got {reduction!r}.")
    unwrapped = env.unwrapped
    table = getattr(unwrapped, "safe_action_table", None)
    transitions = getattr(unwrapped, "P", None)
    behavior = getattr(model, "behavior_policy", None)
    # The masked-uniform behavior implies Discrete actions: the critic maps a state to the Q-values of every action.
    if table is None or transitions is None or not isinstance(behavior, MaskedUniformBehavior):
        return float("nan")
    behavior_probs = masked_uniform_behavior(table)
    alpha = model.current_alpha()
    q_star, _ = soft_value_iteration(transitions, behavior_probs, model.gamma, alpha)
    n_states, n_actions = table.shape
    start_probs = np.asarray(getattr(unwrapped, "initial_state_distrib", np.full(n_states, 1.0 / n_states)))
    with th.no_grad():
        q_hat = model.critic(th.as_tensor(np.arange(n_states), device=model.device)).cpu().numpy()
    errors = np.abs(q_hat - q_star)
    if reduction == "occupancy":
        policy = soft_greedy_policy(q_star, behavior_probs, alpha)
        occupancy = discounted_occupancy(transitions, policy, start_probs, model.gamma)
        weights = occupancy[:, None] * policy
        used = weights > 0  # where Q* is finite: the soft-optimal policy never enters a -inf state
        return float((weights[used] * errors[used]).sum() / weights[used].sum())
    starts = [int(state) for state in np.flatnonzero(start_probs)]
    reachable = reachable_states(transitions, n_states, n_actions, starts, table)
    pairs = reachable[:, None] & table & np.isfinite(q_star)
    return float(errors[pairs].max())


__all__ = [
    "calibration_statistics",
    "complete_horizon",
    "discounted_returns",
    "evaluate_calibration",
    "evaluate_soft_calibration",
    "q_value_fn",
    "rollout_pairs",
    "tabular_q_error",
]
