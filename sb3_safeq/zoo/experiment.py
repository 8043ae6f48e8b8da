"""
rl-zoo3's ``ExperimentManager`` with safety bookkeeping for every algorithm ``sb3-safeq train`` runs.

rl-zoo3 has no hook for extra callbacks or default wrappers: ``rl_zoo3.train.train()`` builds an ``ExperimentManager``
by the name it imported. :func:`use_safe_experiment_manager` points that name at :class:`SafeExperimentManager`, a
subclass overriding two methods and calling the original of each first, so that every other option of rl-zoo3 keeps
its meaning (and, as the Optuna objective builds its ``TrialEvalCallback`` by name too, points that name at
:class:`SafeTrialEvalCallback`):

- ``_preprocess_hyperparams``: an entry without ``env_wrapper``, for an environment with a safe support, gets
  :func:`~sb3_safeq.zoo.wrappers.safety_wrapper` (counts only, never shields), and one without ``monitor_kwargs`` the
  cost columns of ``monitor.csv`` (``episode_cost``, ``episode_unsafe_visits``), so a user's own environment needs no
  safety lines in its entry;
- ``create_callbacks``: rl-zoo3's ``EvalCallback`` (``--eval-freq``) becomes a
  :class:`~sb3_safeq.SafeEvalCallback` with the same settings (return, cost and unsafe visits; the safe support passed
  to ``predict`` of SafeSupportQ and MaskablePPO), and a :class:`~sb3_safeq.SafetyLoggerCallback` writes ``safety/*``
  to TensorBoard and the CSV log of algorithms that do not log it themselves (every one but SafeSupportQ), unless
  ``--no-safety-logger`` is given.
"""

from typing import Any

import gymnasium as gym
import rl_zoo3.exp_manager
import rl_zoo3.train
from rl_zoo3.callbacks import TrialEvalCallback
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from sb3_safeq import MissingSupportError
from sb3_safeq.common.callbacks import SafetyLoggerCallback
from sb3_safeq.common.eval_callback import SafeEvalCallback
from sb3_safeq.common.wrappers import SafetyWrapper
from sb3_safeq.safeq import SafeSupportQ
from sb3_safeq.zoo.wrappers import safety_wrapper

#: The ``monitor_kwargs`` an entry without its own gets: the episode's cost and unsafe visits in ``monitor.csv``.
SAFETY_MONITOR_KWARGS: dict[str, Any] = {"info_keywords": ("episode_cost", "episode_unsafe_visits")}


class SafeTrialEvalCallback(TrialEvalCallback, SafeEvalCallback):
    """
    rl-zoo3's ``TrialEvalCallback`` (same arguments: it reports each evaluation to the Optuna trial and prunes it)
    whose evaluations are :class:`~sb3_safeq.SafeEvalCallback`'s: inside the safe support for the models that take
    it, with cost and unsafe visits recorded. No code of either is repeated: ``TrialEvalCallback._on_step`` calls
    ``super()._on_step()``, which this class's method resolution order makes ``SafeEvalCallback._on_step``.
    """


class SafeExperimentManager(ExperimentManager):
    """
    rl-zoo3's ``ExperimentManager`` (same arguments) that records safety for every algorithm; see the module's
    docstring. Set :attr:`log_safety` to False (``sb3-safeq train --no-safety-logger``) to leave the logger out.
    """

    #: add a SafetyLoggerCallback for algorithms that do not log ``safety/*`` themselves
    log_safety: bool = True

    def _preprocess_hyperparams(
        self, hyperparams: dict[str, Any]
    ) -> tuple[dict[str, Any], Any, list[BaseCallback], Any]:
        has_monitor_kwargs = "monitor_kwargs" in hyperparams
        hyperparams, env_wrapper, callbacks, vec_env_wrapper = super()._preprocess_hyperparams(hyperparams)
        # An environment without a support (plain CartPole-v1 for a DQN run) cannot be wrapped: it trains as in
        # rl-zoo3, and its cost (if any) still reaches the SafetyLoggerCallback through info["cost"].
        if env_wrapper is None and self._env_has_support():
            env_wrapper = safety_wrapper
            if not has_monitor_kwargs:
                self.monitor_kwargs = dict(SAFETY_MONITOR_KWARGS)
        return hyperparams, env_wrapper, callbacks, vec_env_wrapper

    def _env_has_support(self) -> bool:
        """:return: whether the environment exposes a safe support a :class:`~sb3_safeq.SafetyWrapper` can read"""
        env = gym.make(self.env_name.gym_id, **self.env_kwargs)
        try:
            SafetyWrapper(env)
        except MissingSupportError:
            return False
        finally:
            env.close()
        return True

    def create_callbacks(self) -> None:
        super().create_callbacks()
        for index, callback in enumerate(self.callbacks):
            # Exactly rl-zoo3's own EvalCallback (not a user's subclass from the hyperparameter file).
            if type(callback) is EvalCallback:
                self.callbacks[index] = SafeEvalCallback(
                    callback.eval_env,
                    callback_on_new_best=callback.callback_on_new_best,
                    best_model_save_path=self.save_path,
                    n_eval_episodes=self.n_eval_episodes,
                    log_path=self.save_path,
                    eval_freq=callback.eval_freq,
                    deterministic=self.deterministic_eval,
                )
        logs_itself = issubclass(self._algo_class(), SafeSupportQ)
        if self.log_safety and not logs_itself:
            self.callbacks.append(SafetyLoggerCallback())

    def _algo_class(self) -> type:
        """:return: the class rl-zoo3 trains for ``--algo``"""
        return rl_zoo3.ALGOS[self.algo]


def use_safe_experiment_manager(log_safety: bool = True) -> None:
    """
    Make ``rl_zoo3.train.train()`` in this process use :class:`SafeExperimentManager`, and its Optuna trials
    :class:`SafeTrialEvalCallback` (built inside rl-zoo3's ``objective``, which has no hook).

    :param log_safety: add the :class:`~sb3_safeq.SafetyLoggerCallback` (False: ``--no-safety-logger``)
    """
    SafeExperimentManager.log_safety = log_safety
    rl_zoo3.train.ExperimentManager = SafeExperimentManager  # type: ignore[misc]
    rl_zoo3.exp_manager.TrialEvalCallback = SafeTrialEvalCallback  # type: ignore[misc]
