"""The induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` of a SafeSupportQ model, as the benchmark's ``predict``."""

from collections.abc import Callable
from typing import Any

import numpy as np

from sb3_safeq import InducedActions, SafeSupportQ

InducedStepFn = Callable[..., InducedActions]
"""``step(observation, deterministic=..., action_masks=... | safe_bounds=...) -> InducedActions``."""


def induced_step_fn(model: Any) -> InducedStepFn | None:
    """
    :param model: a trained model
    :return: :meth:`SafeSupportQ.induced_policy <sb3_safeq.SafeSupportQ.induced_policy>` of a SafeSupportQ model (the
        actions of ``pi_Q`` with their Q-values and the KL to ``beta``), None for other models
    """
    return model.induced_policy if isinstance(model, SafeSupportQ) else None


def induced_predict_fn(model: Any) -> Callable[..., tuple[np.ndarray, None]] | None:
    """
    :param model: a trained model
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
