"""
Behavior policies for ``Box`` actions, supported strictly inside each state's safe box.

They work in the environment's action units: ``support`` is a tensor of safe boxes of shape ``(batch, 2,
action_dim)`` (row 0 the lower, row 1 the upper bound, as ``safe_action_bounds()`` gives them), samples have shape
``(batch, n_samples, action_dim)`` and log-densities ``(batch, n_samples)``. Axes where the box is a single point
(``low == high``) carry no density (see :mod:`sb3_safeq.common.supports.box_utils`).

To write your own, subclass :class:`BoxBehaviorPolicy` and implement :meth:`~BoxBehaviorPolicy.sample` and
:meth:`~BoxBehaviorPolicy.log_prob` with these shapes, or pass ``SafeSupportQ(behavior=fn)`` a function returning a
``torch.distributions.Distribution`` (see :class:`CallableBoxBehavior`).
"""

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.base import BehaviorPolicy, observations_to_numpy
from sb3_safeq.common.supports.box_utils import (
    POINT_WIDTH,
    check_boxes,
    clamp_into,
    empty_box_message,
    empty_boxes,
    inside_mask,
)
from sb3_safeq.common.supports.errors import EmptySupportError

#: ``fn(observations, low, high) -> Distribution`` over actions of shape ``(batch, action_dim)`` (env units).
DistributionFn = Callable[[PyTorchObs, th.Tensor, th.Tensor], th.distributions.Distribution]
#: ``controller(observations) -> actions``: numpy observations (batched), numpy actions ``(batch, action_dim)``.
ControllerFn = Callable[[Any], np.ndarray]


class BoxBehaviorPolicy(BehaviorPolicy):
    """Base class of behavior policies over ``Box`` actions (see the module docstring for units and shapes)."""

    def act(self, observations: PyTorchObs, support: np.ndarray) -> np.ndarray:
        """
        :param observations: batch of observations (tensor)
        :param support: safe boxes ``(batch, 2, action_dim)`` in action units (numpy)
        :return: one action per observation ``(batch, action_dim)``, inside its box
        """
        if empty_boxes(support).any():
            raise EmptySupportError(empty_box_message("A state given to the behavior policy"))
        return super().act(observations, support)


class UniformBoxBehavior(BoxBehaviorPolicy):
    """Uniform in the safe box of each state: the default, it needs no knowledge of the task."""

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        check_boxes(support)
        low, high = support[:, 0].unsqueeze(1), support[:, 1].unsqueeze(1)
        noise = th.rand((support.shape[0], n_samples, support.shape[-1]), device=support.device)
        return clamp_into(low + (high - low) * noise, support)

    def act(self, observations: PyTorchObs, support: np.ndarray) -> np.ndarray:
        if empty_boxes(support).any():
            raise EmptySupportError(empty_box_message("A state given to the behavior policy"))
        low, high = support[:, 0], support[:, 1]
        actions = low + (high - low) * np.random.random(low.shape).astype(support.dtype)
        return np.minimum(np.maximum(actions, low), high)

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        width = support[:, 1] - support[:, 0]
        log_volume = th.where(width > POINT_WIDTH, width.clamp_min(POINT_WIDTH).log(), th.zeros_like(width)).sum(-1)
        log_density = (-log_volume).unsqueeze(1).expand(actions.shape[:2])
        return log_density.masked_fill(~inside_mask(actions, support), -th.inf)

    def __repr__(self) -> str:
        return "UniformBoxBehavior()"


def log_ndtr_difference(lower: th.Tensor, upper: th.Tensor) -> th.Tensor:
    """
    ``log(Phi(upper) - Phi(lower))`` for ``lower <= upper <= 0``, stable deep in the left tail.
    """
    log_upper = th.special.log_ndtr(upper)
    return log_upper + th.log1p(-th.exp(th.special.log_ndtr(lower) - log_upper).clamp(max=1.0 - 1e-16))


