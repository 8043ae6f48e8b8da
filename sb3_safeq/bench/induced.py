"""The induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` of a SafeSupportQ model, as a ``predict`` function."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from sb3_safeq.common.backup import induced_logits
from sb3_safeq.common.bounds import clip_into
from sb3_safeq.safeq.box_policies import q_values_of_samples


def induced_predict_fn(model: Any) -> Callable[..., tuple[np.ndarray, None]] | None:
    """
    :param model: a trained :class:`~sb3_safeq.SafeSupportQ`
    :return: ``predict(observation, deterministic=..., action_masks=... | safe_bounds=...)`` acting with ``pi_Q``,
        for :func:`~sb3_safeq.common.evaluation.evaluate_safe_policy`; None for other models. Discrete actions: the
        exact ``pi_Q`` over the mask (its mode when deterministic). Box actions: importance resampling of
        ``n_behavior_samples`` draws from ``beta`` with weights ``softmax(Q / alpha)``, as the induced exploration
        does (deterministic: the draw with the highest Q, so the mode of the resampled distribution).
    """
    if not hasattr(model, "current_alpha") or not hasattr(model, "behavior_policy"):
        return None
    if model.is_box:
        return _box_induced_predict_fn(model)

    def predict(
        observation: np.ndarray, deterministic: bool = True, action_masks: np.ndarray | None = None, **_: Any
    ) -> tuple[np.ndarray, None]:
        if action_masks is None:
            raise ValueError("The induced policy needs the safe masks (action_masks=).")
        observations, _ = model.policy.obs_to_tensor(observation)
        with th.no_grad():
            masks = th.as_tensor(np.asarray(action_masks, dtype=bool), device=model.device)
            log_behavior = model.behavior_policy.log_probs(observations, masks)
            logits = induced_logits(model.q_net(observations), log_behavior, model.current_alpha())
            sampled = None if deterministic else th.distributions.Categorical(logits=logits).sample()
            actions = logits.argmax(dim=-1) if sampled is None else sampled
        return actions.cpu().numpy(), None

    return predict


def _box_induced_predict_fn(model: Any) -> Callable[..., tuple[np.ndarray, None]]:
    scaler = model.policy.scaler

    def predict(
        observation: np.ndarray,
        deterministic: bool = True,
        safe_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        **_: Any,
    ) -> tuple[np.ndarray, None]:
        if safe_bounds is None:
            raise ValueError("The induced policy needs the safe boxes (safe_bounds=(low, high)).")
        raw_boxes = np.stack([np.atleast_2d(np.asarray(bound, dtype=np.float64)) for bound in safe_bounds], axis=1)
        observations, _ = model.policy.obs_to_tensor(observation)
        boxes = th.as_tensor(scaler.to_agent(raw_boxes), dtype=th.float32, device=model.device)
        with th.no_grad():
            samples = model._behavior_samples(observations, boxes, model.n_behavior_samples)
            q_values = model._reduce_twins(q_values_of_samples(model.critic, observations, samples))
            if deterministic:
                choice = q_values.argmax(dim=-1)
            else:
                choice = th.distributions.Categorical(logits=q_values / model.current_alpha()).sample()
            actions = samples[th.arange(samples.shape[0], device=samples.device), choice]
        # Back in environment units, clipped into the box as given so that unit rounding cannot leave it.
        return clip_into(scaler.to_env(actions.cpu().numpy()), raw_boxes).astype(model.action_space.dtype), None

    return predict
