"""
Behavior policies over ``Discrete`` actions, supported on each state's boolean action mask.

To write your own, subclass :class:`DiscreteBehaviorPolicy` and implement :meth:`DiscreteBehaviorPolicy.log_probs`,
or pass a probability function to ``SafeSupportQ(behavior=fn)`` (see :class:`CallableDiscreteBehavior`).
"""

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.base import BehaviorPolicy, observations_to_numpy
from sb3_safeq.common.supports.errors import EmptySupportError
from sb3_safeq.common.supports.mask_utils import empty_mask_message

#: ``fn(observations, masks) -> probabilities``: numpy observations (a dict of arrays for Dict spaces) with a
#: leading batch dimension, boolean masks ``(batch, n_actions)``; returns probabilities ``(batch, n_actions)``.
ProbabilityFn = Callable[[Any, np.ndarray], np.ndarray]


class DiscreteBehaviorPolicy(BehaviorPolicy):
    """
    A behavior policy over ``Discrete`` actions, defined by its full table of log-probabilities.

    Subclasses implement :meth:`log_probs`; sampling and scoring follow from it.
    """

    @abstractmethod
    def log_probs(self, observations: PyTorchObs, masks: th.Tensor) -> th.Tensor:
        """
        Log-probabilities of every action.

        :param observations: batch of observations
        :param masks: boolean safe-action masks, shape ``(batch, n_actions)``
        :return: log-probabilities, shape ``(batch, n_actions)``, ``-inf`` where the mask is False
        """

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        probs = self.log_probs(observations, support).exp()
        return th.multinomial(probs, n_samples, replacement=True)

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return th.gather(self.log_probs(observations, support), dim=-1, index=actions.long())


class MaskedUniformBehavior(DiscreteBehaviorPolicy):
    """Uniform over the safe actions of each state: the default, it needs no knowledge of the task."""

    def log_probs(self, observations: PyTorchObs, masks: th.Tensor) -> th.Tensor:
        # A row without safe action (a terminal state may have one) comes out all -inf: "no support".
        log_uniform = masks.sum(dim=-1, keepdim=True, dtype=th.float32).log_().neg_()
        # One select broadcasting the row's value (this runs twice in every gradient step).
        return th.where(masks, log_uniform, -th.inf)

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        # Sampling straight from the mask avoids building the log-probability table on the acting hot path.
        if bool((~support.any(dim=-1)).any()):
            raise EmptySupportError(empty_mask_message("A state given to the behavior policy"))
        return th.multinomial(support.to(th.float32), n_samples, replacement=True)

    def act(self, observations: PyTorchObs, support: np.ndarray) -> np.ndarray:
        if not support.any(axis=-1).all():
            raise EmptySupportError(empty_mask_message("A state given to the behavior policy"))
        # The arg-max of i.i.d. uniform scores restricted to the mask is a uniform draw from the mask.
        scores = np.where(support, np.random.random(support.shape), -1.0)
        return scores.argmax(axis=-1)

    def __repr__(self) -> str:
        return "MaskedUniformBehavior()"


class CallableDiscreteBehavior(DiscreteBehaviorPolicy):
    """
    A behavior policy given by the user as a probability function, e.g. a hand-written safe controller with noise.

    The function receives numpy observations (batched, as stored in the replay buffer; a dict for Dict spaces) and
    the boolean masks ``(batch, n_actions)``, and returns action probabilities ``(batch, n_actions)``. Mass on
    unsafe actions is an error rather than silently removed: it would mean the controller is not safe-supported.
    Rows are renormalised, so unnormalised non-negative weights are accepted.

    :param probability_fn: ``fn(observations, masks) -> probabilities``
    :param atol: probability mass tolerated outside the mask (floating-point noise)
    """

    def __init__(self, probability_fn: ProbabilityFn, atol: float = 1e-6) -> None:
        if not callable(probability_fn):
            raise TypeError(f"probability_fn must be callable, got {probability_fn!r}.")
        self.probability_fn = probability_fn
        self.atol = atol

    def log_probs(self, observations: PyTorchObs, masks: th.Tensor) -> th.Tensor:
        masks_np = masks.detach().cpu().numpy().astype(bool)
        probs = np.asarray(self.probability_fn(observations_to_numpy(observations), masks_np), dtype=np.float64)
        if probs.shape != masks_np.shape:
            raise ValueError(
                f"The behavior probability function returned shape {probs.shape}, expected {masks_np.shape} "
                "(one row of action probabilities per observation)."
            )
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise ValueError("The behavior probability function returned negative, NaN or infinite probabilities.")
        unsafe_mass = np.where(masks_np, 0.0, probs).sum(axis=-1)
        if np.any(unsafe_mass > self.atol):
            raise ValueError(
                f"The behavior probability function puts up to {unsafe_mass.max():.3g} probability on actions "
                "outside the safe mask. A behavior policy must be supported on the safe set only: multiply your "
                "probabilities by the mask (the `masks` argument) before returning them."
            )
        probs = np.where(masks_np, probs, 0.0)
        totals = probs.sum(axis=-1, keepdims=True)
        if np.any(totals <= 0):
            if not masks_np.any(axis=-1).all():
                raise EmptySupportError(empty_mask_message("A state given to the behavior policy"))
            raise ValueError(
                "The behavior probability function gives zero probability to every safe action of some state; "
                "it must put positive mass on at least one safe action."
            )
        with np.errstate(divide="ignore"):
            log_probs = np.log(probs / totals)
        return th.as_tensor(log_probs, dtype=th.float32, device=masks.device)

    def __repr__(self) -> str:
        return f"CallableDiscreteBehavior({self.probability_fn!r})"
