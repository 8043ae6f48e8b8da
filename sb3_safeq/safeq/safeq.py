"""Safe-Support Q-Learning (SSQL) for discrete and continuous (Box) actions."""

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import ConstantSchedule, get_parameters_by_name
from torch.nn import functional as F

from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer
from sb3_safeq.common.callbacks import record_safety
from sb3_safeq.common.gradients import clip_grad_norms_
from sb3_safeq.common.supports.base import InducedActions, InducedStep, SupportKind
from sb3_safeq.common.supports.errors import PredictWithoutSupportWarning
from sb3_safeq.common.supports.factory import SUPPORTED_ACTION_SPACES, make_support_kind
from sb3_safeq.common.wrappers import SafetyCounters
from sb3_safeq.safeq.arguments import InvalidArgumentError, check_arguments
from sb3_safeq.safeq.box_policies import BoxSafeSupportQPolicy
from sb3_safeq.safeq.offline_training import OfflineTrainingAlgorithm
from sb3_safeq.safeq.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    SafeSupportQPolicy,
    merged_parameter_groups,
    observation_batch,
)
from sb3_safeq.safeq.policy_variants import resolve_policy_class

SelfSafeSupportQ = TypeVar("SelfSafeSupportQ", bound="SafeSupportQ")

#: ``behavior=`` for a behavior cloned from the offline dataset (:mod:`sb3_safeq.common.behaviors.estimated`).
ESTIMATED = "estimated"