def truncated_standard_normal(lower: th.Tensor, upper: th.Tensor, uniform: th.Tensor) -> th.Tensor:
    """
    Inverse-cdf sampling of a standard normal truncated to ``[lower, upper]`` (``lower <= 0``), in log space.

    ``Phi`` itself underflows (torch's ``ndtr`` already returns 0 at -10), so the target cdf value is built from
    ``log_ndtr`` and the quantile polished by Newton steps on ``log_ndtr(z) = log p`` (increasing and concave, so
    the steps converge from either side; clamping keeps every iterate in the interval).

    :param lower: standardised lower bounds (float64)
    :param upper: standardised upper bounds, ``>= lower``
    :param uniform: uniform draws in ``[0, 1)``, broadcastable with the bounds
    :return: the samples, in ``[lower, upper]``
    """
    log_cdf_lower, log_cdf_upper = th.special.log_ndtr(lower), th.special.log_ndtr(upper)
    log_target = log_cdf_upper + th.log(uniform + (1.0 - uniform) * th.exp(log_cdf_lower - log_cdf_upper))
    # Start from the plain quantile where p is representable, else from the tail asymptote of Phi^-1.
    tail = log_target.clamp(max=-1.0)
    asymptote = -th.sqrt(-2.0 * tail - th.log(-2.0 * tail) - math.log(2.0 * math.pi)).nan_to_num(0.0)
    quantile = th.special.ndtri(log_target.exp())
    z = th.where(th.isfinite(quantile), quantile, asymptote)
    z = th.minimum(th.maximum(z, lower), upper)
    for _ in range(4):
        log_cdf = th.special.log_ndtr(z)
        log_pdf = -0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
        z = z - (log_cdf - log_target) * th.exp(log_cdf - log_pdf)
        z = th.minimum(th.maximum(z, lower), upper)
    return z


