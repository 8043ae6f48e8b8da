"""Safe-Support Q-Learning (SSQL) for discrete and continuous (Box) actions."""

import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import ConstantSchedule, get_parameters_by_name
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_safeq.common import squashed_box
from sb3_safeq.common.backup import induced_log_probs, induced_logits, soft_bellman_target
from sb3_safeq.common.behavior import BehaviorPolicy, DiscreteBehaviorPolicy, make_behavior
from sb3_safeq.common.bounds import BoxScaler, clip_into
from sb3_safeq.common.box_behavior import POINT_WIDTH, clamp_into
from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer, _SupportStorage
from sb3_safeq.common.callbacks import record_safety
from sb3_safeq.common.support import EmptySupportError, MissingSupportError
from sb3_safeq.common.support_spec import SupportSpec, support_spec
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper
from sb3_safeq.safeq.box_policies import (
    BoxCnnPolicy,
    BoxMlpPolicy,
    BoxMultiInputPolicy,
    BoxSafeSupportQPolicy,
    q_values_of_samples,
)
from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy

SelfSafeSupportQ = TypeVar("SelfSafeSupportQ", bound="SafeSupportQ")

EXPLORATION_MODES = ("behavior", "induced", "mixture")
EXTRACTIONS = ("forward_kl", "reverse_kl")
LOSSES = ("huber", "mse")
# The policy names resolve to the discrete classes before the action space is known; Box swaps them here.
_BOX_POLICY_OF = {MlpPolicy: BoxMlpPolicy, CnnPolicy: BoxCnnPolicy, MultiInputPolicy: BoxMultiInputPolicy}
# Actor statistic logged after each update, by action-space kind and extraction.
_ACTOR_STAT_NAMES = {
    (False, "forward_kl"): "actor_kl",  # KL(pi_Q || pi), exact
    (False, "reverse_kl"): "actor_kl",  # KL(pi || pi_Q), exact
    (True, "forward_kl"): "behavior_weights_ess",  # effective sample size of the weights / n_behavior_samples
    (True, "reverse_kl"): "actor_kl_to_behavior",  # KL(pi || beta), one-sample estimate
}


