"""The checks of SafeSupportQ's constructor arguments, with the choices of its string arguments."""

import math
import numbers
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_safeq.common.buffers import SupportStorage


class InvalidArgumentError(ValueError):
    """A constructor argument of SafeSupportQ that cannot work (the message names the valid values)."""


#: Who collects the data after ``learning_starts``.
EXPLORATION_MODES = ("behavior", "induced", "mixture")
#: How the extraction head is fitted to the induced policy.
EXTRACTIONS = ("forward_kl", "reverse_kl")
#: The critic's regression loss.
LOSSES = ("huber", "mse")


def _is_real(value: object) -> bool:
    """:return: whether ``value`` is a real number (numpy scalars included, booleans excluded)"""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_integer(value: object) -> bool:
    """:return: whether ``value`` is an integer (numpy integers included, booleans excluded)"""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_alpha(alpha: float | Callable[[float], float]) -> None:
    hint = (
        "the KL temperature must be a finite number > 0 (or a schedule of the remaining progress returning one). "
        "Small values (e.g. 0.01-0.1 times the reward scale) give a near-greedy safe policy, large ones stay close "
        "to the behavior policy."
    )
    if callable(alpha):
        # A schedule is checked over its whole range now, rather than failing in the middle of training.
        for progress in (1.0, 0.75, 0.5, 0.25, 0.0):
            value = alpha(progress)
            if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
                raise InvalidArgumentError(
                    f"The alpha schedule gives {value!r} at remaining progress {progress}: {hint}"
                )
        return
    if not _is_real(alpha) or not math.isfinite(float(alpha)) or float(alpha) <= 0:
        raise InvalidArgumentError(f"alpha={alpha!r} is invalid: {hint}")


def check_arguments(
    alpha: float | Callable[[float], float],
    exploration: str,
    mixture_weight: float,
    extraction: str,
    n_behavior_samples: int,
    loss: str,
    target_update_interval: int,
    actor_update_interval: int | None,
    tau: float,
    max_grad_norm: float,
    replay_buffer_class: type[ReplayBuffer] | None,
    batch_size: int,
    gamma: float,
    n_steps: int,
) -> None:
    """
    Fail loudly, at construction, on arguments of :class:`~sb3_safeq.SafeSupportQ` that cannot work (see its
    docstring for their meaning).
    """
    _check_alpha(alpha)
    if n_steps != 1:
        raise InvalidArgumentError(
            f"n_steps={n_steps!r}: SafeSupportQ takes one-step targets only. Its critic is the soft value of the "
            "induced policy pi_Q; an n-step return sums rewards of actions drawn by the collecting policy (beta, or "
            "a mixture) without pi_Q's KL penalties and importance weights, so it would estimate another policy's "
            "value. Use n_steps=1 (the default)."
        )
    if not _is_integer(batch_size) or batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size={batch_size!r} must be an integer >= 1 (transitions per gradient step)."
        )
    if not _is_real(gamma) or not 0.0 <= float(gamma) <= 1.0:
        raise InvalidArgumentError(f"gamma={gamma!r} must be a discount factor in [0, 1].")
    for name, value in (("mixture_weight", mixture_weight), ("tau", tau), ("max_grad_norm", max_grad_norm)):
        if not _is_real(value):
            raise InvalidArgumentError(f"{name}={value!r} must be a number, got {type(value).__name__}.")
    intervals: tuple[tuple[str, int | None, bool], ...] = (
        ("target_update_interval", target_update_interval, False),
        ("actor_update_interval", actor_update_interval, True),  # None: the support kind's default
    )
    for name, interval, may_be_none in intervals:
        if not (may_be_none and interval is None) and not _is_integer(interval):
            raise InvalidArgumentError(
                f"{name}={interval!r} must be an integer (gradient steps), got {type(interval).__name__}."
            )
    if exploration not in EXPLORATION_MODES:
        raise InvalidArgumentError(f"exploration={exploration!r} is invalid: choose one of {EXPLORATION_MODES}.")
    if not 0.0 <= mixture_weight <= 1.0:
        raise InvalidArgumentError(f"mixture_weight={mixture_weight!r} must be a probability in [0, 1].")
    if loss not in LOSSES:
        raise InvalidArgumentError(f"loss={loss!r} is invalid: choose one of {LOSSES}.")
    if target_update_interval < 1:
        raise InvalidArgumentError(f"target_update_interval={target_update_interval} must be >= 1 (gradient steps).")
    if not 0.0 <= tau <= 1.0:
        raise InvalidArgumentError(
            f"tau={tau} must be in [0, 1] (1 is a hard target update, 0 a frozen target network)."
        )
    if max_grad_norm <= 0:
        raise InvalidArgumentError(f"max_grad_norm={max_grad_norm} must be > 0.")
    if actor_update_interval is not None and actor_update_interval < 1:
        raise InvalidArgumentError(f"actor_update_interval={actor_update_interval} must be >= 1 (gradient steps).")
    if extraction not in EXTRACTIONS:
        raise InvalidArgumentError(f"extraction={extraction!r} is invalid: choose one of {EXTRACTIONS}.")
    if not _is_integer(n_behavior_samples) or n_behavior_samples < 1:
        raise InvalidArgumentError(
            f"n_behavior_samples={n_behavior_samples!r} must be an integer >= 1 (draws from the behavior policy "
            "per state; 16 is a good start)."
        )
    if replay_buffer_class is not None and not issubclass(replay_buffer_class, SupportStorage):
        raise InvalidArgumentError(
            f"replay_buffer_class={replay_buffer_class.__name__} does not store safe supports. Use "
            "sb3_safeq.SafeReplayBuffer / SafeDictReplayBuffer (the default), or a subclass of them."
        )
