"""
Data collection inside the safe support: the part of SafeSupportQ that acts in the environment and stores the
transitions with their supports. It never switches on the kind of support: the kind object does what differs.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.type_aliases import (
    GymEnv,
    MaybeCallback,
    PyTorchObs,
    RolloutReturn,
    TrainFreq,
    TrainFrequencyUnit,
)
from stable_baselines3.common.utils import should_collect_more_steps
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.buffers import SupportStorage
from sb3_safeq.common.safety_record import EpisodesInProgress
from sb3_safeq.common.supports.base import InducedStep, SupportKind
from sb3_safeq.common.supports.errors import EmptySupportError, MissingSupportError
from sb3_safeq.common.supports.factory import make_support_kind
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper, UnsafeVisitError


class SupportCollectingAlgorithm(OffPolicyAlgorithm):
    """
    An off-policy algorithm whose every collected action lies in the current safe support: drawn from the behavior
    policy (warm-up, ``exploration="behavior"``), from the induced policy ``pi_Q`` or from a mixture, never from
    ``action_space.sample()``; each transition is stored with the supports of its observation and next observation.

    Subclasses set ``support_kind``, ``behavior_policy``, ``exploration``, ``mixture_weight`` and ``safety_counters``,
    ``_last_raw_supports = _last_supports = None`` in ``__init__``, and implement :meth:`current_alpha`.
    """

    support_kind: SupportKind
    behavior_policy: BehaviorPolicy
    exploration: str
    mixture_weight: float
    safety_counters: SafetyCounters
    # Each environment's episode in progress, saved with the model to reconcile a checkpoint with monitor.csv.
    episodes_in_progress: EpisodesInProgress | None = None
    # Supports of the current observations: raw (as the environment gives them) and in agent units.
    _last_raw_supports: np.ndarray | None
    _last_supports: np.ndarray | None

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """
        Add the :class:`SafetyWrapper` (inside ``Monitor``) when the environment lacks one, as SB3 adds ``Monitor``.

        :param env: the environment
        :param verbose: verbosity level
        :param monitor_wrapper: whether to add a ``Monitor`` wrapper
        :return: the vectorised environment
        """
        kind = make_support_kind(env.action_space)  # raises a clear error for unsupported action spaces
        if isinstance(env, VecEnv):
            if not all(env.env_is_wrapped(SafetyWrapper)):
                has_support = env.has_attr(kind.method_name)
                raise MissingSupportError(
                    "SafeSupportQ needs every sub-environment of a VecEnv wrapped with sb3_safeq.SafetyWrapper, "
                    "which carries the support of terminal observations through the auto-reset. "
                    + (
                        f"Your environments have {kind.method_name}(), so build the VecEnv with "
                        "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`."
                        if has_support
                        else f"Your environments also lack a `{kind.method_name}()` method giving the safe actions."
                    )
                )
        elif is_wrapped(env, SafetyWrapper):
            _check_no_action_wrapper_above(env)
        else:
            kind.find_method(env)  # raises a clear error when the environment exposes no support at all
            if verbose >= 1:
                print("Wrapping the env with a `SafetyWrapper`")
            env = SafetyWrapper(env)
        return OffPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """
        SB3's collection loop, with the step's transition stored and its safety record counted *before* the callbacks
        of that step run: a checkpoint taken at step N holds the transitions and the safety counters of steps
        1..N, and a callback that stops training leaves the model at the environment's current observation. The
        unsafe step that stops a strict :class:`SafetyWrapper` is counted too.

        :param env: the training environment
        :param callback: called at each step, after the transition is stored
        :param train_freq: how many steps (or episodes) to collect
        :param replay_buffer: the buffer that stores the transitions with their supports
        :param action_noise: unused by SafeSupportQ (its exploration stays inside the support); reset at episode ends
        :param learning_starts: number of steps of behavior-policy warm-up
        :param log_interval: dump the logs every ``log_interval`` episodes
        :return: the number of steps and episodes collected, and whether training goes on
        """
        try:
            return self._collect_steps(
                env, callback, train_freq, replay_buffer, action_noise, learning_starts, log_interval
            )
        except UnsafeVisitError as error:
            # The wrapper counted the step before raising; so does the model, or its counters would show no visit.
            self.safety_counters.update_from_infos([error.info])
            self._last_obs = None  # the environment moved on: the next `learn` starts from a reset
            raise
        except (EOFError, ConnectionResetError, BrokenPipeError) as error:
            self._last_obs = None
            if not isinstance(env, SubprocVecEnv):
                raise
            # A worker that raised (e.g. a strict SafetyWrapper's UnsafeVisitError) dies; SB3 then only sees a closed
            # pipe. Its own traceback is printed by the worker process above this one.
            raise RuntimeError(
                "A worker process of the SubprocVecEnv ended during a step (its traceback is printed above). With "
                "SafetyWrapper(strict=True) this is the UnsafeVisitError of the first unsafe visit, which "
                "model.safety_counters cannot count from another process; use DummyVecEnv to get the error itself."
            ) from error
        except BaseException:
            # Whatever failed (an environment, a callback, an empty support), the observation the model holds may no
            # longer be the environment's: a resumed `learn` starts from a reset rather than pair it with another
            # state's support.
            self._last_obs = None
            raise

    def _collect_steps(
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer,
        action_noise: ActionNoise | None,
        learning_starts: int,
        log_interval: int | None,
    ) -> RolloutReturn:
        """The loop of :meth:`collect_rollouts` (same arguments and result)."""
        self.policy.set_training_mode(False)
        if train_freq.frequency <= 0:
            raise ValueError(f"train_freq must collect at least one step or episode, got {train_freq}.")
        if env.num_envs > 1 and train_freq.unit != TrainFrequencyUnit.STEP:
            raise ValueError(
                f"train_freq in episodes needs a single environment, got {env.num_envs}: count train_freq in steps."
            )
        num_collected_steps, num_collected_episodes = 0, 0
        callback.on_rollout_start()
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions, buffer_actions = self._sample_action(learning_starts, action_noise, env.num_envs)
            new_obs, rewards, dones, infos = env.step(actions)
            assert not isinstance(new_obs, tuple)  # Tuple observation spaces are not supported (SB3's off-policy)
            self.num_timesteps += env.num_envs
            num_collected_steps += 1

            # The step's record is saved before any callback can checkpoint or stop (SB3 stores it after them).
            assert self.episodes_in_progress is not None  # created with the environment
            self.episodes_in_progress.update(self.safety_counters.update_from_infos(infos), dones)
            self._update_info_buffer(infos, dones)
            self._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for index in np.flatnonzero(dones):
                num_collected_episodes += 1
                self._episode_num += 1
                if action_noise is not None:
                    action_noise.reset(**({"indices": [int(index)]} if env.num_envs > 1 else {}))
                if log_interval is not None and self._episode_num % log_interval == 0:
                    self.dump_logs()

            callback.update_locals(locals())
            if not callback.on_step():  # only False stops, not None
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, False)
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, True)

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """
        Load a replay buffer saved with ``save_replay_buffer``, refusing one that stores no (or other) supports.
        Like every pickle, the file runs code when loaded: load only files you trust.

        :param path: the file
        :param truncate_last_traj: see SB3's ``load_replay_buffer``
        """
        super().load_replay_buffer(path, truncate_last_traj)
        buffer = self.replay_buffer
        expected_shape, _ = self.support_kind.storage_shape_and_dtype()
        if not isinstance(buffer, SupportStorage):
            self.replay_buffer = None
            raise ValueError(
                f"The replay buffer in {path!r} is a {type(buffer).__name__}, which stores no safe supports (e.g. a "
                "DQN or SAC buffer): SafeSupportQ's target needs the support of every next observation. Collect the "
                "data with SafeSupportQ (or fill a SafeReplayBuffer with `add(..., supports=...)`)."
            )
        same_spaces = buffer.action_space == self.action_space and buffer.observation_space == self.observation_space
        if not same_spaces or buffer.supports.shape[2:] != expected_shape:
            self.replay_buffer = None
            raise ValueError(
                f"The replay buffer in {path!r} was filled for the spaces {buffer.observation_space!r} / "
                f"{buffer.action_space!r} (supports of shape {buffer.supports.shape[2:]}), not for this model's "
                f"{self.observation_space!r} / {self.action_space!r} (supports of shape {expected_shape}): load a "
                "buffer saved from the same environment."
            )

    def current_alpha(self) -> float:
        """:return: the temperature of the induced policy at the current training progress"""
        raise NotImplementedError

    def _induced_step(self, observations: PyTorchObs, supports: th.Tensor, deterministic: bool) -> InducedStep:
        """
        :param observations: a batch of observations (tensors)
        :param supports: their non-empty supports in agent units
        :param deterministic: take the mode instead of sampling
        :return: the induced policy's actions (agent units), their Q-values and KL to ``beta``
        """
        raise NotImplementedError

    def _query_supports(self, indices: list[int] | None = None) -> np.ndarray:
        """:return: raw supports of the current observations of the given environments, read from the envs"""
        assert self.env is not None
        return self.support_kind.stack(self.env.env_method(self.support_kind.method_name, indices=indices))

    def _set_last_supports(self, raw_supports: np.ndarray) -> None:
        self._last_raw_supports = raw_supports
        self._last_supports = self.support_kind.to_agent(raw_supports)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        if reset_num_timesteps:
            self.safety_counters = SafetyCounters()
        if reset_num_timesteps or self._last_obs is None or getattr(self, "episodes_in_progress", None) is None:
            # The environments start new episodes (a model loaded from a file has no `_last_obs`).
            assert self.env is not None
            self.episodes_in_progress = EpisodesInProgress.new(self.env.num_envs)
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        # The environment sits at `_last_obs` now (fresh from reset, or where the last `learn` call stopped).
        self._set_last_supports(self._query_supports())
        return result

    def _batched_obs_tensor(self, observation: np.ndarray | dict[str, np.ndarray]) -> PyTorchObs:
        """Observations of all environments as a tensor batch shaped like replay-buffer samples."""
        assert self.env is not None
        n_envs = self.env.num_envs
        if isinstance(observation, dict):
            assert isinstance(self.observation_space, spaces.Dict)
            shapes = get_obs_shape(self.observation_space)
            assert isinstance(shapes, dict)
            return {
                key: th.as_tensor(np.asarray(value).reshape(n_envs, *shapes[key]), device=self.device)
                for key, value in observation.items()
            }
        shape = get_obs_shape(self.observation_space)
        assert isinstance(shape, tuple)
        return th.as_tensor(np.asarray(observation).reshape(n_envs, *shape), device=self.device)

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Draw the next actions from the behavior policy (warm-up, ``exploration="behavior"``), from the induced
        policy ``pi_Q``, or from a mixture: all supported on the current safe supports, never
        ``action_space.sample()``.

        :return: the actions for the environment and the actions to store (in agent units)
        """
        assert self._last_obs is not None and self._last_raw_supports is not None
        assert self._last_supports is not None
        kind = self.support_kind
        kind.check_not_empty(self._last_raw_supports, "The current state of environment {index}")
        if self.num_timesteps < learning_starts or self.exploration == "behavior":
            use_induced = np.zeros(n_envs, dtype=bool)
        elif self.exploration == "induced":
            use_induced = np.ones(n_envs, dtype=bool)
        else:
            use_induced = np.random.random(n_envs) < self.mixture_weight

        observations = self._batched_obs_tensor(self._last_obs)
        actions = None if use_induced.all() else self.behavior_policy.act(observations, self._last_raw_supports)
        if use_induced.any():
            supports = th.as_tensor(self._last_supports, device=self.device)
            step = self._induced_step(observations, supports, deterministic=False)
            induced_actions = kind.actions_to_env(step.actions)
            if actions is None:
                actions = induced_actions
            else:
                # One flag per environment, broadcast over the action's own axes.
                chosen = use_induced.reshape(-1, *([1] * (induced_actions.ndim - 1)))
                actions = np.where(chosen, induced_actions, actions)
        assert actions is not None
        actions = kind.clip_actions(actions, self._last_raw_supports)
        return actions, kind.actions_to_agent(actions)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store the transition with the supports of the observation and of the (terminal) next observation."""
        kind = self.support_kind
        next_raw_supports = kind.from_infos(infos)
        terminated = dones & ~np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        stuck = ~terminated & kind.empty(next_raw_supports)
        if stuck.any():
            # A non-terminal state without safe action: its soft value is -inf and no safe policy can go on.
            raise EmptySupportError(kind.empty_message(f"A state reached by environment {np.flatnonzero(stuck)[0]}"))

        assert isinstance(replay_buffer, SupportStorage) and self._last_supports is not None
        next_supports = kind.to_agent(next_raw_supports)
        replay_buffer.stage_supports(self._last_supports, next_supports)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

        # After an auto-reset `new_obs` starts a new episode; `info` held the terminal observation's support instead.
        done_indices = np.flatnonzero(dones)
        if done_indices.size > 0:
            next_raw_supports = next_raw_supports.copy()
            next_raw_supports[done_indices] = self._query_supports([int(index) for index in done_indices])
            self._set_last_supports(next_raw_supports)
        else:
            # The common step: the converted supports above are reused, not converted again.
            self._last_raw_supports, self._last_supports = next_raw_supports, next_supports


def _check_no_action_wrapper_above(env: gym.Env) -> None:
    """
    :param env: an environment wrapped with a :class:`SafetyWrapper`
    :raises ValueError: if a wrapper above the SafetyWrapper changes the actions: the supports it writes would be in
        the units of the actions below it, not of the agent's
    """
    current = env
    while isinstance(current, gym.Wrapper) and not isinstance(current, SafetyWrapper):
        if isinstance(current, gym.ActionWrapper) or current.action_space != current.env.action_space:
            raise ValueError(
                f"{type(current).__name__} changes the actions above the SafetyWrapper, whose supports are in the "
                "action units below it. Apply the SafetyWrapper outside every action wrapper, e.g. "
                f"`SafetyWrapper({type(current).__name__}(env, ...))`: it then reads the support through them."
            )
        current = current.env
