"""The induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` of a SafeSupportQ model, as a ``predict`` function."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from sb3_safeq.common.backup import induced_logits
from sb3_safeq.common.bounds import clip_into
from sb3_safeq.safeq.box_policies import q_values_of_samples


@dataclass(frozen=True)
class InducedStep:
    """
    One action of ``pi_Q`` per observation, with what the soft calibration needs.

    :param actions: the actions, in environment units (Box actions: clipped into the safe box as given)
    :param q_values: the critic's ``Q̂(s, a)`` of these actions, as the soft Bellman target uses it (``q_net`` for
        Discrete actions, the twin minimum or mean for Box actions)
    :param kl: ``KL(pi_Q(.|s) || beta(.|s))``: exact for Discrete actions; for Box actions the self-normalised
        estimate over the ``n_behavior_samples`` draws, ``sum_i w_i log(N w_i)`` with ``w = softmax(Q / alpha)``
        (at most ``log N``, so it understates a KL larger than that)
    """

    actions: np.ndarray
    q_values: np.ndarray
    kl: np.ndarray


InducedStepFn = Callable[..., InducedStep]
"""``step(observation, deterministic=..., action_masks=... | safe_bounds=...) -> InducedStep``."""


def induced_step_fn(model: Any) -> InducedStepFn | None:
    """
    :param model: a trained :class:`~sb3_safeq.SafeSupportQ`
    :return: a function acting with ``pi_Q`` that also returns the Q-values of its actions and the KL to ``beta``
        (see :class:`InducedStep`), or None for other models. Discrete actions: the exact ``pi_Q`` over the mask
        (its mode when deterministic). Box actions: importance resampling of ``n_behavior_samples`` draws from
        ``beta`` with weights ``softmax(Q / alpha)``, as the induced exploration does (deterministic: the draw with
        the highest Q, so the mode of the resampled distribution).
    """
    if not hasattr(model, "current_alpha") or not hasattr(model, "behavior_policy"):
        return None
    if model.is_box:
        return _box_induced_step_fn(model)

    def step(
        observation: np.ndarray, deterministic: bool = True, action_masks: np.ndarray | None = None, **_: Any
    ) -> InducedStep:
        if action_masks is None:
            raise ValueError("The induced policy needs the safe masks (action_masks=).")
        observations, _ = model.policy.obs_to_tensor(observation)
        alpha = model.current_alpha()
        with th.no_grad():
            masks = th.as_tensor(np.asarray(action_masks, dtype=bool), device=model.device)
            log_behavior = model.behavior_policy.log_probs(observations, masks)
            q_values = model.q_net(observations)
            log_probs = th.log_softmax(induced_logits(q_values, log_behavior, alpha), dim=-1)
            sampled = None if deterministic else th.distributions.Categorical(logits=log_probs).sample()
            actions = log_probs.argmax(dim=-1) if sampled is None else sampled
            # Outside the support both log-probabilities are -inf and the probability 0: those terms are 0.
            kl = (log_probs.exp() * (log_probs - log_behavior)).masked_fill(~th.isfinite(log_behavior), 0.0).sum(-1)
            chosen_q = q_values.gather(1, actions.unsqueeze(1))[:, 0]
        return InducedStep(actions.cpu().numpy(), chosen_q.cpu().numpy(), kl.cpu().numpy())

    return step


def _box_induced_step_fn(model: Any) -> InducedStepFn:
    scaler = model.policy.scaler

    def step(
        observation: np.ndarray,
        deterministic: bool = True,
        safe_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        **_: Any,
    ) -> InducedStep:
        if safe_bounds is None:
            raise ValueError("The induced policy needs the safe boxes (safe_bounds=(low, high)).")
        raw_boxes = np.stack([np.atleast_2d(np.asarray(bound, dtype=np.float64)) for bound in safe_bounds], axis=1)
        observations, _ = model.policy.obs_to_tensor(observation)
        boxes = th.as_tensor(scaler.to_agent(raw_boxes), dtype=th.float32, device=model.device)
        n_samples = model.n_behavior_samples
        with th.no_grad():
            samples = model._behavior_samples(observations, boxes, n_samples)
            q_values = model._reduce_twins(q_values_of_samples(model.critic, observations, samples))
            log_weights = th.log_softmax(q_values / model.current_alpha(), dim=-1)
            if deterministic:
                choice = q_values.argmax(dim=-1)
            else:
                choice = th.distributions.Categorical(logits=log_weights).sample()
            rows = th.arange(samples.shape[0], device=samples.device)
            actions = samples[rows, choice]
            kl = (log_weights.exp() * (log_weights + math.log(n_samples))).sum(dim=-1)
        # Back in environment units, clipped into the box as given so that unit rounding cannot leave it.
        env_actions = clip_into(scaler.to_env(actions.cpu().numpy()), raw_boxes).astype(model.action_space.dtype)
        return InducedStep(env_actions, q_values[rows, choice].cpu().numpy(), kl.cpu().numpy())

    return step


def induced_predict_fn(model: Any) -> Callable[..., tuple[np.ndarray, None]] | None:
    """
    :param model: a trained :class:`~sb3_safeq.SafeSupportQ`
    :return: ``predict(observation, deterministic=..., action_masks=... | safe_bounds=...)`` acting with ``pi_Q``
        (see :func:`induced_step_fn`), for :func:`~sb3_safeq.common.evaluation.evaluate_safe_policy`; None for
        other models
    """
    step = induced_step_fn(model)
    if step is None:
        return None

    def predict(observation: np.ndarray, deterministic: bool = True, **supports: Any) -> tuple[np.ndarray, None]:
        return step(observation, deterministic=deterministic, **supports).actions, None

    return predict
