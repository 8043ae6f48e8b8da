"""
The ``Box`` support kind: a box of safe actions ``(low, high)`` per state, from the environment's
``safe_action_bounds()``.

Everything SafeSupportQ does differently for boxes is here: validation, the scaling of boxes and actions to the
agent's ``[-1, 1]`` units (as SAC does with actions), containment and shielding (clipping), ``predict(...,
safe_bounds=...)``, the in-box behavior policies, the sampled soft value over twin critics (a log-mean-exp of
``n_behavior_samples`` behavior draws), the extraction losses of a Gaussian squashed into the box (advantage-weighted
regression on behavior draws, or the reparameterised reverse KL) and the induced policy by importance resampling.
"""

import math
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import RescaleAction
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.backup import sampled_soft_value
from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.behaviors.box import BoxBehaviorPolicy, CallableBoxBehavior, UniformBoxBehavior
from sb3_safeq.common.behaviors.estimated import check_options
from sb3_safeq.common.behaviors.estimated_box import EstimatedBoxBehavior
from sb3_safeq.common.supports import squashed_box
from sb3_safeq.common.supports.base import InducedStep, Losses, SoftQLearner, SupportKind
from sb3_safeq.common.supports.box_utils import (
    POINT_WIDTH,
    SAFE_BOUNDS_INFO_KEY,
    SAFE_BOUNDS_METHOD,
    BoxScaler,
    as_safe_bounds,
    check_box_action_space,
    clamp_into,
    clip_into,
    empty_box_message,
    empty_boxes,
    fill_empty_boxes,
)
from sb3_safeq.common.supports.errors import EmptySupportError

# Statistic logged after each extraction update, by extraction: the effective sample size of the weights as a
# fraction of n_behavior_samples (forward KL), the one-sample estimate of KL(pi || beta) (reverse KL).
_ACTOR_STAT_NAMES = {"forward_kl": "behavior_weights_ess", "reverse_kl": "actor_kl_to_behavior"}


def q_values_of_samples(critic: Any, observations: PyTorchObs, actions: th.Tensor) -> th.Tensor:
    """
    Q-values of several actions per observation, extracting each observation's features once.

    :param critic: the (twin) critic, an SB3 ``ContinuousCritic``
    :param observations: observations, batch ``B``
    :param actions: ``(B, N, action_dim)``
    :return: ``(n_critics, B, N)``
    """
    batch, n_samples, _ = actions.shape
    features = critic.extract_features(observations, critic.features_extractor)
    features = features.unsqueeze(1).expand(batch, n_samples, features.shape[-1])
    inputs = th.cat([features, actions], dim=-1).reshape(batch * n_samples, -1)
    return th.stack([q_net(inputs).reshape(batch, n_samples) for q_net in critic.q_networks])


