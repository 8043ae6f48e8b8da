"""The induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` of a SafeSupportQ model, as a ``predict`` function."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from sb3_safeq.common.backup import induced_logits


def induced_predict_fn(model: Any) -> Callable[..., tuple[np.ndarray, None]] | None:
    """
    :param model: a trained :class:`~sb3_safeq.SafeSupportQ`
    :return: ``predict(observation, deterministic=..., action_masks=...)`` acting with ``pi_Q`` (its mode when
        deterministic), for :func:`~sb3_safeq.common.evaluation.evaluate_safe_policy`; None for Box actions (not
        offered yet) and for other models
    """
    if getattr(model, "q_net", None) is None or not hasattr(model, "current_alpha"):
        return None

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
