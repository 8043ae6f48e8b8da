"""
Value calibration: the critic's estimate Q̂(s, a) of the action the deployed policy takes, against the Monte-Carlo
discounted return actually collected from there.
"""

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from scipy import stats
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_safeq.common.wrappers import SafetyWrapper


def q_value_fn(model: Any) -> Any:
    """
    The critic of a model as a function ``(observations, actions) -> Q̂`` (numpy in, numpy out), or None.

    DQN: ``q_net``; QR-DQN: mean of ``quantile_net``'s quantiles; SAC: the first critic; TQC: the quantile mean of
    the first critic; SafeSupportQ: ``q_net`` (Discrete) or the first critic (Box).

    :param model: a trained model
    :return: the function, or None when the model has no critic (behavior policy, MaskablePPO)
    """
    policy = getattr(model, "policy", None)
    if policy is None:
        return None
    net = getattr(model, "q_net", None)
    quantiles = getattr(model, "quantile_net", None)
    critic = getattr(model, "critic", None)
    if net is None and quantiles is None and critic is None:
        return None

    def to_agent_units(actions: np.ndarray) -> np.ndarray:
        scaler = getattr(policy, "scaler", None)  # SafeSupportQ's Box policy
        if scaler is not None:
            return scaler.to_agent(actions)
        return policy.scale_action(actions)

    def values(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        obs_tensor, _ = policy.obs_to_tensor(observations)
        with th.no_grad():
            if quantiles is not None:
                table = quantiles(obs_tensor).mean(dim=1)
            elif net is not None:
                table = net(obs_tensor)
            else:
                action_tensor = th.as_tensor(to_agent_units(actions), dtype=th.float32, device=model.device)
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
    states whose missing tail weighs at most that much (``gamma ** steps_left <= tail_tolerance``; every state of
    an episode that terminated): give the environment a time limit long enough (see :func:`complete_horizon`)
    for those to be the states of interest.

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
    from sb3_safeq.bench.algorithms import current_supports

    nan = {"bias": np.nan, "norm_bias": np.nan, "spread": np.nan, "rank_corr": np.nan, "n_states": 0}
    values = q_value_fn(model)
    if values is None:
        return {**nan, "q_hat": [], "mc_return": []} if return_pairs else nan
    gamma = float(model.gamma if gamma is None else gamma)
    if not isinstance(env, VecEnv):
        gym_env = env if is_wrapped(env, SafetyWrapper) else SafetyWrapper(env)
        env = DummyVecEnv([lambda: gym_env])
    if env.num_envs != 1:
        raise ValueError(f"evaluate_calibration needs one environment, got a VecEnv with {env.num_envs}.")
    q_hat: list[float] = []
    mc_return: list[float] = []
    tail_weights: list[float] = []
    observations = env.reset()
    for _ in range(n_episodes):
        rewards: list[float] = []
        done = False
        truncated = False
        while not done:
            kwargs = current_supports(env) if use_support else {}
            actions, _ = model.predict(observations, deterministic=True, **kwargs)
            q_hat.append(float(values(observations, np.asarray(actions))[0]))
            observations, step_rewards, dones, infos = env.step(actions)
            rewards.append(float(step_rewards[0]))
            done = bool(dones[0])
            truncated = bool(infos[0].get("TimeLimit.truncated", False))
        mc_return.extend(discounted_returns(rewards, gamma).tolist())
        steps_left = np.arange(len(rewards), 0, -1)
        tail_weights.extend((gamma**steps_left if truncated else np.zeros(len(rewards))).tolist())
    q_array, g_array = np.asarray(q_hat), np.asarray(mc_return)
    if tail_tolerance is not None:
        complete = np.asarray(tail_weights) <= tail_tolerance
        q_array, g_array = q_array[complete], g_array[complete]
        q_hat, mc_return = q_array.tolist(), g_array.tolist()
        if not complete.any():
            return {**nan, "q_hat": [], "mc_return": []} if return_pairs else nan
    errors = q_array - g_array
    scale = float(np.abs(g_array).mean())
    constant = np.ptp(g_array) == 0 or np.ptp(q_array) == 0
    rank_corr = np.nan if constant else float(stats.spearmanr(q_array, g_array).statistic)
    result: dict[str, Any] = {
        "bias": float(errors.mean()),
        # Undefined when every return is 0 (e.g. a policy that never reaches a sparse reward): NaN, not 1e8 * bias.
        "norm_bias": float(errors.mean() / (scale + 1e-8)) if scale > 1e-6 else np.nan,
        "spread": float(errors.std()),
        "rank_corr": rank_corr,
        "n_states": len(q_hat),
    }
    if return_pairs:
        result.update(q_hat=q_hat, mc_return=mc_return)
    return result


def tabular_q_error(model: Any, env: gym.Env) -> float:
    """
    ``max |Q̂ - Q*_alpha|`` over the safe state-action pairs reachable from the start, against exact soft value
    iteration on the environment's toy-text model (the masked-uniform behavior, the model's final temperature and
    discount).

    :param model: a trained :class:`~sb3_safeq.SafeSupportQ` with Discrete actions and the masked-uniform behavior
    :param env: the environment; its unwrapped env must have ``P`` and ``safe_action_table`` (bundled tabular envs)
    :return: the sup-norm error, NaN when not applicable (no tabular model, another behavior, Box actions)
    """
    from sb3_safeq.common.behavior import MaskedUniformBehavior
    from sb3_safeq.common.tabular import masked_uniform_behavior, reachable_states, soft_value_iteration

    unwrapped = env.unwrapped
    table = getattr(unwrapped, "safe_action_table", None)
    transitions = getattr(unwrapped, "P", None)
    q_net = getattr(model, "q_net", None)
    behavior = getattr(model, "behavior_policy", None)
    if table is None or transitions is None or q_net is None or not isinstance(behavior, MaskedUniformBehavior):
        return float("nan")
    q_star, _ = soft_value_iteration(transitions, masked_uniform_behavior(table), model.gamma, model.current_alpha())
    n_states, n_actions = table.shape
    starts = np.flatnonzero(getattr(unwrapped, "initial_state_distrib", np.ones(n_states)))
    reachable = reachable_states(transitions, n_states, n_actions, [int(state) for state in starts], table)
    states = np.flatnonzero(reachable & table.any(axis=1))
    with th.no_grad():
        q_hat = q_net(th.as_tensor(states, device=model.device)).cpu().numpy()
    safe = table[states]
    finite = np.isfinite(q_star[states])
    return float(np.abs(q_hat - q_star[states])[safe & finite].max())


__all__ = ["discounted_returns", "evaluate_calibration", "q_value_fn", "tabular_q_error"]