class TruncatedGaussianBehavior(BoxBehaviorPolicy):
    """
    A user's controller plus Gaussian noise, truncated to the safe box: a safe behavior that is already decent.

    Per axis, the action follows a normal distribution centred on ``controller(obs)`` with standard deviation
    ``noise_std``, conditioned on lying in ``[low, high]``. Its log-density is exact (the normalising constant
    ``Phi(b) - Phi(a)`` is computed in the tail-stable form), so it suits the reverse-KL extraction as well. The
    controller's action may lie outside the box: the truncated distribution then concentrates on the nearest side.

    :param controller: ``controller(observations) -> actions``, numpy in and out, batched: observations as the replay
        buffer stores them (a dict of arrays for Dict spaces), actions ``(batch, action_dim)`` in action units
    :param noise_std: standard deviation of the noise in action units, a float or one per action axis (> 0)
    """

    def __init__(self, controller: ControllerFn, noise_std: float | np.ndarray) -> None:
        if not callable(controller):
            raise TypeError(f"controller must be callable (observations -> actions), got {controller!r}.")
        noise = np.asarray(noise_std, dtype=np.float64)
        if noise.ndim > 1 or not np.all(np.isfinite(noise)) or np.any(noise <= 0):
            raise ValueError(
                f"noise_std={noise_std!r} is invalid: give one finite standard deviation > 0, or one per action axis."
            )
        self.controller = controller
        self.noise_std = noise

    def _centre(self, observations: PyTorchObs, support: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """:return: mean and standard deviation, float64, ``(batch, 1, action_dim)``"""
        batch, _, action_dim = support.shape
        mean = np.asarray(self.controller(observations_to_numpy(observations)), dtype=np.float64)
        if mean.size != batch * action_dim:
            raise ValueError(
                f"The controller returned an array of shape {mean.shape}, expected ({batch}, {action_dim}): one "
                "action per observation."
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("The controller returned NaN or infinite actions.")
        std = np.broadcast_to(self.noise_std, (action_dim,))
        mean_t = th.as_tensor(mean.reshape(batch, 1, action_dim), device=support.device)
        std_t = th.as_tensor(np.array(std), device=support.device).reshape(1, 1, action_dim)
        return mean_t, std_t

    @staticmethod
    def _standard_interval(
        support: th.Tensor, mean: th.Tensor, std: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Standardised truncation interval, flipped to the left of 0 where it lies right of the mean (the left tail of
        ``Phi`` keeps its relative precision, the right one does not).

        :return: ``lower``, ``upper`` (``lower <= upper``, ``lower <= 0``) and the flip sign per axis
        """
        low = (support[:, 0].unsqueeze(1).double() - mean) / std
        high = (support[:, 1].unsqueeze(1).double() - mean) / std
        flip = low > 0
        sign = th.where(flip, -1.0, 1.0).to(low.dtype)
        lower = th.where(flip, -high, low)
        upper = th.where(flip, -low, high)
        return lower, upper, sign

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        check_boxes(support)
        mean, std = self._centre(observations, support)
        lower, upper, sign = self._standard_interval(support, mean, std)
        batch, _, action_dim = support.shape
        uniform = th.rand((batch, n_samples, action_dim), dtype=th.float64, device=support.device)
        standard = truncated_standard_normal(lower, upper, uniform)
        actions = (mean + sign * standard * std).to(support.dtype)
        return clamp_into(actions, support)

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        mean, std = self._centre(observations, support)
        lower, upper, _ = self._standard_interval(support, mean, std)
        standard = (actions.double() - mean) / std
        log_normaliser = log_ndtr_difference(lower, upper)
        log_density = -0.5 * standard**2 - 0.5 * math.log(2 * math.pi) - th.log(std) - log_normaliser
        width = (support[:, 1] - support[:, 0]).unsqueeze(1)
        log_density = th.where(width > POINT_WIDTH, log_density, th.zeros_like(log_density)).sum(-1)
        return log_density.to(actions.dtype).masked_fill(~inside_mask(actions, support), -th.inf)

    def __repr__(self) -> str:
        return f"TruncatedGaussianBehavior(controller={self.controller!r}, noise_std={self.noise_std.tolist()})"


class CallableBoxBehavior(BoxBehaviorPolicy):
    """
    A behavior policy given as a function returning a torch distribution, e.g. a Beta distribution stretched to the
    box or a mixture around a hand-written controller.

    The function receives the observations (tensors, batched as the replay buffer stores them), and the lower and
    upper bounds ``(batch, action_dim)`` in action units; it returns a ``torch.distributions.Distribution`` over
    actions of shape ``(batch, action_dim)`` (``batch_shape == (batch,)`` with ``event_shape == (action_dim,)``, or
    ``batch_shape == (batch, action_dim)`` for independent axes). Its samples must lie in the box: a sample outside
    is an error rather than silently clipped, since it would mean the distribution is not safe-supported.

    :param distribution_fn: ``fn(observations, low, high) -> Distribution``
    :param atol: distance outside the box tolerated (floating-point noise) and clipped away
    """

    def __init__(self, distribution_fn: DistributionFn, atol: float = 1e-6) -> None:
        if not callable(distribution_fn):
            raise TypeError(f"distribution_fn must be callable, got {distribution_fn!r}.")
        self.distribution_fn = distribution_fn
        self.atol = atol

    def _distribution(self, observations: PyTorchObs, support: th.Tensor) -> th.distributions.Distribution:
        distribution = self.distribution_fn(observations, support[:, 0], support[:, 1])
        if not isinstance(distribution, th.distributions.Distribution):
            raise TypeError(
                f"The behavior distribution function returned {type(distribution).__name__}, expected a "
                "torch.distributions.Distribution over actions of shape (batch, action_dim)."
            )
        return distribution

    @staticmethod
    def _event_log_prob(log_prob: th.Tensor, action_dim: int) -> th.Tensor:
        # Independent axes come as (..., action_dim): their joint log-density is the sum.
        return log_prob.sum(-1) if log_prob.shape[-1:] == (action_dim,) and log_prob.dim() == 3 else log_prob

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        check_boxes(support)
        samples = self._distribution(observations, support).sample((n_samples,)).transpose(0, 1)
        expected = (support.shape[0], n_samples, support.shape[-1])
        if samples.shape != expected:
            raise ValueError(
                f"The behavior distribution draws samples of shape {tuple(samples.shape[2:])} per observation "
                f"(batch {samples.shape[0]}), expected actions of shape ({support.shape[-1]},) for a batch of "
                f"{support.shape[0]}."
            )
        low, high = support[:, 0].unsqueeze(1), support[:, 1].unsqueeze(1)
        outside = th.maximum(low - samples, samples - high).max()
        if not bool(outside <= self.atol):
            raise ValueError(
                f"The behavior distribution drew an action {float(outside):.3g} outside the safe box. A behavior "
                "policy must be supported inside the box only: build the distribution from the `low` and `high` "
                "arguments (e.g. a Beta distribution scaled to [low, high])."
            )
        return clamp_into(samples.to(support.dtype), support)

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        distribution = self._distribution(observations, support)
        inside = inside_mask(actions, support)
        # Score inside points only: many distributions raise or return NaN outside their support.
        safe_actions = th.where(inside.unsqueeze(-1), actions, clamp_into(actions, support))
        log_prob = distribution.log_prob(safe_actions.transpose(0, 1))
        log_prob = self._event_log_prob(log_prob, support.shape[-1]).transpose(0, 1)
        return log_prob.to(actions.dtype).masked_fill(~inside, -th.inf)

    def __repr__(self) -> str:
        return f"CallableBoxBehavior({self.distribution_fn!r})"
