"""
The ``Discrete`` support kind: a boolean action mask per state, from the environment's ``action_masks()``.

Everything SafeSupportQ does differently for masks is here: validation, storage (masks need no unit conversion),
containment and shielding, ``predict(..., action_masks=...)``, the masked behavior policies, the exact soft value
(a masked log-sum-exp), the exact extraction losses over the mask and the exact induced policy (a masked softmax).
"""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs
from torch.nn import functional as F

from sb3_safeq.common.backup import induced_logits, soft_bellman_target
from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.behaviors.estimated import check_options
from sb3_safeq.common.behaviors.estimated_mask import EstimatedDiscreteBehavior
from sb3_safeq.common.behaviors.mask import CallableDiscreteBehavior, DiscreteBehaviorPolicy, MaskedUniformBehavior
from sb3_safeq.common.supports.base import InducedStep, Losses, SoftQLearner, SupportKind
from sb3_safeq.common.supports.errors import EmptySupportError
from sb3_safeq.common.supports.mask_utils import (
    ACTION_MASK_INFO_KEY,
    ACTION_MASKS_METHOD,
    as_action_mask,
    empty_mask_message,
)

# Statistic logged after each extraction update: the exact KL between the head and pi_Q (direction by extraction).
_ACTOR_STAT_NAME = "actor_kl"


