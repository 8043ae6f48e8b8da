"""Evaluation of a policy inside the safe support, with the ground-truth safety record of every episode."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, is_vecenv_wrapped

from sb3_safeq.common.supports.base import COST_INFO_KEY
from sb3_safeq.common.supports.errors import acting_without_support
from sb3_safeq.common.supports.factory import find_support_kind, make_support_kind
from sb3_safeq.common.wrappers import SafetyWrapper


@dataclass
class SafeEvaluation:
    """
    Result of :func:`evaluate_safe_policy`.

    :param episode_returns: undiscounted return of each episode
    :param episode_lengths: length of each episode
    :param episode_costs: sum of ``info["cost"]`` in each episode
    :param unsafe_visits: steps with ``info["cost"] > 0`` over all episodes
    """

    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)
    unsafe_visits: int = 0

    @property
    def mean_return(self) -> float:
        """:return: mean episode return"""
        return float(np.mean(self.episode_returns))

    @property
    def std_return(self) -> float:
        """:return: standard deviation of the episode returns"""
        return float(np.std(self.episode_returns))


def predict_takes_support(model: Any, action_space: spaces.Space) -> bool:
    """
    :param model: a model
    :param action_space: the environment's action space
    :return: whether ``model.predict`` takes the safe support of this kind of action space (``action_masks`` for
        Discrete actions, ``safe_bounds`` for Box actions)
    """
    try:
        kind = find_support_kind(action_space)
    except ValueError:  # a kind of action space with a support, but a layout no kind handles (e.g. a 2-D Box)
        return False
    return kind is not None and kind.predict_keyword in inspect.signature(model.predict).parameters


def evaluate_safe_policy(
    model: Any,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    use_masks: bool = True,
    predict_fn: Callable[..., tuple[np.ndarray, Any]] | None = None,
) -> SafeEvaluation:
    """
    Run a policy for a number of episodes and record returns, costs and unsafe visits.

    The supports of the current observations are passed to ``model.predict`` when ``use_masks`` is set, as
    deployment with a safety layer would: ``action_masks=`` for Discrete actions, ``safe_bounds=(low, high)`` for Box
    actions. With ``use_masks=False`` the policy acts on its own (this measures what it learned about the support).
    The episodes are run by SB3's ``evaluate_policy`` (spread over several environments, and ended by ``Monitor``'s
    episode record when there is one, as it does); its callback counts the costs and unsafe visits.

    :param model: anything with ``predict(observation, deterministic=..., action_masks=...)`` (Discrete actions) or
        ``predict(observation, deterministic=..., safe_bounds=...)`` (Box actions)
    :param env: a gymnasium environment (wrapped with :class:`SafetyWrapper` when needed) or a VecEnv whose
        sub-environments expose ``action_masks()`` or ``safe_action_bounds()``
    :param n_eval_episodes: number of episodes
    :param deterministic: use deterministic actions
    :param use_masks: pass the current safe supports (masks or boxes) to ``predict``
    :param predict_fn: alternative to ``model.predict`` with the same signature
    :return: the episode statistics
    """
    if n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes={n_eval_episodes} must be >= 1.")
    if not isinstance(env, VecEnv):
        gym_env = env if is_wrapped(env, SafetyWrapper) else SafetyWrapper(env)
        env = DummyVecEnv([lambda: gym_env])
    predict = predict_fn if predict_fn is not None else model.predict
    if not use_masks:
        predict = _without_support_warning(predict)
    support_kind = make_support_kind(env.action_space) if use_masks else None
    vec_env = env
    # SB3's evaluate_policy runs the episodes (spread over the environments as it does) and counts the returns; it
    # calls ``predict`` without the support, so the support is added here, read from the environments at each call.

    def predict_in_support(
        observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        kwargs: dict[str, Any] = {"deterministic": deterministic}
        if support_kind is not None:
            kwargs.update(support_kind.current_predict_kwargs(vec_env))
        return predict(observation, **kwargs)

    # SB3 ends an episode at Monitor's episode record when there is a Monitor (not at a "done" that is a lost life).
    monitored = is_vecenv_wrapped(env, VecMonitor) or env.env_is_wrapped(Monitor)[0]
    result = SafeEvaluation()
    current_costs = np.zeros(env.num_envs)

    def record_cost(local_vars: dict[str, Any], global_vars: dict[str, Any]) -> None:
        # Called by evaluate_policy after each step of each environment still short of its episodes.
        index, info = local_vars["i"], local_vars["info"]
        cost = float(info.get(COST_INFO_KEY, 0.0))
        current_costs[index] += cost
        result.unsafe_visits += int(cost > 0)
        if local_vars["done"] and (not monitored or "episode" in info):
            result.episode_costs.append(float(current_costs[index]))
            current_costs[index] = 0.0

    returns, lengths = evaluate_policy(
        SimpleNamespace(predict=predict_in_support),
        env,
        n_eval_episodes=n_eval_episodes,
        deterministic=deterministic,
        callback=record_cost,
        return_episode_rewards=True,
        warn=False,
    )
    assert isinstance(returns, list) and isinstance(lengths, list)  # return_episode_rewards=True
    result.episode_returns = [float(value) for value in returns]
    result.episode_lengths = [int(value) for value in lengths]
    return result


def _without_support_warning(predict: Callable[..., Any]) -> Callable[..., Any]:
    """:return: ``predict`` that leaves the support out on purpose, without :class:`PredictWithoutSupportWarning`"""

    def predict_without_support(*args: Any, **kwargs: Any) -> Any:
        with acting_without_support():
            return predict(*args, **kwargs)

    return predict_without_support
