"""A drop-in for SB3's ``EvalCallback``: evaluation inside the safe support, the best model among safe evaluations."""

import os
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from sb3_safeq.common.evaluation import evaluate_safe_policy, predict_takes_support
from sb3_safeq.common.wrappers import SafetyWrapper


class SafeEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` (same arguments, same ``evaluations.npz`` and ``best_model.zip``), evaluating as a safe
    deployment would.

    - Models whose ``predict`` takes the safe support (SafeSupportQ: ``action_masks=`` / ``safe_bounds=``;
      MaskablePPO: ``action_masks=``) get the support of every evaluated observation, so they act inside it. Other
      models (DQN, SAC, ...) act on their own, and their unsafe visits are recorded.
    - Every evaluation records the ground truth of safety: ``eval/mean_cost`` and ``eval/unsafe_visits`` (steps with
      ``info["cost"] > 0``), also saved in ``evaluations.npz`` as ``costs`` and ``unsafe_visits``.
    - The best model is chosen among *safe* evaluations only (no unsafe visit): a policy that scores higher by
      crossing the safe set is never saved as ``best_model``.

    A plain ``EvalCallback`` calls ``predict`` without the support: it evaluates the extraction head alone, records
    no cost, and may pick as "best" a model whose evaluation visited unsafe states.

    :param eval_env: the evaluation environment; a gymnasium environment is wrapped with
        :class:`~sb3_safeq.SafetyWrapper` when it lacks one (a VecEnv's sub-environments need their support method,
        ``action_masks()`` or ``safe_action_bounds()``, and ``info["cost"]``)
    :param kwargs: the other arguments of SB3's ``EvalCallback`` (``render`` and ``warn`` have no effect here)
    """

    def __init__(self, eval_env: gym.Env | VecEnv, **kwargs: Any) -> None:
        if not isinstance(eval_env, VecEnv) and not is_wrapped(eval_env, SafetyWrapper):
            eval_env = SafetyWrapper(eval_env)
        super().__init__(eval_env, **kwargs)
        self.evaluations_costs: list[list[float]] = []
        self.evaluations_unsafe_visits: list[int] = []
        #: unsafe visits of the latest evaluation
        self.last_unsafe_visits = 0

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        if self.model.get_vec_normalize_env() is not None:
            # The evaluation must see observations normalised as in training (SB3's EvalCallback does the same).
            sync_envs_normalization(self.training_env, self.eval_env)
        result = evaluate_safe_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            use_masks=predict_takes_support(self.model, self.eval_env.action_space),
        )
        self._save_evaluation(
            result.episode_returns, result.episode_lengths, result.episode_costs, result.unsafe_visits
        )
        mean_reward = float(np.mean(result.episode_returns))
        self.last_mean_reward = mean_reward
        self.last_unsafe_visits = result.unsafe_visits
        if self.verbose >= 1:
            print(
                f"Eval num_timesteps={self.num_timesteps}, episode_reward={mean_reward:.2f} +/- "
                f"{np.std(result.episode_returns):.2f}, cost={np.mean(result.episode_costs):.2f}, unsafe visits="
                f"{result.unsafe_visits}"
            )
        self.logger.record("eval/mean_reward", mean_reward)
        self.logger.record("eval/mean_ep_length", float(np.mean(result.episode_lengths)))
        self.logger.record("eval/mean_cost", float(np.mean(result.episode_costs)))
        self.logger.record("eval/unsafe_visits", result.unsafe_visits)
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)

        continue_training = True
        if result.unsafe_visits == 0 and mean_reward > self.best_mean_reward:
            if self.verbose >= 1:
                print("New best mean reward among safe evaluations!")
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            self.best_mean_reward = mean_reward
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = continue_training and self._on_event()
        return continue_training

    def _save_evaluation(
        self, returns: list[float], lengths: list[int], costs: list[float], unsafe_visits: int
    ) -> None:
        """Append one evaluation to ``evaluations.npz`` (SB3's arrays plus ``costs`` and ``unsafe_visits``)."""
        if self.log_path is None:
            return
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(returns)
        self.evaluations_length.append(lengths)
        self.evaluations_costs.append(costs)
        self.evaluations_unsafe_visits.append(unsafe_visits)
        np.savez(
            self.log_path,
            timesteps=self.evaluations_timesteps,
            results=self.evaluations_results,
            ep_lengths=self.evaluations_length,
            costs=self.evaluations_costs,
            unsafe_visits=self.evaluations_unsafe_visits,
        )