class BoxSupport(SupportKind):
    """
    Per-state safe boxes of a ``Box`` action space: ``(2, action_dim)`` per state, row 0 the lower and row 1 the
    upper bound; in the environment's action units as raw supports, in ``[-1, 1]`` as agent supports.

    Behaviors: :class:`~sb3_safeq.common.behaviors.box.BoxBehaviorPolicy` subclasses (working in action units), or a
    function ``fn(observations, low, high) -> torch.distributions.Distribution`` (inside the box). The policy has twin
    ``Q(s, a)`` critics (SB3's ``ContinuousCritic``) and an actor giving the mean and log standard deviation of a
    Gaussian squashed into the box (:mod:`~sb3_safeq.common.supports.squashed_box`).
    """

    action_space_type: ClassVar[type[spaces.Space]] = spaces.Box
    name = "box"
    method_name = SAFE_BOUNDS_METHOD
    info_key = SAFE_BOUNDS_INFO_KEY
    predict_keyword = "safe_bounds"
    wrapper_argument = "safe_bounds_fn"
    behavior_class = BoxBehaviorPolicy
    samples_behavior = True
    action_space: spaces.Box

    def __init__(self, action_space: spaces.Box) -> None:
        check_box_action_space(action_space)
        super().__init__(action_space)
        self.scaler = BoxScaler(action_space)

    @property
    def action_dim(self) -> int:
        """:return: the number of action axes"""
        return int(self.action_space.shape[0])

    def missing_method_message(self, env: gym.Env) -> str:
        return (
            f"The environment {env!r} has no `{SAFE_BOUNDS_METHOD}()` method, so its safe actions are unknown. "
            "SafeSupportQ only acts inside a safe support: give the environment a method "
            "`safe_action_bounds() -> (low, high)` returning the box of safe actions of the current state (in "
            "action units, inside the action space), or wrap it with "
            "`sb3_safeq.SafetyWrapper(env, safe_bounds_fn=fn)` where `fn(env) -> (low, high)`."
        )

    def support_through_action_wrapper(self, wrapper: gym.Wrapper, method: Callable[[], Any]) -> Callable[[], Any]:
        # RescaleAction is an exact affine map between two boxes: so are the safe boxes. Others are refused.
        if not isinstance(wrapper, RescaleAction):
            return super().support_through_action_wrapper(wrapper, method)
        inner, outer = wrapper.env.action_space, wrapper.action_space
        assert isinstance(inner, spaces.Box) and isinstance(outer, spaces.Box)
        inner_low, outer_low = inner.low.astype(np.float64), outer.low.astype(np.float64)
        scale = (outer.high.astype(np.float64) - outer_low) / (inner.high.astype(np.float64) - inner_low)
        source = f"{self.method_name}() below {type(wrapper).__name__}"

        def rescaled() -> np.ndarray:
            return outer_low + (as_safe_bounds(method(), inner, source).astype(np.float64) - inner_low) * scale

        return rescaled

    def validate(self, support: Any, source: str) -> np.ndarray:
        return as_safe_bounds(support, self.action_space, source)

    def env_method_result(self, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return support[0].copy(), support[1].copy()

    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        return (2, self.action_dim), np.float32

    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        return self.scaler.to_agent(raw_supports)

    def actions_to_agent(self, actions: np.ndarray) -> np.ndarray:
        return self.scaler.to_agent(actions)

    def actions_to_env(self, actions: th.Tensor) -> np.ndarray:
        return self.scaler.to_env(actions.cpu().numpy())

    def clip_actions(self, actions: np.ndarray, raw_supports: np.ndarray) -> np.ndarray:
        # Clipping into the box as the environment gave it makes the unit conversions' rounding harmless.
        return clip_into(actions, raw_supports)

    def empty(self, supports: np.ndarray) -> np.ndarray:
        return empty_boxes(supports)

    def empty_message(self, where: str) -> str:
        return empty_box_message(where)

    def contains(self, action: Any, support: np.ndarray) -> bool:
        # Compared in float64: rounding a float64 action to the box's float32 first could hide an excess.
        values = np.asarray(action, dtype=np.float64).reshape(support.shape[1:])
        return bool(np.all((values >= support[0]) & (values <= support[1])))  # False for NaN

    def shield(self, action: Any, support: np.ndarray, rng: np.random.Generator) -> Any:
        # The nearest action of the box (clipping); a NaN axis goes to the middle of the box.
        values = np.asarray(action, dtype=np.float64).reshape(support.shape[1:])
        midpoint = (support[0] + support[1]) / 2
        in_box = np.where(np.isnan(values), midpoint, values).astype(support.dtype)
        return np.minimum(np.maximum(in_box, support[0]), support[1])

    def predict_supports(self, supports: Any, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
        boxes = self._predict_boxes(supports, n_obs)
        env_boxes = np.stack([as_safe_bounds(box, self.action_space, source="safe_bounds") for box in boxes])
        if empty_boxes(env_boxes).any():
            raise EmptySupportError(
                empty_box_message("An observation passed to predict()") + " (safe_bounds has low > high.)"
            )
        return env_boxes, self.scaler.to_agent(env_boxes)

    def _predict_boxes(self, supports: Any, n_obs: int) -> np.ndarray:
        """
        Read the layouts ``predict(safe_bounds=...)`` accepts, never reshaping one into another (same sizes, other
        meanings): a tuple ``(low, high)``; a list, either ``[low, high]`` or one ``(low, high)`` per observation (as
        ``VecEnv.env_method("safe_action_bounds")`` gives them); an array of one box per observation.

        :return: the boxes ``(n_obs, 2, action_dim)`` in action units, float64, not validated yet
        """
        dim = self.action_dim
        batch_shapes = {(n_obs, dim)} | ({(dim,)} if n_obs == 1 else set())
        layouts = (
            f"give safe_bounds=(low, high) with low and high of shape ({n_obs}, {dim}) (or ({dim},) for one "
            f"observation), or one box per observation as an array of shape ({n_obs}, 2, {dim})"
        )
        if isinstance(supports, (tuple, list)):
            parts = [np.asarray(part, dtype=np.float64) for part in supports]
            as_low_high = len(parts) == 2 and all(part.shape in batch_shapes for part in parts)
            as_boxes = isinstance(supports, list) and len(parts) == n_obs and all(p.shape == (2, dim) for p in parts)
            if as_low_high and as_boxes:
                raise ValueError(
                    f"safe_bounds is a list of two arrays of shape (2, {dim}) for 2 observations: it could be [low, "
                    "high] or one box per observation. Pass a tuple (low, high), or an array of shape "
                    f"(2, 2, {dim}) with one box per observation."
                )
            if as_boxes:
                return np.stack(parts)
            if not as_low_high:
                shapes = ", ".join(str(part.shape) for part in parts)
                raise ValueError(f"safe_bounds holds parts of shapes {shapes} for {n_obs} observation(s): {layouts}.")
            low, high = (part.reshape(n_obs, dim) for part in parts)
            return np.stack([low, high], axis=1)
        boxes = np.asarray(supports, dtype=np.float64)
        if n_obs == 1 and boxes.shape == (2, dim):
            boxes = boxes[None]
        if boxes.shape != (n_obs, 2, dim):
            raise ValueError(f"safe_bounds has shape {boxes.shape} for {n_obs} observation(s): {layouts}.")
        return boxes

    def predict_argument(self, raw_supports: np.ndarray) -> Any:  # (low, high), each (n, action_dim)
        return raw_supports[:, 0], raw_supports[:, 1]

    def uniform_behavior(self) -> BehaviorPolicy:
        return UniformBoxBehavior()

    def sample_uniform(self, raw_supports: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(raw_supports[:, 0], raw_supports[:, 1]).astype(self.action_space.dtype)

    def behavior_from_function(self, function: Callable[..., Any]) -> BehaviorPolicy:
        return CallableBoxBehavior(function)

    def make_estimated_behavior(
        self, observation_space: spaces.Space, device: th.device, **behavior_kwargs: Any
    ) -> BehaviorPolicy:
        check_options(EstimatedBoxBehavior, behavior_kwargs)
        return EstimatedBoxBehavior(observation_space, self.scaler, self.action_dim, device, **behavior_kwargs)

    # ------------------------------------------------------------------ learning

    def actor_stat_name(self, extraction: str) -> str:
        return _ACTOR_STAT_NAMES[extraction]

    def behavior_samples(
        self, behavior: BehaviorPolicy, observations: PyTorchObs, boxes: th.Tensor, n_samples: int
    ) -> th.Tensor:
        """
        :param behavior: the behavior policy (in action units)
        :param observations: observations
        :param boxes: safe boxes in agent units ``(batch, 2, action_dim)``, non-empty
        :param n_samples: draws per observation
        :return: draws from ``beta`` in agent units, ``(batch, n_samples, action_dim)``
        """
        env_samples = behavior.sample(observations, self.scaler.to_env_tensor(boxes), n_samples)
        return clamp_into(self.scaler.to_agent_tensor(env_samples), boxes)

    def behavior_log_prob(
        self, behavior: BehaviorPolicy, observations: PyTorchObs, boxes: th.Tensor, actions: th.Tensor
    ) -> th.Tensor:
        """
        :param behavior: the behavior policy (in action units)
        :param observations: observations
        :param boxes: safe boxes in agent units ``(batch, 2, action_dim)``
        :param actions: in-box actions in agent units ``(batch, action_dim)``
        :return: ``log beta(a|s)`` as a density in agent units, ``(batch,)``
        """
        scaler = self.scaler
        env_boxes = scaler.to_env_tensor(boxes)
        env_actions = clamp_into(scaler.to_env_tensor(actions), env_boxes)
        log_density = behavior.log_prob(observations, env_boxes, env_actions.unsqueeze(1))[:, 0]
        # Change of variables to agent units, over the axes that carry density.
        has_volume = (boxes[:, 1] - boxes[:, 0]) > POINT_WIDTH
        log_half_width = scaler.log_half_width_tensor(log_density.device).to(log_density.dtype)
        return log_density + (has_volume * log_half_width).sum(dim=-1)

    def fill_empty(self, supports: th.Tensor) -> th.Tensor:
        """
        :param supports: agent supports of next states ``(batch, *support_shape)``; terminal ones may be empty
        :return: the supports with each empty one replaced by one that can be sampled (the whole action space)
        """
        return fill_empty_boxes(supports)

    def head_rsample(self, mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        The extraction head's reparameterised action inside each support.

        :param mean: Gaussian mean of the head, ``(batch, action_dim)``
        :param log_std: its log standard deviation, same shape
        :param supports: agent supports ``(batch, *support_shape)``
        :return: actions in agent units ``(batch, action_dim)`` and their log-densities ``(batch,)``
        """
        return squashed_box.rsample(mean, log_std, supports)

    def head_log_prob(self, actions: th.Tensor, mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> th.Tensor:
        """
        :param actions: actions inside the supports, agent units, ``(batch, n, action_dim)``
        :param mean: Gaussian mean of the head, ``(batch, action_dim)``
        :param log_std: its log standard deviation, same shape
        :param supports: agent supports ``(batch, *support_shape)``
        :return: the head's log-densities of the actions, ``(batch, n)``
        """
        return squashed_box.log_prob(actions, mean, log_std, supports)

    def head_mode(self, mean: th.Tensor, supports: th.Tensor) -> th.Tensor:
        """
        :param mean: Gaussian mean of the head, ``(batch, action_dim)``
        :param supports: agent supports ``(batch, *support_shape)``
        :return: the head's deterministic action inside each support, agent units ``(batch, action_dim)``
        """
        return squashed_box.mode(mean, supports)

    @staticmethod
    def reduce_twins(q_values: th.Tensor, twin_min: bool) -> th.Tensor:
        """:param q_values: ``(n_critics, ...)`` :return: their minimum (``twin_min``) or mean"""
        return q_values.min(dim=0).values if twin_min else q_values.mean(dim=0)

    def losses(self, learner: SoftQLearner, data: Any, alpha: float, update_actor: bool) -> Losses:
        policy, behavior, n_samples = learner.policy, learner.behavior_policy, learner.n_behavior_samples
        with th.no_grad():
            # A terminal next state may have an empty box: its value is multiplied by 0, any box does to sample.
            next_boxes = self.fill_empty(data.next_supports)
            next_actions = self.behavior_samples(behavior, data.next_observations, next_boxes, n_samples)
            next_q = self.reduce_twins(
                q_values_of_samples(policy.critic_target, data.next_observations, next_actions), learner.twin_min
            )
            next_values = sampled_soft_value(next_q, alpha)
            targets = data.rewards + (1.0 - data.dones) * learner.gamma * next_values
        current_q = policy.critic(data.observations, data.actions)
        critic_loss = sum(learner.critic_regression_loss(q, targets) for q in current_q)
        assert isinstance(critic_loss, th.Tensor)
        q_mean = current_q[0].detach().mean()
        if not update_actor or learner.extraction == "reverse_kl":
            return critic_loss, q_mean, None

        if learner.share_target_draws:
            # pi_Q at s' by importance resampling of the target's own draws: softmax(Q_target / alpha).
            observations, boxes, samples, sample_q = data.next_observations, next_boxes, next_actions, next_q
            live = 1.0 - data.dones[:, 0]  # a terminal s' has no action to learn (and maybe no box)
        else:
            observations, boxes = data.observations, data.supports
            with th.no_grad():
                samples = self.behavior_samples(behavior, observations, boxes, n_samples)
                sample_q = self.reduce_twins(
                    q_values_of_samples(policy.critic, observations, samples), learner.twin_min
                )
            live = th.ones(samples.shape[0], device=samples.device)
        with th.no_grad():
            weights = th.softmax(sample_q / alpha, dim=1)
            n_live = live.sum().clamp(min=1.0)
            effective_fraction = ((1.0 / (weights**2).sum(dim=1)) * live).sum() / n_live / n_samples
        mean, log_std = policy.actor(observations)
        log_probs = self.head_log_prob(samples, mean, log_std, boxes)
        actor_loss = -((weights * log_probs).sum(dim=1) * live).sum() / n_live
        return critic_loss, q_mean, (actor_loss, effective_fraction)

    def actor_loss_after_critic_step(
        self, learner: SoftQLearner, data: Any, alpha: float
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        ``E_{a ~ pi}[alpha * (log pi(a|s) - log beta(a|s)) - Q(s, a)]``, reparameterised: the KL-regularized
        objective whose minimiser is ``pi_Q`` (the reverse-KL extraction).

        :return: the loss and the estimate of ``KL(pi || beta)``
        """
        policy = learner.policy
        mean, log_std = policy.actor(data.observations)
        actions, log_pi = self.head_rsample(mean, log_std, data.supports)
        log_beta = self.behavior_log_prob(learner.behavior_policy, data.observations, data.supports, actions)
        q_values = self.reduce_twins(th.stack(policy.critic(data.observations, actions)), learner.twin_min)[:, 0]
        kl = log_pi - log_beta
        return (alpha * kl - q_values).mean(), kl.detach().mean()

    def critic_values(self, policy: Any, observations: PyTorchObs, actions: np.ndarray) -> th.Tensor:
        agent_actions = th.as_tensor(self.scaler.to_agent(actions), dtype=th.float32, device=policy.device)
        return policy.critic(observations, agent_actions)[0][:, 0]

    def induced_step(
        self,
        learner: SoftQLearner,
        observations: PyTorchObs,
        supports: th.Tensor,
        alpha: float,
        deterministic: bool,
    ) -> InducedStep:
        # Importance resampling: n_behavior_samples draws from beta, one picked with probability softmax(Q / alpha)
        # (deterministic: the draw with the highest Q, the mode of the resampled distribution).
        n_samples = learner.n_behavior_samples
        with th.no_grad():
            samples = self.behavior_samples(learner.behavior_policy, observations, supports, n_samples)
            q_values = self.reduce_twins(
                q_values_of_samples(learner.policy.critic, observations, samples), learner.twin_min
            )
            logits = q_values / alpha
            sampled = None if deterministic else th.distributions.Categorical(logits=logits).sample()
            choice = q_values.argmax(dim=-1) if sampled is None else sampled
            log_weights = th.log_softmax(logits, dim=-1)
            kl = (log_weights.exp() * (log_weights + math.log(n_samples))).sum(dim=-1)
            rows = th.arange(samples.shape[0], device=samples.device)
        return InducedStep(samples[rows, choice], q_values[rows, choice], kl)