class SafeSupportQ(OfflineTrainingAlgorithm):
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
    :param tau: soft update coefficient of the target network ("Polyak update", 1 for a hard update, 0 a frozen
        target network)
    :param gamma: discount factor
    :param train_freq: update the model every ``train_freq`` steps, or a tuple like ``(5, "step")`` or
        ``(2, "episode")``
    :param gradient_steps: gradient steps after each rollout (``-1``: as many as environment steps collected)
    :param alpha: temperature of the KL regularisation (> 0), constant or a function of the remaining progress.
        It is in reward units: the smaller it is, the closer the policy is to the best safe one, and the larger, the
        closer to ``beta``.
    :param behavior: the behavior policy: ``"uniform"`` (uniform over the safe actions, or in the safe box), a
        :class:`~sb3_safeq.common.behaviors.base.BehaviorPolicy` (e.g.
        :class:`~sb3_safeq.common.behaviors.box.TruncatedGaussianBehavior` around your safe controller), or a
        function: ``(observations, masks) -> probabilities`` (numpy, batched; no mass outside the masks) for
        Discrete actions, ``(observations, low, high) -> torch.distributions.Distribution`` (inside the box) for Box
        actions; or the import path ``"package.module:name"`` of one of these (what an rl-zoo3 hyperparameter file
        can give, and what a saved model can rebuild without pickling code); or ``"estimated"`` (offline only: ``beta``
        and, for a dataset without supports, the supports are cloned from the dataset by ``learn_offline``; no safety
        guarantee beyond the data, docs/offline.md)
    :param behavior_kwargs: options of ``behavior="estimated"``: ``support_threshold`` (Discrete, default 0.05: the
        smallest probability the logging policy must have given an action for it to count as safe), ``support_tail``
        (Box, default 0.05: the cloned mass left outside each estimated box), ``beta`` (``"cloned"``: the clone's
        probabilities on the estimated support, or ``"uniform"`` on it), ``n_components`` (Box, 5), ``net_arch``
        ([64, 64]), ``learning_rate`` (1e-3) and ``batch_size`` (256) of behavior cloning
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
    :param share_target_draws: Box actions, forward-KL extraction: fit the head at the next observations with the
        target's own behavior draws and Q-values instead of ``n_behavior_samples`` new draws at the current ones
        (saves the largest pass of a gradient step; the head then follows the target critic; docs/guide.md)
    :param target_update_interval: update the target network every ``target_update_interval`` gradient steps (as
        SAC does; with ``tau=1`` this is a hard copy every so many updates, as DQN's target network)
    :param actor_update_interval: train the extraction head every ``actor_update_interval`` gradient steps (the
        critic never depends on the head, so a delayed head converges to the same policy, as TD3's delayed actor).
        None (default) takes the support kind's default: 4 for Discrete actions, whose head regresses onto the exact
        ``pi_Q`` (an update of the head costs about half a critic update on small networks: with 4, SafeSupportQ
        runs at DQN's steps per second or faster, with the benchmark's returns unchanged: docs/benchmarks.md); 1 for
        Box actions, whose head is fitted from sampled draws and needs every update at short budgets
    :param loss: critic regression loss, ``"mse"`` (default) or ``"huber"``. The soft target is an expectation:
        with stochastic transitions Huber regresses toward the *median* of the targets and biases the critic
        (slippery cliff walking: mean ``|Q - Q*_alpha|`` 40.3 with Huber, 4.1 with MSE; docs/benchmarks.md)
    :param max_grad_norm: maximum norm for gradient clipping
    :param n_steps: must be 1: n-step returns (SB3's ``n_steps``) would estimate the collecting policy's value, not
        the soft value of ``pi_Q`` (the error says why)
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
    support_kind: SupportKind
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
        behavior_kwargs: dict[str, Any] | None = None,
        exploration: str = "behavior",
        mixture_weight: float = 0.5,
        extraction: str = "forward_kl",
        n_behavior_samples: int = 16,
        twin_min: bool = True,
        share_target_draws: bool = False,
        target_update_interval: int = 1,
        actor_update_interval: int | None = None,
        loss: str = "mse",
        max_grad_norm: float = 10.0,
        n_steps: int = 1,
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
        check_arguments(
            alpha,
            exploration,
            mixture_weight,
            extraction,
            n_behavior_samples,
            loss,
            target_update_interval,
            actor_update_interval,
            tau,
            max_grad_norm,
            replay_buffer_class,
            batch_size,
            gamma,
            n_steps,
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
            supported_action_spaces=SUPPORTED_ACTION_SPACES,
            support_multi_env=True,
        )
        self.alpha = alpha
        self.behavior = behavior
        if behavior_kwargs and not (isinstance(behavior, str) and behavior == ESTIMATED):
            raise InvalidArgumentError(
                f'behavior_kwargs={behavior_kwargs!r} apply to behavior="estimated" only (the behavior is '
                f"{behavior!r}): configure any other behavior through the object or function you pass as behavior."
            )
        self.behavior_kwargs = dict(behavior_kwargs or {})
        self.exploration = exploration
        self.mixture_weight = mixture_weight
        self.extraction = extraction
        self.n_behavior_samples = int(n_behavior_samples)
        self.twin_min = twin_min
        self.share_target_draws = share_target_draws
        self.target_update_interval = target_update_interval
        self.actor_update_interval: int | None = actor_update_interval  # None: the support kind's default
        self.loss = loss
        self.max_grad_norm = max_grad_norm
        self.safety_counters = SafetyCounters()
        self._last_raw_supports: np.ndarray | None = None
        self._last_supports: np.ndarray | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self.support_kind = make_support_kind(self.action_space)
        if self.actor_update_interval is None:
            self.actor_update_interval = self.support_kind.default_actor_update_interval
        self.policy_class = resolve_policy_class(self.policy_class, self.support_kind, self.action_space)
        if self.replay_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.replay_buffer_class = SafeDictReplayBuffer if dict_obs else SafeReplayBuffer
        super()._setup_model()
        self._create_aliases()
        if isinstance(self.behavior, str) and self.behavior == ESTIMATED:
            self.behavior_policy = self.support_kind.make_estimated_behavior(
                self.observation_space, self.device, **self.behavior_kwargs
            )
        else:
            self.behavior_policy = self.support_kind.make_behavior(self.behavior)
        self.alpha_schedule = self.alpha if callable(self.alpha) else ConstantSchedule(float(self.alpha))
        self._actor_stat_name = self.support_kind.actor_stat_name(self.extraction)
        # Parameter lists of the target update, built once: it runs after every gradient step.
        self._online_parameters: list[th.Tensor] = list(self.critic.parameters())
        self._actor_parameters: list[th.Tensor] = list(self.actor.parameters())
        self._target_parameters: list[th.Tensor] = list(self.critic_target.parameters())
        self._online_buffers = get_parameters_by_name(self.critic, ["running_"])
        self._target_buffers = get_parameters_by_name(self.critic_target, ["running_"])

    def _create_aliases(self) -> None:
        # Every kind's policy has a critic, its target and the extraction head (the actor) under these names.
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def current_alpha(self) -> float:
        """
        :return: the temperature at the current training progress
        """
        alpha = float(self.alpha_schedule(self._current_progress_remaining))
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"The alpha schedule returned {alpha}; the temperature must stay finite and > 0.")
        return alpha

    # ------------------------------------------------------------------ acting

    def induced_policy(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
        safe_bounds: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
        safe_constraints: Any = None,
    ) -> InducedActions:
        """
        Act with the induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` (same support as ``beta``, so as safe), the
        policy the critic is the soft value of. Discrete actions: the exact masked softmax (its mode when
        deterministic). Box actions: importance resampling of ``n_behavior_samples`` draws from ``beta`` with weights
        ``softmax(Q / alpha)`` (deterministic: the draw with the highest Q).

        :param observation: a batch of observations (or one observation)
        :param deterministic: take the mode instead of sampling
        :param action_masks: Discrete actions: the safe-action masks of the observations (with
            ``behavior="estimated"``, the supports may be left out: the estimated ones are used)
        :param safe_bounds: Box actions: the safe boxes ``(low, high)`` of the observations, in action units
        :param safe_constraints: ``ConstrainedBox`` actions: the linear constraints ``(A, b)`` of each observation, in
            action units (one pair, a batched pair ``A (n, m, d)``, ``b (n, m)``, or a list of pairs)
        :return: the actions in environment units (inside the supports as given), their Q-values, the KL to
            ``beta`` and, for Discrete actions, ``log pi_Q`` of every action (numpy, one row per observation)
        """
        kind = self.support_kind
        supports = kind.pick_predict_argument(
            action_masks=action_masks, safe_bounds=safe_bounds, safe_constraints=safe_constraints
        )
        if supports is None:
            supports = self._implied_supports(observation)
        if supports is None:
            raise ValueError(
                f"The induced policy needs the safe supports of the observations ({kind.predict_keyword}=)."
            )
        self.policy.set_training_mode(False)
        observations, _, n_obs = observation_batch(self.policy, observation)
        raw_supports, agent_supports = kind.predict_supports(supports, n_obs)
        step = self._induced_step(observations, th.as_tensor(agent_supports, device=self.device), deterministic)
        actions = kind.clip_actions(kind.actions_to_env(step.actions), raw_supports)
        return InducedActions(
            actions=actions.astype(self.action_space.dtype),
            q_values=step.q_values.cpu().numpy(),
            kl=step.kl.cpu().numpy(),
            log_probs=None if step.log_probs is None else step.log_probs.cpu().numpy(),
        )

    def _implied_supports(self, observation: np.ndarray | dict[str, np.ndarray]) -> Any:
        """
        :param observation: what ``predict`` or ``induced_policy`` was given
        :return: the supports the behavior implies for it, as ``predict``'s keyword takes them (an estimated
            behavior's: what the data took), or None for a behavior that implies none
        """
        self.policy.set_training_mode(False)
        with th.no_grad():
            implied = self.behavior_policy.supports_for(observation_batch(self.policy, observation)[0])
        return None if implied is None else self.support_kind.predict_argument(implied)

    def _induced_step(self, observations: PyTorchObs, supports: th.Tensor, deterministic: bool) -> InducedStep:
        return self.support_kind.induced_step(self, observations, supports, self.current_alpha(), deterministic)

    def critic_values(self, observation: np.ndarray | dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
        """
        :param observation: a batch of observations
        :param actions: one action per observation, in environment units
        :return: the (first) critic's ``Q̂(s, a)`` of each, the soft value of taking ``a`` in ``s`` and then following
            ``pi_Q`` (numpy, ``(batch,)``)
        """
        self.policy.set_training_mode(False)
        observations, _, _ = observation_batch(self.policy, observation)
        with th.no_grad():
            return self.support_kind.critic_values(self.policy, observations, actions).cpu().numpy()

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
        safe_bounds: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
        safe_constraints: Any = None,
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
        :param safe_constraints: ``ConstrainedBox`` actions: the linear constraints ``(A, b)`` of each observation
            (e.g. ``env.safe_action_constraints()``); with them the action always satisfies ``A a <= b`` (within
            ``CONTAINS_TOLERANCE``)
        :return: the action and the (unchanged) state. Without a support, a model with ``behavior="estimated"`` acts
            inside the estimated support of each observation (the actions the data took there: no guarantee beyond
            the data); any other acts with the extraction head alone and warns
        """
        kind = self.support_kind
        supports = kind.pick_predict_argument(
            action_masks=action_masks, safe_bounds=safe_bounds, safe_constraints=safe_constraints
        )
        if supports is None:
            supports = self._implied_supports(observation)
        if supports is None:
            warnings.warn(
                f"SafeSupportQ.predict() without {kind.predict_keyword}: the action is the extraction head's alone, "
                f"which nothing restricts to the safe set. Pass {kind.predict_keyword}= (e.g. "
                f"env.{kind.method_name}()) to act inside the support; if acting without it is intended, silence this "
                "with warnings.simplefilter('ignore', sb3_safeq.PredictWithoutSupportWarning).",
                PredictWithoutSupportWarning,
                stacklevel=2,
            )
        return self.policy.predict(observation, state, episode_start, deterministic, **{kind.predict_keyword: supports})

    # ---------------------------------------------------------------- learning

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizer = self.policy.optimizer
        self._update_learning_rate(optimizer)
        alpha = self.current_alpha()
        kind = self.support_kind
        critic_parameters, actor_parameters = self._online_parameters, self._actor_parameters
        actor_update_interval = self.actor_update_interval
        assert actor_update_interval is not None  # the support kind's default replaces None in _setup_model
        # Statistics stay tensors until the end: one host synchronisation per call, not per gradient step (and no
        # arithmetic on them inside the loop either).
        critic_stats: list[th.Tensor] = []
        actor_stats: list[th.Tensor] = []

        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            update_actor = (self._n_updates + step + 1) % actor_update_interval == 0
            critic_loss, q_mean, actor_terms = kind.losses(self, data, alpha, update_actor)
            critic_stats += [critic_loss.detach(), q_mean]

            # The actor's loss shares the backward pass and the optimizer step when it does not depend on the
            # critic's parameters; a head without gradients (not updated this step) is not stepped.
            optimizer.zero_grad()
            if actor_terms is None:
                critic_loss.backward()
                clip_grad_norms_([critic_parameters], self.max_grad_norm)
                optimizer.step()
                if update_actor:
                    # An extraction that differentiates through the (just updated) critic, as SAC does: only the
                    # head's gradients are computed, so the step below moves the head alone.
                    actor_terms = kind.actor_loss_after_critic_step(self, data, alpha)
                    optimizer.zero_grad()
                    actor_terms[0].backward(inputs=actor_parameters)
                    clip_grad_norms_([actor_parameters], self.max_grad_norm)
                    optimizer.step()
            else:
                (critic_loss + actor_terms[0]).backward()
                clip_grad_norms_([critic_parameters, actor_parameters], self.max_grad_norm)
                optimizer.step()
            if actor_terms is not None:
                actor_stats += [actor_terms[0].detach(), actor_terms[1]]
            if (self._n_updates + step + 1) % self.target_update_interval == 0:
                self._update_target_network()

        if not critic_stats:
            return
        # Rows: (critic loss, mean Q) per gradient step, then (actor loss, actor statistic) per head update.
        means = [th.stack(stats).reshape(-1, 2).mean(dim=0) for stats in (critic_stats, actor_stats) if stats]
        critic_loss_mean, q_mean_value, *actor_means = th.cat(means).tolist()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", critic_loss_mean)
        if actor_means:
            actor_loss_mean, actor_stat_mean = actor_means
            self.logger.record("train/actor_loss", actor_loss_mean)
            self.logger.record(f"train/{self._actor_stat_name}", actor_stat_mean)
        self.logger.record("train/q_values", q_mean_value)
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

    def critic_regression_loss(self, current_q: th.Tensor, targets: th.Tensor) -> th.Tensor:
        """
        :param current_q: the critic's Q-values of the stored actions, ``(batch, 1)``
        :param targets: their soft Bellman targets, ``(batch, 1)``
        :return: the regression loss (``loss="mse"`` or ``"huber"``)
        """
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
        self.behavior_policy.check_can_collect()
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
            "critic",
            "critic_target",
            "actor",
            "behavior_policy",
            "support_kind",
            "_online_parameters",
            "_actor_parameters",
            "_target_parameters",
            "_online_buffers",
            "_target_buffers",
        ]

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any] | Any,
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        SB3's ``set_parameters``, also accepting the optimizer state of models saved with one parameter group per
        network (the optimizer now holds both networks in one group: the same parameters and state, in order).

        :param load_path_or_dict: a saved model's path, or the dict of its parameters (``get_parameters()``)
        :param exact_match: whether the parameters must match the model's exactly
        :param device: where to load them
        """
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
            assert params is not None, f"The file {load_path_or_dict} holds no parameters."
        if "policy.optimizer" in params:
            params = {**params, "policy.optimizer": merged_parameter_groups(params["policy.optimizer"])}
        super().set_parameters(params, exact_match=exact_match, device=device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # A behavior with torch state (an estimated one) is saved with the policy, so load restores it fitted.
        behavior_state = [f"behavior_policy.{name}" for name in self.behavior_policy.torch_save_names]
        return ["policy", "policy.optimizer", *behavior_state], []