class SafeSupportQ(OffPolicyAlgorithm):
    """
    Safe-Support Q-Learning (SSQL): learning without unsafe exploration.

    Paper: Lim, Jeong, Lee, "Safe-Support Q-Learning: Learning without Unsafe Exploration", arXiv 2604.25379.

    Every action taken during training is drawn from a behavior policy ``beta`` supported on the safe actions of the
    current state (the environment's ``action_masks()`` for Discrete actions, its ``safe_action_bounds()`` box for
    Box actions), so no unsafe state is visited as long as ``beta``'s trajectories stay safe. The Q-function is
    trained with the KL-regularized Bellman target::

        y = r + gamma * (1 - terminated) * alpha * log E_{a' ~ beta(.|s')} exp(Q_target(s', a') / alpha)

    exactly (a masked log-sum-exp) for Discrete actions, and with ``n_behavior_samples`` draws from ``beta`` and twin
    critics for Box actions. A separate extraction head is trained towards the induced policy
    ``pi_Q ∝ beta * exp(Q / alpha)``, which has the same support as ``beta``; it is the policy to deploy (for Box
    actions a Gaussian squashed into each state's safe box, so it never leaves the box).
    ``alpha -> 0`` recovers masked Q-learning, ``alpha -> inf`` the evaluation of ``beta`` (expected SARSA).

    :param policy: the policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...); the names pick the
        Discrete or the Box variant from the action space
    :param env: the environment to learn from (if registered in Gymnasium, can be str). It must expose the safe
        actions through ``action_masks()`` (Discrete) or ``safe_action_bounds()`` (Box); it is wrapped with
        :class:`~sb3_safeq.SafetyWrapper` when needed. A ``VecEnv`` must already contain a ``SafetyWrapper`` in
        every sub-environment.
    :param learning_rate: learning rate of the critic and of the extraction head, constant or a function of the
        remaining progress (from 1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: number of steps collected with the behavior policy before learning starts
    :param batch_size: minibatch size of each gradient update
    :param tau: soft update coefficient of the target network ("Polyak update", 1 for a hard update)
    :param gamma: discount factor
    :param train_freq: update the model every ``train_freq`` steps, or a tuple like ``(5, "step")`` or
        ``(2, "episode")``
    :param gradient_steps: gradient steps after each rollout (``-1``: as many as environment steps collected)
    :param alpha: temperature of the KL regularisation (> 0), constant or a function of the remaining progress.
        It is in reward units: the smaller it is, the closer the policy is to the best safe one, and the larger, the
        closer to ``beta``.
    :param behavior: the behavior policy: ``"uniform"`` (uniform over the safe actions, or in the safe box), a
        :class:`~sb3_safeq.common.behavior.BehaviorPolicy` (e.g.
        :class:`~sb3_safeq.common.box_behavior.TruncatedGaussianBehavior` around your safe controller), or a
        function: ``(observations, masks) -> probabilities`` (numpy, batched; no mass outside the masks) for
        Discrete actions, ``(observations, low, high) -> torch.distributions.Distribution`` (inside the box) for Box
        actions; or the import path ``"package.module:name"`` of one of these (what an rl-zoo3 hyperparameter file
        can give, and what a saved model can rebuild without pickling code)
    :param exploration: which policy collects data after ``learning_starts``: ``"behavior"`` (``beta``, as in the
        paper), ``"induced"`` (``pi_Q``, same support, so exactly as safe) or ``"mixture"`` (each step, ``pi_Q``
        with probability ``mixture_weight``, else ``beta``)
    :param mixture_weight: probability of acting with ``pi_Q`` when ``exploration="mixture"``. For Box actions
        ``pi_Q`` is sampled by importance resampling: ``n_behavior_samples`` draws from ``beta`` reweighted by
        ``exp(Q / alpha)``
    :param extraction: how the extraction head is fitted to ``pi_Q``: ``"forward_kl"`` (default: cross-entropy to
        ``pi_Q``; for Box actions advantage-weighted regression on ``n_behavior_samples`` behavior draws, weights
        ``softmax(Q / alpha)``) or ``"reverse_kl"`` (minimise ``KL(pi || pi_Q)``: exact over the mask for Discrete
        actions, reparameterised as in SAC with ``log beta`` for Box actions)
    :param n_behavior_samples: number of draws from ``beta`` per state for the sampled soft value ``V(s')``, the
        forward-KL extraction and induced exploration (Box actions only; more is less biased and slower)
    :param twin_min: Box actions: take the minimum of the twin critics (else their mean) in the target, the
        extraction and induced exploration
    :param share_target_draws: Box actions, forward-KL extraction: fit the extraction head at the next
        observations, weighting the behavior draws the target already made there by the target Q-values it already
        computed, instead of drawing and evaluating ``n_behavior_samples`` new actions at the current observations.
        This saves the largest pass of a gradient step (the twin critics on ``batch_size x n_behavior_samples``
        rows), which matters with large networks; the head then follows the Polyak-averaged target critic, and
        terminal next observations are left out
    :param target_update_interval: update the target network every ``target_update_interval`` gradient steps (as
        SAC does; with ``tau=1`` this is a hard copy every so many updates, as DQN's target network)
    :param actor_update_interval: train the extraction head every ``actor_update_interval`` gradient steps (the
        critic never depends on the head, so a delayed head converges to the same policy; 2 cuts the cost of a
        gradient step by about a third)
    :param loss: critic regression loss, ``"mse"`` (default) or ``"huber"``. The soft Bellman target is an
        expectation over next states; with stochastic transitions a Huber loss regresses toward the *median* of the
        sampled targets once TD errors exceed 1 (e.g. a rare terminal goal among costly continuations), which biases
        the critic away from ``Q*_alpha`` (slippery cliff walking, 30k steps, 5 seeds: mean ``|Q - Q*_alpha|`` where
        the soft-optimal policy goes 40.3 with Huber, 4.1 with MSE; docs/benchmarks.md). Huber only makes sense
        against heavy-tailed reward noise.
    :param max_grad_norm: maximum norm for gradient clipping
    :param replay_buffer_class: replay buffer class; must store supports (default: :class:`SafeReplayBuffer`, or
        :class:`SafeDictReplayBuffer` for Dict observations)
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: memory-efficient replay buffer variant (see SB3's ``ReplayBuffer``)
    :param stats_window_size: window size of the rollout logging
    :param tensorboard_log: log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments for the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, ...) on which the code should run; ``"auto"`` uses the GPU if available
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: SafeSupportQPolicy | BoxSafeSupportQPolicy
    support: SupportSpec
    behavior_policy: BehaviorPolicy
    alpha_schedule: Schedule

    def __init__(
        self,
        policy: str | type[SafeSupportQPolicy] | type[BoxSafeSupportQPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 5e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 64,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        alpha: float | Schedule = 0.05,
        behavior: str | BehaviorPolicy | Callable[..., Any] = "uniform",
        exploration: str = "behavior",
        mixture_weight: float = 0.5,
        extraction: str = "forward_kl",
        n_behavior_samples: int = 16,
        twin_min: bool = True,
        share_target_draws: bool = False,
        target_update_interval: int = 1,
        actor_update_interval: int = 1,
        loss: str = "mse",
        max_grad_norm: float = 10.0,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        _check_hyperparameters(alpha, exploration, mixture_weight, loss, target_update_interval, tau, max_grad_norm)
        if actor_update_interval < 1:
            raise ValueError(f"actor_update_interval={actor_update_interval} must be >= 1 (gradient steps).")
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction={extraction!r} is invalid: choose one of {EXTRACTIONS}.")
        if not isinstance(n_behavior_samples, (int, np.integer)) or n_behavior_samples < 1:
            raise ValueError(
                f"n_behavior_samples={n_behavior_samples!r} must be an integer >= 1 (draws from the behavior policy "
                "per state; 16 is a good start)."
            )
        if replay_buffer_class is not None and not issubclass(replay_buffer_class, _SupportStorage):
            raise ValueError(
                f"replay_buffer_class={replay_buffer_class.__name__} does not store safe supports. Use "
                "sb3_safeq.SafeReplayBuffer / SafeDictReplayBuffer (the default), or a subclass of them."
            )
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Discrete, spaces.Box),
            support_multi_env=True,
        )
        self.alpha = alpha
        self.behavior = behavior
        self.exploration = exploration
        self.mixture_weight = mixture_weight
        self.extraction = extraction
        self.n_behavior_samples = int(n_behavior_samples)
        self.twin_min = twin_min
        self.share_target_draws = share_target_draws
        self.target_update_interval = target_update_interval
        self.actor_update_interval = actor_update_interval
        self.loss = loss
        self.max_grad_norm = max_grad_norm
        self.safety_counters = SafetyCounters()
        # Supports of the current observations: raw (masks; boxes in action units) and in agent units.
        self._last_raw_supports: np.ndarray | None = None
        self._last_supports: np.ndarray | None = None
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """
        Add the :class:`SafetyWrapper` (inside ``Monitor``) when the environment lacks one, as SB3 adds ``Monitor``.

        :param env: the environment
        :param verbose: verbosity level
        :param monitor_wrapper: whether to add a ``Monitor`` wrapper
        :return: the vectorised environment
        """
        spec = support_spec(env.action_space)  # raises a clear error for unsupported action spaces
        if isinstance(env, VecEnv):
            if not all(env.env_is_wrapped(SafetyWrapper)):
                has_support = env.has_attr(spec.method_name)
                raise MissingSupportError(
                    "SafeSupportQ needs every sub-environment of a VecEnv wrapped with sb3_safeq.SafetyWrapper, "
                    "which carries the support of terminal observations through the auto-reset. "
                    + (
                        f"Your environments have {spec.method_name}(), so build the VecEnv with "
                        "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`."
                        if has_support
                        else f"Your environments also lack a `{spec.method_name}()` method giving the safe actions."
                    )
                )
        elif not is_wrapped(env, SafetyWrapper):
            spec.find_method(env)  # raises a clear error when the environment exposes no support at all
            if verbose >= 1:
                print("Wrapping the env with a `SafetyWrapper`")
            env = SafetyWrapper(env)
        return OffPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    @property
    def _scaler(self) -> BoxScaler:
        """The map between action units and ``[-1, 1]`` (Box actions)."""
        assert isinstance(self.policy, BoxSafeSupportQPolicy)
        return self.policy.scaler

    @property
    def _discrete_behavior(self) -> DiscreteBehaviorPolicy:
        """The behavior policy, with its full table of log-probabilities (Discrete actions)."""
        assert isinstance(self.behavior_policy, DiscreteBehaviorPolicy)
        return self.behavior_policy

    @property
    def is_box(self) -> bool:
        """:return: whether the actions are continuous (``Box``), with safe boxes as supports"""
        return isinstance(self.action_space, spaces.Box)

    def _setup_model(self) -> None:
        self.support = support_spec(self.action_space)
        self._check_policy_class()
        if self.replay_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.replay_buffer_class = SafeDictReplayBuffer if dict_obs else SafeReplayBuffer
        super()._setup_model()
        self._create_aliases()
        self.behavior_policy = make_behavior(self.behavior, self.action_space)
        self.alpha_schedule = self.alpha if callable(self.alpha) else ConstantSchedule(float(self.alpha))
        self._actor_stat_name = _ACTOR_STAT_NAMES[(self.is_box, self.extraction)]
        # Parameter lists of the target update, built once: it runs after every gradient step.
        online, target = (self.critic, self.critic_target) if self.is_box else (self.q_net, self.q_net_target)
        self._online_parameters: list[th.Tensor] = list(online.parameters())
        self._target_parameters: list[th.Tensor] = list(target.parameters())
        self._online_buffers = get_parameters_by_name(online, ["running_"])
        self._target_buffers = get_parameters_by_name(target, ["running_"])

    def _check_policy_class(self) -> None:
        """Swap the policy names' Discrete classes for their Box twins, and refuse a class of the wrong kind."""
        if self.is_box:
            self.policy_class = _BOX_POLICY_OF.get(self.policy_class, self.policy_class)  # type: ignore[arg-type]
        expected = BoxSafeSupportQPolicy if self.is_box else SafeSupportQPolicy
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, expected)):
            raise ValueError(
                f"The policy class {self.policy_class!r} does not fit the action space {self.action_space!r}: use "
                f"'MlpPolicy', 'CnnPolicy' or 'MultiInputPolicy', or a subclass of {expected.__name__}."
            )

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        if isinstance(self.policy, BoxSafeSupportQPolicy):
            self.critic = self.policy.critic
            self.critic_target = self.policy.critic_target
        else:
            self.q_net = self.policy.q_net
            self.q_net_target = self.policy.q_net_target

    def current_alpha(self) -> float:
        """
        :return: the temperature at the current training progress
        """
        alpha = float(self.alpha_schedule(self._current_progress_remaining))
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"The alpha schedule returned {alpha}; the temperature must stay finite and > 0.")
        return alpha

    # ------------------------------------------------------------------ acting

    def _query_supports(self, indices: list[int] | None = None) -> np.ndarray:
        """:return: raw supports of the current observations of the given environments, read from the envs"""
        assert self.env is not None
        return self.support.stack(self.env.env_method(self.support.method_name, indices=indices))

    def _set_last_supports(self, raw_supports: np.ndarray) -> None:
        self._last_raw_supports = raw_supports
        self._last_supports = self.support.to_agent(raw_supports)

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

        :return: the actions for the environment and the actions to store (scaled to ``[-1, 1]`` for Box)
        """
        assert self._last_obs is not None and self._last_raw_supports is not None
        empty = self.support.empty(self._last_raw_supports)
        if empty.any():
            where = f"The current state of environment {int(np.flatnonzero(empty)[0])}"
            raise EmptySupportError(self.support.empty_message(where))
        if self.num_timesteps < learning_starts or self.exploration == "behavior":
            use_induced = np.zeros(n_envs, dtype=bool)
        elif self.exploration == "induced":
            use_induced = np.ones(n_envs, dtype=bool)
        else:
            use_induced = np.random.random(n_envs) < self.mixture_weight

        observations = self._batched_obs_tensor(self._last_obs)
        if self.is_box:
            return self._sample_box_action(observations, use_induced)
        actions = np.zeros(n_envs, dtype=np.int64)
        if not use_induced.all():
            actions = self.behavior_policy.act(observations, self._last_raw_supports)
        if use_induced.any():
            assert self._last_supports is not None
            with th.no_grad():
                masks = th.as_tensor(self._last_supports, device=self.device)
                log_behavior = self._discrete_behavior.log_probs(observations, masks)
                logits = induced_logits(self.q_net(observations), log_behavior, self.current_alpha())
                induced_actions = th.distributions.Categorical(logits=logits).sample().cpu().numpy()
            actions = np.where(use_induced, induced_actions, actions)
        return actions, actions

    def _sample_box_action(self, observations: PyTorchObs, use_induced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._last_raw_supports is not None and self._last_supports is not None
        raw_boxes = self._last_raw_supports
        actions = np.zeros(raw_boxes[:, 0].shape, dtype=raw_boxes.dtype)
        if not use_induced.all():
            actions = self.behavior_policy.act(observations, raw_boxes)
        if use_induced.any():
            boxes = th.as_tensor(self._last_supports, device=self.device)
            induced_actions = self._scaler.to_env(self._induced_box_actions(observations, boxes).cpu().numpy())
            actions = np.where(use_induced[:, None], induced_actions, actions)
        # Clipping into the box as the environment gave it makes the unit conversions' rounding harmless.
        actions = clip_into(actions, raw_boxes)
        return actions, self._scaler.to_agent(actions)

    def _induced_box_actions(self, observations: PyTorchObs, boxes: th.Tensor) -> th.Tensor:
        """
        Sample ``pi_Q`` by importance resampling: ``n_behavior_samples`` draws from ``beta``, one picked with
        probability ``softmax(Q / alpha)``. Same support as ``beta``.

        :param observations: observations
        :param boxes: safe boxes in agent units
        :return: one action per observation, agent units
        """
        with th.no_grad():
            samples = self._behavior_samples(observations, boxes, self.n_behavior_samples)
            q_values = self._reduce_twins(q_values_of_samples(self.critic, observations, samples))
            choice = th.distributions.Categorical(logits=q_values / self.current_alpha()).sample()
            return samples[th.arange(samples.shape[0], device=samples.device), choice]

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
        next_raw_supports = self.support.from_infos(infos)
        self.safety_counters.update_from_infos(infos)
        terminated = dones & ~np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        stuck = ~terminated & self.support.empty(next_raw_supports)
        if stuck.any():
            # A non-terminal state without safe action: its soft value is -inf and no safe policy can go on.
            where = f"A state reached by environment {int(np.flatnonzero(stuck)[0])}"
            raise EmptySupportError(self.support.empty_message(where))

        assert isinstance(replay_buffer, _SupportStorage) and self._last_supports is not None
        next_supports = self.support.to_agent(next_raw_supports)
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

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
        safe_bounds: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the action of the extracted (deployable) policy.

        :param observation: the input observation
        :param state: unused (kept for the SB3 API)
        :param episode_start: unused (kept for the SB3 API)
        :param deterministic: take the most likely safe action (Box: the squashed mean) instead of sampling
        :param action_masks: Discrete actions: safe-action masks; with them the action is always inside them
        :param safe_bounds: Box actions: the safe box ``(low, high)`` of each observation, in action units (e.g.
            ``env.safe_action_bounds()``); with it the action is always inside the box
        :return: the action and the (unchanged) state
        """
        if isinstance(self.policy, BoxSafeSupportQPolicy):
            if action_masks is not None:
                raise ValueError("action_masks are for Discrete actions; for Box actions pass safe_bounds=(low, high).")
            return self.policy.predict(observation, state, episode_start, deterministic, safe_bounds=safe_bounds)
        if safe_bounds is not None:
            raise ValueError("safe_bounds are for Box actions; for Discrete actions pass action_masks.")
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    # ---------------------------------------------------------------- learning

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.policy.critic_optimizer, self.policy.actor_optimizer])
        alpha = self.current_alpha()
        critic_parameters = self._online_parameters
        # Statistics stay tensors until the end: one host synchronisation per call, not per gradient step.
        critic_stats = th.zeros(2, device=self.device)
        actor_stats = th.zeros(2, device=self.device)
        n_actor_updates = 0

        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            update_actor = (self._n_updates + step + 1) % self.actor_update_interval == 0
            losses = self._box_losses if self.is_box else self._discrete_losses
            critic_loss, q_mean, actor_terms = losses(data, alpha, update_actor)

            # The actor's loss shares the backward pass when it does not depend on the critic's parameters.
            loss = critic_loss if actor_terms is None else critic_loss + actor_terms[0]
            self.policy.critic_optimizer.zero_grad()
            if update_actor:
                self.policy.actor_optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(critic_parameters, self.max_grad_norm)
            self.policy.critic_optimizer.step()
            critic_stats += th.stack([critic_loss.detach(), q_mean])
            if update_actor:
                if actor_terms is None:
                    # Reverse KL on Box actions differentiates through the (just updated) critic, as SAC does; the
                    # critic's gradients this leaves behind are cleared before its next step.
                    actor_terms = self._box_reverse_kl_loss(data, alpha)
                    actor_terms[0].backward()
                th.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
                self.policy.actor_optimizer.step()
                n_actor_updates += 1
                actor_stats += th.stack([actor_terms[0].detach(), actor_terms[1]])
            if (self._n_updates + step + 1) % self.target_update_interval == 0:
                self._update_target_network()

        critic_loss_mean, q_mean_value = (critic_stats / gradient_steps).tolist()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", critic_loss_mean)
        if n_actor_updates > 0:
            actor_loss_mean, actor_stat_mean = (actor_stats / n_actor_updates).tolist()
            self.logger.record("train/actor_loss", actor_loss_mean)
            self.logger.record(f"train/{self._actor_stat_name}", actor_stat_mean)
        self.logger.record("train/q_values", q_mean_value)
        self.logger.record("train/alpha", alpha)

    def _discrete_losses(
        self, data: Any, alpha: float, update_actor: bool
    ) -> tuple[th.Tensor, th.Tensor, tuple[th.Tensor, th.Tensor] | None]:
        """
        :return: the critic loss, the mean Q-value (detached) and, when the actor is updated, its loss and statistic
        """
        with th.no_grad():
            next_q_values = self.q_net_target(data.next_observations)
            next_log_behavior = self._discrete_behavior.log_probs(data.next_observations, data.next_supports)
            targets = soft_bellman_target(data.rewards, data.dones, next_q_values, next_log_behavior, alpha, self.gamma)
        q_values = self.q_net(data.observations)
        current_q = th.gather(q_values, dim=1, index=data.actions.long())
        critic_loss = self._critic_loss(current_q, targets)
        if not update_actor:
            return critic_loss, current_q.detach().mean(), None

        # The target pi_Q is detached, so the actor's loss touches only the actor's parameters.
        with th.no_grad():
            log_behavior = self._discrete_behavior.log_probs(data.observations, data.supports)
            target_log_probs = induced_log_probs(q_values.detach(), log_behavior, alpha)
            target_probs = target_log_probs.exp()
        logits = self.actor(data.observations)
        if self.extraction == "forward_kl":
            # Cross-entropy of the full softmax to pi_Q (zero outside the support): the unmasked head also learns to
            # avoid unsafe actions.
            target_entropy = -(target_probs * target_log_probs.masked_fill(target_probs == 0, 0.0)).sum(-1)
            cross_entropy = -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1)
            actor_loss = cross_entropy.mean()
            kl = (cross_entropy - target_entropy).mean().detach()
        else:
            # KL(pi || pi_Q) over the support: the masked softmax of the head (outside the mask pi_Q is zero).
            masked_log_probs = F.log_softmax(logits.masked_fill(~data.supports, -th.inf), dim=-1)
            probs = masked_log_probs.exp()
            log_ratio = (masked_log_probs - target_log_probs).masked_fill(~data.supports, 0.0)
            actor_loss = (probs * log_ratio).sum(dim=-1).mean()
            kl = actor_loss.detach()
        return critic_loss, current_q.detach().mean(), (actor_loss, kl)

    def _reduce_twins(self, q_values: th.Tensor) -> th.Tensor:
        """:param q_values: ``(n_critics, ...)`` :return: their minimum (``twin_min``) or mean"""
        return q_values.min(dim=0).values if self.twin_min else q_values.mean(dim=0)

    def _behavior_samples(self, observations: PyTorchObs, boxes: th.Tensor, n_samples: int) -> th.Tensor:
        """
        :param observations: observations
        :param boxes: safe boxes in agent units ``(batch, 2, action_dim)``, non-empty
        :param n_samples: draws per observation
        :return: draws from ``beta`` in agent units, ``(batch, n_samples, action_dim)``
        """
        scaler = self._scaler
        env_samples = self.behavior_policy.sample(observations, scaler.to_env_tensor(boxes), n_samples)
        return clamp_into(scaler.to_agent_tensor(env_samples), boxes)

    def _box_losses(
        self, data: Any, alpha: float, update_actor: bool
    ) -> tuple[th.Tensor, th.Tensor, tuple[th.Tensor, th.Tensor] | None]:
        """
        :return: the critic loss, the mean Q-value (detached) and, for the forward-KL extraction when the actor is
            updated, its loss and statistic (the reverse-KL loss needs the updated critic: computed after its step)
        """
        n_samples = self.n_behavior_samples
        with th.no_grad():
            # A terminal next state may have an empty box: its value is multiplied by 0, any box does to sample.
            next_boxes = _fill_empty_boxes(data.next_supports)
            next_actions = self._behavior_samples(data.next_observations, next_boxes, n_samples)
            next_q = self._reduce_twins(q_values_of_samples(self.critic_target, data.next_observations, next_actions))
            # V(s') = alpha * log mean_i exp(Q(s', a_i) / alpha), a_i ~ beta(.|s')
            next_values = alpha * (th.logsumexp(next_q / alpha, dim=1, keepdim=True) - math.log(n_samples))
            targets = data.rewards + (1.0 - data.dones) * self.gamma * next_values
        current_q = self.critic(data.observations, data.actions)
        critic_loss = sum(self._critic_loss(q, targets) for q in current_q)
        assert isinstance(critic_loss, th.Tensor)
        q_mean = current_q[0].detach().mean()
        if not update_actor or self.extraction == "reverse_kl":
            return critic_loss, q_mean, None

        if self.share_target_draws:
            # pi_Q at s' by importance resampling of the target's own draws: softmax(Q_target / alpha).
            observations, boxes, samples, sample_q = data.next_observations, next_boxes, next_actions, next_q
            live = 1.0 - data.dones[:, 0]  # a terminal s' has no action to learn (and maybe no box)
        else:
            observations, boxes = data.observations, data.supports
            with th.no_grad():
                samples = self._behavior_samples(observations, boxes, n_samples)
                sample_q = self._reduce_twins(q_values_of_samples(self.critic, observations, samples))
            live = th.ones(samples.shape[0], device=samples.device)
        with th.no_grad():
            weights = th.softmax(sample_q / alpha, dim=1)
            n_live = live.sum().clamp(min=1.0)
            effective_fraction = ((1.0 / (weights**2).sum(dim=1)) * live).sum() / n_live / n_samples
        mean, log_std = self.actor(observations)
        log_probs = squashed_box.log_prob(samples, mean, log_std, boxes)
        actor_loss = -((weights * log_probs).sum(dim=1) * live).sum() / n_live
        return critic_loss, q_mean, (actor_loss, effective_fraction)

    def _box_reverse_kl_loss(self, data: Any, alpha: float) -> tuple[th.Tensor, th.Tensor]:
        """
        ``E_{a ~ pi}[alpha * (log pi(a|s) - log beta(a|s)) - Q(s, a)]``, reparameterised: the KL-regularized
        objective whose minimiser is ``pi_Q``.

        :return: the loss and the estimate of ``KL(pi || beta)``
        """
        mean, log_std = self.actor(data.observations)
        actions, log_pi = squashed_box.rsample(mean, log_std, data.supports)
        log_beta = self._behavior_log_prob(data.observations, data.supports, actions)
        q_values = self._reduce_twins(th.stack(self.critic(data.observations, actions)))[:, 0]
        kl = log_pi - log_beta
        return (alpha * kl - q_values).mean(), kl.detach().mean()

    def _behavior_log_prob(self, observations: PyTorchObs, boxes: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :param observations: observations
        :param boxes: safe boxes in agent units ``(batch, 2, action_dim)``
        :param actions: in-box actions in agent units ``(batch, action_dim)``
        :return: ``log beta(a|s)`` as a density in agent units, ``(batch,)``
        """
        scaler = self._scaler
        env_boxes = scaler.to_env_tensor(boxes)
        env_actions = clamp_into(scaler.to_env_tensor(actions), env_boxes)
        log_density = self.behavior_policy.log_prob(observations, env_boxes, env_actions.unsqueeze(1))[:, 0]
        # Change of variables to agent units, over the axes that carry density.
        has_volume = (boxes[:, 1] - boxes[:, 0]) > POINT_WIDTH
        log_half_width = scaler.log_half_width_tensor(log_density.device).to(log_density.dtype)
        return log_density + (has_volume * log_half_width).sum(dim=-1)

    def _update_target_network(self) -> None:
        """
        Polyak update ``target <- (1 - tau) * target + tau * online``. One fused ``_foreach`` call instead of SB3's
        ``polyak_update`` loop (two kernels per tensor): it runs after every gradient step.
        """
        with th.no_grad():
            th._foreach_lerp_(self._target_parameters, self._online_parameters, self.tau)
            if self._target_buffers:
                # Running statistics of batch normalisation are copied, not averaged (SB3 issue #996).
                th._foreach_copy_(self._target_buffers, self._online_buffers)

    def _critic_loss(self, current_q: th.Tensor, targets: th.Tensor) -> th.Tensor:
        if self.loss == "huber":
            return F.smooth_l1_loss(current_q, targets)
        return F.mse_loss(current_q, targets)

    def dump_logs(self) -> None:
        record_safety(self.logger, self.safety_counters)
        super().dump_logs()

    def learn(
        self: SelfSafeSupportQ,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SafeSupportQ",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSafeSupportQ:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "q_net",
            "q_net_target",
            "critic",
            "critic_target",
            "actor",
            "behavior_policy",
            "support",
            "_online_parameters",
            "_target_parameters",
            "_online_buffers",
            "_target_buffers",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.critic_optimizer", "policy.actor_optimizer"], []


def _fill_empty_boxes(boxes: th.Tensor) -> th.Tensor:
    """
    :param boxes: boxes ``(batch, 2, action_dim)`` in agent units
    :return: the boxes with each empty one replaced by the whole action space ``[-1, 1]``
    """
    empty = (boxes[:, 0] > boxes[:, 1]).any(dim=-1)
    whole = th.stack([-th.ones_like(boxes[:, 0]), th.ones_like(boxes[:, 0])], dim=1)
    return th.where(empty[:, None, None], whole, boxes)


def _check_hyperparameters(
    alpha: float | Callable[[float], float],
    exploration: str,
    mixture_weight: float,
    loss: str,
    target_update_interval: int,
    tau: float,
    max_grad_norm: float,
) -> None:
    """Fail loudly, at construction, on hyperparameters that cannot work."""
    if not callable(alpha) and (not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0):
        raise ValueError(
            f"alpha={alpha!r} is invalid: the KL temperature must be a finite number > 0 (or a schedule). "
            "Small values (e.g. 0.01-0.1 times the reward scale) give a near-greedy safe policy, large ones stay "
            "close to the behavior policy."
        )
    if exploration not in EXPLORATION_MODES:
        raise ValueError(f"exploration={exploration!r} is invalid: choose one of {EXPLORATION_MODES}.")
    if not 0.0 <= mixture_weight <= 1.0:
        raise ValueError(f"mixture_weight={mixture_weight!r} must be a probability in [0, 1].")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is invalid: choose one of {LOSSES}.")
    if target_update_interval < 1:
        raise ValueError(f"target_update_interval={target_update_interval} must be >= 1 (gradient steps).")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau={tau} must be in (0, 1] (1 is a hard target update).")
    if max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm={max_grad_norm} must be > 0.")
