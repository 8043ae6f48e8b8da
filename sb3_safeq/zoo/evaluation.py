"""
Evaluation inside the safe support for rl-zoo3's callbacks and for ``sb3-safeq enjoy``.

rl-zoo3 evaluates with SB3's ``EvalCallback`` (during training) and its subclass ``TrialEvalCallback`` (the Optuna
objective); both call SB3's ``evaluate_policy``, which calls ``predict`` without the safe support. For algorithms
whose ``predict`` takes it (SafeSupportQ; MaskablePPO for masks) that scores a policy acting without its safety
layer. The train entry point replaces them by callbacks that evaluate as a safe deployment would, explicitly
(:class:`~sb3_safeq.zoo.experiment.SafeExperimentManager`): :class:`~sb3_safeq.SafeEvalCallback` for ``--eval-freq``
and :class:`~sb3_safeq.zoo.experiment.SafeTrialEvalCallback` for the Optuna trials; SB3's ``evaluate_policy`` itself
is left alone. :func:`evaluate_in_support` is the same evaluation with ``evaluate_policy``'s signature.
"""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from sb3_safeq.common.evaluation import evaluate_safe_policy, predict_takes_support


def evaluate_in_support(
    model: Any,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    render: bool = False,
    callback: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    reward_threshold: float | None = None,
    return_episode_rewards: bool = False,
    warn: bool = True,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """
    SB3's ``evaluate_policy`` (same arguments and results), with the safe support of the current observations passed
    to ``predict`` when the model takes it. ``render``, ``callback`` and ``warn`` then have no effect.

    :param model: the model to evaluate
    :param env: the evaluation environment
    :param n_eval_episodes: number of episodes
    :param deterministic: deterministic actions
    :param render: render the environment (models without support argument only)
    :param callback: called after each step (models without support argument only)
    :param reward_threshold: minimum mean return, else ``AssertionError``
    :param return_episode_rewards: return the episode returns and lengths instead of their mean and std
    :param warn: warn when the environment has no ``Monitor`` (models without support argument only)
    :return: mean and standard deviation of the returns, or the lists of returns and lengths
    """
    if not predict_takes_support(model, env.action_space):
        return evaluate_policy(
            model, env, n_eval_episodes, deterministic, render, callback, reward_threshold, return_episode_rewards, warn
        )
    result = evaluate_safe_policy(model, env, n_eval_episodes, deterministic=deterministic, use_masks=True)
    if reward_threshold is not None:
        assert result.mean_return > reward_threshold, f"Mean reward below threshold: {result.mean_return:.2f}"
    if return_episode_rewards:
        return result.episode_returns, result.episode_lengths
    return result.mean_return, result.std_return
