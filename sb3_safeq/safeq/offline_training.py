"""
Offline training: SafeSupportQ's gradient steps on a fixed dataset of safe behavior, with no environment step.

The dataset fills the replay buffer (supports and actions as online collection stores them, validated by the support
kind's gate), then ``train`` runs one gradient step at a time so that callbacks, logging, checkpoints and ``save`` /
``load`` behave as in online training. Offline, a *timestep* is a gradient step: ``num_timesteps`` counts them, so
a ``CheckpointCallback(save_freq=1000)`` saves every 1,000 gradient steps and learning-rate and temperature schedules
run over ``gradient_steps``. With ``behavior="estimated"``, behavior cloning fits ``beta`` first
(:mod:`sb3_safeq.safeq.behavior_cloning`) and estimates the supports of a dataset that has none.
"""

import time
from collections import deque
from typing import Any, TypeVar

from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import configure_logger

from sb3_safeq.common.behaviors.estimated import EstimatedBehavior
from sb3_safeq.offline import InvalidDatasetError, load_offline_dataset
from sb3_safeq.offline.replay import check_capacity, check_fillable, fill_replay_buffer, transitions_from_buffer
from sb3_safeq.safeq.behavior_cloning import cloning_steps_to_run, fit_behavior, with_estimated_supports
from sb3_safeq.safeq.collection import SupportCollectingAlgorithm

SelfOfflineTraining = TypeVar("SelfOfflineTraining", bound="OfflineTrainingAlgorithm")


class GradientStepProgressBar(ProgressBarCallback):
    """SB3's progress bar, advanced by one per gradient step (offline training needs no environment)."""

    def _on_step(self) -> bool:
        self.pbar.update(1)
        return True


class OfflineTrainingAlgorithm(SupportCollectingAlgorithm):
    """:class:`SupportCollectingAlgorithm` plus :meth:`learn_offline`, training on a fixed dataset."""

    def learn_offline(
        self: SelfOfflineTraining,
        dataset: Any,
        gradient_steps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 1000,
        tb_log_name: str = "SafeSupportQ_offline",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
        behavior_cloning_steps: int | None = None,
    ) -> SelfOfflineTraining:
        """
        Train on a fixed dataset of safe behavior, without a single environment step.

        The dataset *replaces* the replay buffer's contents; ``dataset=None`` trains on the buffer as it is (e.g.
        one restored with ``load_replay_buffer``). Afterwards ``learn()`` fine-tunes online from the same buffer.
        ``num_timesteps`` counts gradient steps here (see the module docstring); the safety counters are unchanged
        (nothing is collected).

        :param dataset: a ``minari.MinariDataset`` or the id of a local one, a
            :class:`~sb3_safeq.SafeReplayBuffer` or the path of one saved with ``save_replay_buffer`` (unpickled:
            trusted files only), a dict of arrays (``observations``, ``actions`` in environment units, ``rewards``,
            ``next_observations``, ``terminations``, ``truncations``, ``supports`` and ``next_supports`` as the
            environment gives them, optionally ``costs``), a :class:`~sb3_safeq.offline.SafeTransitions`, or None.
            Every action must lie inside its stored support. A dataset without supports is accepted only with
            ``behavior="estimated"``, which estimates them (no guarantee beyond the data: docs/offline.md)
        :param gradient_steps: number of gradient steps, each on a minibatch of ``batch_size`` transitions
        :param callback: callback(s) called after every gradient step (``on_step``); ``num_timesteps`` is then the
            number of gradient steps done
        :param log_interval: dump the logs every ``log_interval`` gradient steps (None: never)
        :param tb_log_name: the name of the run for TensorBoard logging
        :param reset_num_timesteps: start counting gradient steps from 0 (else continue from ``num_timesteps``)
        :param progress_bar: show a progress bar over the gradient steps (tqdm and rich)
        :param behavior_cloning_steps: ``behavior="estimated"`` only: gradient steps of behavior cloning that fit
            ``beta`` to the dataset before the offline training (logged as ``offline/bc_loss``; they do not count
            as timesteps). None: 2,000 when ``beta`` is not fitted yet, none when it is (e.g. after ``load``)
        :return: the trained model
        :raises InvalidDatasetError: for a dataset that does not fit the model or breaks the support contract
        """
        if int(gradient_steps) != gradient_steps or gradient_steps < 1:
            raise ValueError(f"gradient_steps must be an integer >= 1, got {gradient_steps!r}.")
        if log_interval is not None and log_interval < 1:
            raise ValueError(f"log_interval must be >= 1 or None, got {log_interval!r}.")
        behavior = self.behavior_policy
        estimated = isinstance(behavior, EstimatedBehavior)
        if behavior_cloning_steps is not None and not estimated:
            raise ValueError(
                f'behavior_cloning_steps applies to behavior="estimated" only; this model\'s behavior is {behavior!r}.'
            )
        cloning_steps = 0
        if isinstance(behavior, EstimatedBehavior):
            cloning_steps = cloning_steps_to_run(behavior, behavior_cloning_steps)
        buffer = self.replay_buffer
        data = None
        if dataset is not None:
            check_fillable(buffer)  # before reading a dataset that could not be written
            data = load_offline_dataset(
                dataset, self.support_kind, self.observation_space, supports_required=not estimated
            )
            check_capacity(buffer, len(data))  # before behavior cloning, and before the logger is reset
        assert buffer is not None
        if data is None and buffer.size() == 0:
            raise InvalidDatasetError("The replay buffer is empty: give learn_offline a dataset.")

        # The logger exists from here on: behavior cloning logs into it before the buffer is (re)filled.
        total_timesteps, callback = self._setup_offline_learn(
            int(gradient_steps), callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if isinstance(behavior, EstimatedBehavior):
            if cloning_steps > 0:
                cloned = transitions_from_buffer(buffer) if data is None else data
                fit_behavior(behavior, cloned, cloning_steps, self.logger, log_interval, self.num_timesteps)
            if data is not None and data.supports is None:
                data = with_estimated_supports(behavior, data)
        if data is not None:
            fill_replay_buffer(buffer, data)
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(gradient_steps=1, batch_size=self.batch_size)
            self.num_timesteps += 1
            callback.update_locals(locals())
            if not callback.on_step():  # only False stops, as in online training
                break
            if log_interval is not None and (self.num_timesteps - self._num_timesteps_at_start) % log_interval == 0:
                self.dump_logs()
        callback.on_training_end()
        return self

    def _setup_offline_learn(
        self,
        gradient_steps: int,
        callback: MaybeCallback,
        reset_num_timesteps: bool,
        tb_log_name: str,
        progress_bar: bool,
    ) -> tuple[int, BaseCallback]:
        """SB3's ``_setup_learn`` without its environment reset: offline training never touches the environment."""
        self.start_time = time.time_ns()
        if self.ep_info_buffer is None or reset_num_timesteps:
            self.ep_info_buffer = deque(maxlen=self._stats_window_size)
            self.ep_success_buffer = deque(maxlen=self._stats_window_size)
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._episode_num = 0
        total_timesteps = gradient_steps + self.num_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        if not self._custom_logger:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        if progress_bar:
            # SB3's own bar advances by the number of environments, which offline training may not have.
            callbacks = [] if callback is None else list(callback) if isinstance(callback, list) else [callback]
            callback = [*callbacks, GradientStepProgressBar()]
        return total_timesteps, self._init_callback(callback, progress_bar=False)
