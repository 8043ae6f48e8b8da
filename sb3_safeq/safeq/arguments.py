"""The checks of SafeSupportQ's constructor arguments, with the choices of its string arguments."""

import math
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_safeq.common.buffers import SupportStorage

#: Who collects the data after ``learning_starts``.
EXPLORATION_MODES = ("behavior", "induced", "mixture")
#: How the extraction head is fitted to the induced policy.
EXTRACTIONS = ("forward_kl", "reverse_kl")
#: The critic's regression loss.
LOSSES = ("huber", "mse")


def check_arguments(
    alpha: float | Callable[[float], float],
    exploration: str,
    mixture_weight: float,
    extraction: str,
    n_behavior_samples: int,
    loss: str,
    target_update_interval: int,
    actor_update_interval: int,
    tau: float,
    max_grad_norm: float,
    replay_buffer_class: type[ReplayBuffer] | None,
) -> None:
    """
    Fail loudly, at construction, on arguments of :class:`~sb3_safeq.SafeSupportQ` that cannot work (see its
    docstring for their meaning).
    """
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
    if actor_update_interval < 1:
        raise ValueError(f"actor_update_interval={actor_update_interval} must be >= 1 (gradient steps).")
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction={extraction!r} is invalid: choose one of {EXTRACTIONS}.")
    if not isinstance(n_behavior_samples, (int, np.integer)) or n_behavior_samples < 1:
        raise ValueError(
            f"n_behavior_samples={n_behavior_samples!r} must be an integer >= 1 (draws from the behavior policy "
            "per state; 16 is a good start)."
        )
    if replay_buffer_class is not None and not issubclass(replay_buffer_class, SupportStorage):
        raise ValueError(
            f"replay_buffer_class={replay_buffer_class.__name__} does not store safe supports. Use "
            "sb3_safeq.SafeReplayBuffer / SafeDictReplayBuffer (the default), or a subclass of them."
        )
