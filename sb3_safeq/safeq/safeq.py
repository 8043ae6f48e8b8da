"""Safe-Support Q-Learning (SSQL) for discrete actions."""

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

from sb3_safeq.common.backup import induced_log_probs, induced_logits, soft_bellman_target
from sb3_safeq.common.behavior import BehaviorPolicy, ProbabilityFn, make_behavior
from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer, _SupportStorage
from sb3_safeq.common.callbacks import record_safety
from sb3_safeq.common.support import (
    ACTION_MASKS_METHOD,
    EmptySupportError,
    MissingSupportError,
    check_supported_action_space,
    empty_support_message,
    get_action_mask_fn,
    masks_from_infos,
    stack_masks,
)
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper
from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy

SelfSafeSupportQ = TypeVar("SelfSafeSupportQ", bound="SafeSupportQ")

EXPLORATION_MODES = ("behavior", "induced", "mixture")
LOSSES = ("huber", "mse")


class SafeSupportQ(OffPolicyAlgorithm):
    """
    Safe-Support Q-Learning (SSQL): learning without unsafe exploration.

    Paper: Lim, Jeong, Lee, "Safe-Support Q-Learning: Learning without Unsafe Exploration", arXiv 2604.25379.

    Every action taken during training is drawn from a behavior policy ``beta`` supported on the safe actions of the
    current state (the environment's ``action_masks()``), so no unsafe state is visited as long as ``beta``'s
    trajectories stay safe. The Q-function is trained with the KL-regularized Bellman target::

        y = r + gamma * (1 - terminated) * alpha * log sum_a' beta(a'|s') exp(Q_target(s', a') / alpha)

    and a separate extraction head (a categorical actor) is trained by cross-entropy towards the induced policy
    ``pi_Q ∝ beta * exp(Q / alpha)``, which has the same support as ``beta`` and is the policy to deploy.
    ``alpha -> 0`` recovers masked Q-learning, ``alpha -> inf`` the evaluation of ``beta`` (expected SARSA).

    :param policy: the policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...)
    :param env: the environment to learn from (if registered in Gymnasium, can be str). It must expose the safe
        actions through ``action_masks()``; it is wrapped with :class:`~sb3_safeq.SafetyWrapper` when needed.
        A ``VecEnv`` must already contain a ``SafetyWrapper`` in every sub-environment.
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
    :param behavior: the behavior policy: ``"uniform"`` (uniform over the safe actions), a
        :class:`~sb3_safeq.common.behavior.BehaviorPolicy`, or a function ``(observations, masks) -> probabilities``
        (numpy, batched) that puts no mass outside the masks
    :param exploration: which policy collects data after ``learning_starts``: ``"behavior"`` (``beta``, as in the
        paper), ``"induced"`` (``pi_Q``, same support, so exactly as safe) or ``"mixture"`` (each step, ``pi_Q``
        with probability ``mixture_weight``, else ``beta``)
    :param mixture_weight: probability of acting with ``pi_Q`` when ``exploration="mixture"``
    :param target_update_interval: update the target network every ``target_update_interval`` gradient steps (as
        SAC does; with ``tau=1`` this is a hard copy every so many updates, as DQN's target network)
    :param actor_update_interval: train the extraction head every ``actor_update_interval`` gradient steps (the
        critic never depends on the head, so a delayed head converges to the same policy; 2 cuts the cost of a
        gradient step by about a third)
    :param loss: critic regression loss, ``"huber"`` or ``"mse"``
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
    policy: SafeSupportQPolicy
    behavior_policy: BehaviorPolicy
    alpha_schedule: Schedule

    def __init__(
        self,
        policy: str | type[SafeSupportQPolicy],
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
        behavior: str | BehaviorPolicy | ProbabilityFn = "uniform",
        exploration: str = "behavior",
        mixture_weight: float = 0.5,
        target_update_interval: int = 1,
        actor_update_interval: int = 1,
        loss: str = "huber",
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
            supported_action_spaces=(spaces.Discrete,),
            support_multi_env=True,
        )
        self.alpha = alpha
        self.behavior = behavior
        self.exploration = exploration
        self.mixture_weight = mixture_weight
        self.target_update_interval = target_update_interval
        self.actor_update_interval = actor_update_interval
        self.loss = loss
        self.max_grad_norm = max_grad_norm
        self.safety_counters = SafetyCounters()
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
        check_supported_action_space(env.action_space)
        if isinstance(env, VecEnv):
            if not all(env.env_is_wrapped(SafetyWrapper)):
                has_masks = env.has_attr(ACTION_MASKS_METHOD)
                raise MissingSupportError(
                    "SafeSupportQ needs every sub-environment of a VecEnv wrapped with sb3_safeq.SafetyWrapper, "
                    "which carries the mask of terminal observations through the auto-reset. "
                    + (
                        "Your environments have action_masks(), so build the VecEnv with "
                        "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`."
                        if has_masks
                        else "Your environments also lack an `action_masks()` method giving the safe actions."
                    )
                )
        elif not is_wrapped(env, SafetyWrapper):
            get_action_mask_fn(env)  # raises a clear error when the environment has no masks at all
            if verbose >= 1:
                print("Wrapping the env with a `SafetyWrapper`")
            env = SafetyWrapper(env)
        return OffPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _setup_model(self) -> None:
        if self.replay_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.replay_buffer_class = SafeDictReplayBuffer if dict_obs else SafeReplayBuffer
        super()._setup_model()
        self._create_aliases()
        self.behavior_policy = make_behavior(self.behavior, self.action_space)
        self.alpha_schedule = self.alpha if callable(self.alpha) else ConstantSchedule(float(self.alpha))
        # Parameter lists of the target update, built once: it runs after every gradient step.
        self._online_parameters = list(self.q_net.parameters())
        self._target_parameters = list(self.q_net_target.parameters())
        self._online_buffers = get_parameters_by_name(self.q_net, ["running_"])
        self._target_buffers = get_parameters_by_name(self.q_net_target, ["running_"])

    def _create_aliases(self) -> None:
        self.q_net = self.policy.q_net
        self.q_net_target = self.policy.q_net_target
        self.actor = self.policy.actor

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
        assert self.env is not None
        return stack_masks(self.env.env_method(ACTION_MASKS_METHOD, indices=indices), int(self.action_space.n))

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
        self._last_supports = self._query_supports()
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
        policy ``pi_Q``, or from a mixture: all supported on the current safe masks, never ``action_space.sample()``.
        """
        assert self._last_obs is not None and self._last_supports is not None
        if not self._last_supports.any(axis=1).all():
            env_index = int(np.flatnonzero(~self._last_supports.any(axis=1))[0])
            raise EmptySupportError(empty_support_message(f"The current state of environment {env_index}"))
        if self.num_timesteps < learning_starts or self.exploration == "behavior":
            use_induced = np.zeros(n_envs, dtype=bool)
        elif self.exploration == "induced":
            use_induced = np.ones(n_envs, dtype=bool)
        else:
            use_induced = np.random.random(n_envs) < self.mixture_weight

        observations = self._batched_obs_tensor(self._last_obs)
        actions = np.zeros(n_envs, dtype=np.int64)
        if not use_induced.all():
            actions = self.behavior_policy.act(observations, self._last_supports)
        if use_induced.any():
            with th.no_grad():
                masks = th.as_tensor(self._last_supports, device=self.device)
                logits = induced_logits(
                    self.q_net(observations), self.behavior_policy.log_probs(observations, masks), self.current_alpha()
                )
                induced_actions = th.distributions.Categorical(logits=logits).sample().cpu().numpy()
            actions = np.where(use_induced, induced_actions, actions)
        return actions, actions

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
        n_actions = int(self.action_space.n)
        next_supports = masks_from_infos(infos, n_actions)
        self.safety_counters.update_from_infos(infos)
        terminated = dones & ~np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        stuck = ~terminated & ~next_supports.any(axis=1)
        if stuck.any():
            # A non-terminal state without safe action: its soft value is -inf and no safe policy can go on.
            raise EmptySupportError(empty_support_message(f"A state reached by environment {np.flatnonzero(stuck)[0]}"))

        assert isinstance(replay_buffer, _SupportStorage)
        replay_buffer.stage_supports(self._last_supports, next_supports)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

        # After an auto-reset `new_obs` starts a new episode; `info` held the terminal observation's mask instead.
        done_indices = np.flatnonzero(dones)
        if done_indices.size > 0:
            next_supports[done_indices] = self._query_supports([int(index) for index in done_indices])
        self._last_supports = next_supports

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the action of the extracted (deployable) policy.

        :param observation: the input observation
        :param state: unused (kept for the SB3 API)
        :param episode_start: unused (kept for the SB3 API)
        :param deterministic: take the most likely safe action instead of sampling
        :param action_masks: safe-action masks; with them the action is always inside them
        :return: the action and the (unchanged) state
        """
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    # ---------------------------------------------------------------- learning

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.policy.critic_optimizer, self.policy.actor_optimizer])
        alpha = self.current_alpha()
        # Statistics stay tensors until the end: one host synchronisation per call, not per gradient step.
        critic_stats = th.zeros(2, device=self.device)
        actor_stats = th.zeros(2, device=self.device)
        n_actor_updates = 0

        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            update_actor = (self._n_updates + step + 1) % self.actor_update_interval == 0

            with th.no_grad():
                next_q_values = self.q_net_target(data.next_observations)
                next_log_behavior = self.behavior_policy.log_probs(data.next_observations, data.next_supports)
                targets = soft_bellman_target(
                    data.rewards, data.dones, next_q_values, next_log_behavior, alpha, self.gamma
                )
            q_values = self.q_net(data.observations)
            current_q = th.gather(q_values, dim=1, index=data.actions.long())
            loss = critic_loss = self._critic_loss(current_q, targets)

            if update_actor:
                # Extraction: cross-entropy of the actor's full softmax to pi_Q (zero outside the support). The
                # target is detached, so both losses touch disjoint parameters and share one backward pass.
                with th.no_grad():
                    log_behavior = self.behavior_policy.log_probs(data.observations, data.supports)
                    target_log_probs = induced_log_probs(q_values.detach(), log_behavior, alpha)
                    target_probs = target_log_probs.exp()
                    target_entropy = -(target_probs * target_log_probs.masked_fill(target_probs == 0, 0.0)).sum(-1)
                actor_log_probs = F.log_softmax(self.actor(data.observations), dim=-1)
                cross_entropy = -(target_probs * actor_log_probs).sum(dim=-1)
                actor_loss = cross_entropy.mean()
                loss = critic_loss + actor_loss
                self.policy.actor_optimizer.zero_grad()

            self.policy.critic_optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
            self.policy.critic_optimizer.step()
            with th.no_grad():
                critic_stats += th.stack([critic_loss, current_q.mean()])
            if update_actor:
                th.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
                self.policy.actor_optimizer.step()
                n_actor_updates += 1
                with th.no_grad():
                    actor_stats += th.stack([actor_loss, (cross_entropy - target_entropy).mean()])
            if (self._n_updates + step + 1) % self.target_update_interval == 0:
                self._update_target_network()

        critic_loss_mean, q_mean = (critic_stats / gradient_steps).tolist()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", critic_loss_mean)
        if n_actor_updates > 0:
            actor_loss_mean, actor_kl_mean = (actor_stats / n_actor_updates).tolist()
            self.logger.record("train/actor_loss", actor_loss_mean)
            self.logger.record("train/actor_kl", actor_kl_mean)
        self.logger.record("train/q_values", q_mean)
        self.logger.record("train/alpha", alpha)

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
            "actor",
            "behavior_policy",
            "_online_parameters",
            "_target_parameters",
            "_online_buffers",
            "_target_buffers",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.critic_optimizer", "policy.actor_optimizer"], []


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