class MaskSupport(SupportKind):
    """
    Boolean action masks of a ``Discrete`` action space (``True`` = safe), shape ``(n_actions,)`` per state.

    Behaviors: :class:`~sb3_safeq.common.behaviors.mask.DiscreteBehaviorPolicy` subclasses, or a probability function
    ``fn(observations, masks) -> probabilities`` (numpy, batched; no mass outside the masks). The policy's critic
    maps observations to all Q-values ``(batch, n_actions)`` and its actor to logits ``(batch, n_actions)``.
    """

    action_space_type = spaces.Discrete
    name = "mask"
    method_name = ACTION_MASKS_METHOD
    info_key = ACTION_MASK_INFO_KEY
    predict_keyword = "action_masks"
    wrapper_argument = "action_mask_fn"
    behavior_class = DiscreteBehaviorPolicy
    samples_behavior = False
    # The head regresses onto the exact pi_Q of each sampled state (a cross-entropy to a fixed target, and the critic
    # never depends on it): updating it every fourth gradient step costs a quarter of an update per step, and the
    # benchmark's returns stay at those of an update every step (docs/benchmarks.md).
    default_actor_update_interval = 4
    action_space: spaces.Discrete

    def __init__(self, action_space: spaces.Discrete) -> None:
        if int(action_space.start) != 0:
            raise ValueError(
                f"The action space {action_space!r} starts at {int(action_space.start)}: action masks index the "
                "actions 0..n-1 (sb3-contrib's convention), so the mask's entry i and the action value "
                f"{int(action_space.start)} + i would disagree. Give the environment `Discrete(n)` and add the offset "
                "inside its step(), or wrap it with `gymnasium.wrappers.TransformAction` and a `Discrete(n)` space."
            )
        super().__init__(action_space)

    @property
    def n_actions(self) -> int:
        """:return: the number of discrete actions"""
        return int(self.action_space.n)

    def missing_method_message(self, env: gym.Env) -> str:
        return (
            f"The environment {env!r} has no `{ACTION_MASKS_METHOD}()` method, so its safe actions are unknown. "
            "SafeSupportQ only acts inside a safe support: give the environment a method `action_masks() -> "
            "np.ndarray[bool]` returning True for the safe actions of the current state, or wrap it with "
            "`sb3_contrib.common.wrappers.ActionMasker(env, mask_fn)` or "
            "`sb3_safeq.SafetyWrapper(env, action_mask_fn=mask_fn)`."
        )

    def validate(self, support: Any, source: str) -> np.ndarray:
        return as_action_mask(support, self.n_actions, source)

    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        return (self.n_actions,), np.bool_

    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        return raw_supports

    def empty(self, supports: np.ndarray) -> np.ndarray:
        return np.asarray(~supports.any(axis=-1))

    def empty_message(self, where: str) -> str:
        return empty_mask_message(where)

    def contains(self, action: Any, support: np.ndarray) -> bool:
        action_index = int(np.asarray(action).reshape(-1)[0])
        return 0 <= action_index < self.n_actions and bool(support[action_index])

    def shield(self, action: Any, support: np.ndarray, rng: np.random.Generator) -> Any:
        # A uniformly drawn safe action: the masked-uniform behavior's choice, with no preference of our own.
        return int(rng.choice(np.flatnonzero(support)))

    def predict_supports(self, supports: Any, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
        masks = np.asarray(supports)
        # One row per observation; a single observation may also give its mask alone. No other layout is reshaped:
        # a transposed batch of masks has the same size and would scramble which action is safe where.
        if masks.shape == (self.n_actions,) and n_obs == 1:
            masks = masks[None]
        if masks.shape != (n_obs, self.n_actions):
            raise ValueError(
                f"action_masks has shape {masks.shape}, expected ({n_obs}, {self.n_actions}): one row of "
                f"{self.n_actions} booleans per observation (or shape ({self.n_actions},) for one observation)."
            )
        masks = np.stack([as_action_mask(mask, self.n_actions, "action_masks") for mask in masks])
        if not masks.any(axis=1).all():
            raise EmptySupportError(empty_mask_message("An observation passed to predict()"))
        return masks, masks

    def predict_argument(self, raw_supports: np.ndarray) -> Any:
        return raw_supports

    def uniform_behavior(self) -> BehaviorPolicy:
        return MaskedUniformBehavior()

    def sample_uniform(self, raw_supports: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray([rng.choice(np.flatnonzero(mask)) for mask in raw_supports], dtype=np.int64)

    def behavior_from_function(self, function: Callable[..., Any]) -> BehaviorPolicy:
        return CallableDiscreteBehavior(function)

    def make_estimated_behavior(
        self, observation_space: spaces.Space, device: th.device, **behavior_kwargs: Any
    ) -> BehaviorPolicy:
        check_options(EstimatedDiscreteBehavior, behavior_kwargs)
        return EstimatedDiscreteBehavior(observation_space, self.n_actions, device, **behavior_kwargs)

    def actor_stat_name(self, extraction: str) -> str:
        return _ACTOR_STAT_NAME

    def losses(self, learner: SoftQLearner, data: Any, alpha: float, update_actor: bool) -> Losses:
        policy, behavior = learner.policy, learner.behavior_policy
        assert isinstance(behavior, DiscreteBehaviorPolicy)
        with th.no_grad():
            next_q_values = policy.critic_target(data.next_observations)
            next_log_behavior = behavior.log_probs(data.next_observations, data.next_supports)
            targets = soft_bellman_target(
                data.rewards, data.dones, next_q_values, next_log_behavior, alpha, learner.gamma
            )
        q_values = policy.critic(data.observations)
        current_q = th.gather(q_values, dim=1, index=data.actions.long())
        critic_loss = learner.critic_regression_loss(current_q, targets)
        if not update_actor:
            return critic_loss, current_q.detach().mean(), None

        # The target pi_Q is detached, so the actor's loss touches only the actor's parameters.
        with th.no_grad():
            log_behavior = behavior.log_probs(data.observations, data.supports)
            target_logits = induced_logits(q_values.detach(), log_behavior, alpha)
        logits = policy.actor(data.observations)
        if learner.extraction == "forward_kl":
            # Cross-entropy of the full softmax to pi_Q (zero outside the support): the unmasked head also learns to
            # avoid unsafe actions. One fused call (with probabilities as targets) instead of four element-wise ones.
            with th.no_grad():
                target_probs = th.softmax(target_logits, dim=-1)
            actor_loss = F.cross_entropy(logits, target_probs)
            with th.no_grad():
                # KL = cross-entropy - H(pi_Q); entr(0) = 0 outside the support.
                kl = actor_loss - th.special.entr(target_probs).sum() / target_probs.shape[0]
        else:
            # KL(pi || pi_Q) over the support: the masked softmax of the head (outside the mask pi_Q is zero).
            target_log_probs = th.log_softmax(target_logits, dim=-1)
            masked_log_probs = F.log_softmax(logits.masked_fill(~data.supports, -th.inf), dim=-1)
            probs = masked_log_probs.exp()
            log_ratio = (masked_log_probs - target_log_probs).masked_fill(~data.supports, 0.0)
            actor_loss = (probs * log_ratio).sum(dim=-1).mean()
            kl = actor_loss.detach()
        return critic_loss, current_q.detach().mean(), (actor_loss, kl)

    def critic_values(self, policy: Any, observations: PyTorchObs, actions: np.ndarray) -> th.Tensor:
        q_values = policy.critic(observations)
        index = th.as_tensor(np.asarray(actions, dtype=np.int64).reshape(-1, 1), device=q_values.device)
        return q_values.gather(1, index)[:, 0]

    def induced_step(
        self,
        learner: SoftQLearner,
        observations: PyTorchObs,
        supports: th.Tensor,
        alpha: float,
        deterministic: bool,
    ) -> InducedStep:
        behavior = learner.behavior_policy
        assert isinstance(behavior, DiscreteBehaviorPolicy)
        with th.no_grad():
            log_behavior = behavior.log_probs(observations, supports)
            q_values = learner.policy.critic(observations)
            logits = induced_logits(q_values, log_behavior, alpha)
            log_probs = th.log_softmax(logits, dim=-1)
            sampled = None if deterministic else th.distributions.Categorical(logits=logits).sample()
            actions = log_probs.argmax(dim=-1) if sampled is None else sampled
            # Outside the support both log-probabilities are -inf and the probability 0: those terms are 0.
            kl = (log_probs.exp() * (log_probs - log_behavior)).masked_fill(~th.isfinite(log_behavior), 0.0).sum(-1)
            chosen_q = q_values.gather(1, actions.unsqueeze(1))[:, 0]
        return InducedStep(actions, chosen_q, kl, log_probs)
