"""
A Gaussian squashed into each state's safe box, the extraction policy of SafeSupportQ for ``Box`` actions.

With ``u ~ N(mean, std)`` per axis and the box ``[low, high]`` (agent units, ``[-1, 1]``), the action is

    a = low + (high - low) * (tanh(u) + 1) / 2

so every action lies in the box by construction: the support of the extracted policy is inside the support of
``beta`` (the "parametric extraction" of Safe-Support Q-Learning, docs/guide.md). Axes where the box is a single
point carry no density (see :mod:`sb3_safeq.common.supports.box_utils`): their log-Jacobian and Gaussian terms are
left out of the log-density, as they are for the behavior policy.
"""

import math

import torch as th
from torch.nn import functional as F

from sb3_safeq.common.supports.box_utils import POINT_WIDTH

#: ``log_std`` of the pre-squash Gaussian is clamped to this range (as SAC does).
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Actions are mapped back to tanh-space strictly inside (-1, 1): at the bounds ``atanh`` is infinite.
_TANH_EDGE = 1.0 - 1e-6
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _box_parts(bounds: th.Tensor, like: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """:return: lower bounds, widths and the "axis has volume" mask, shaped to broadcast with ``like``"""
    low, width = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    if like.dim() == 3:
        low, width = low.unsqueeze(1), width.unsqueeze(1)
    return low, width, width > POINT_WIDTH


def squash(pre_squash: th.Tensor, bounds: th.Tensor) -> th.Tensor:
    """
    :param pre_squash: ``u``, shape ``(batch, action_dim)`` or ``(batch, n, action_dim)``
    :param bounds: boxes ``(batch, 2, action_dim)`` in agent units
    :return: the actions, in the boxes (clamped against rounding)
    """
    low, width, _ = _box_parts(bounds, pre_squash)
    high = bounds[:, 1].unsqueeze(1) if pre_squash.dim() == 3 else bounds[:, 1]
    actions = low + width * (th.tanh(pre_squash) + 1.0) / 2.0
    # Clamp to the stored bounds themselves: in float32 `low + (high - low)` can round above `high`.
    return th.minimum(th.maximum(actions, low), high)


def _log_tanh_jacobian(pre_squash: th.Tensor) -> th.Tensor:
    """``log(1 - tanh(u)^2)``, stable for large ``|u|``."""
    return 2.0 * (math.log(2.0) - pre_squash - F.softplus(-2.0 * pre_squash))


def _gaussian_log_density(pre_squash: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    return -0.5 * ((pre_squash - mean) / log_std.exp()) ** 2 - log_std - _HALF_LOG_TWO_PI


def rsample(mean: th.Tensor, log_std: th.Tensor, bounds: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    Reparameterised sample and its log-density.

    :param mean: Gaussian mean of ``u``, ``(batch, action_dim)``
    :param log_std: Gaussian log standard deviation of ``u``, same shape
    :param bounds: boxes ``(batch, 2, action_dim)`` in agent units
    :return: actions ``(batch, action_dim)`` and their log-densities ``(batch,)``
    """
    pre_squash = mean + log_std.exp() * th.randn_like(mean)
    _, width, has_volume = _box_parts(bounds, pre_squash)
    per_axis = (
        _gaussian_log_density(pre_squash, mean, log_std)
        - _log_tanh_jacobian(pre_squash)
        - th.log(width.clamp_min(POINT_WIDTH) / 2.0)
    )
    return squash(pre_squash, bounds), th.where(has_volume, per_axis, th.zeros_like(per_axis)).sum(-1)


def log_prob(actions: th.Tensor, mean: th.Tensor, log_std: th.Tensor, bounds: th.Tensor) -> th.Tensor:
    """
    Log-density of given in-box actions (e.g. behavior samples, for the advantage-weighted extraction).

    :param actions: ``(batch, n, action_dim)`` in agent units, inside the boxes
    :param mean: Gaussian mean of ``u``, ``(batch, action_dim)``
    :param log_std: Gaussian log standard deviation of ``u``, same shape
    :param bounds: boxes ``(batch, 2, action_dim)`` in agent units
    :return: log-densities ``(batch, n)``
    """
    low, width, has_volume = _box_parts(bounds, actions)
    safe_width = width.clamp_min(POINT_WIDTH)
    tanh_u = (2.0 * (actions - low) / safe_width - 1.0).clamp(-_TANH_EDGE, _TANH_EDGE)
    pre_squash = th.atanh(tanh_u)
    per_axis = (
        _gaussian_log_density(pre_squash, mean.unsqueeze(1), log_std.unsqueeze(1))
        - th.log1p(-(tanh_u**2))
        - th.log(safe_width / 2.0)
    )
    return th.where(has_volume, per_axis, th.zeros_like(per_axis)).sum(-1)


def mode(mean: th.Tensor, bounds: th.Tensor) -> th.Tensor:
    """
    :param mean: Gaussian mean of ``u``, ``(batch, action_dim)``
    :param bounds: boxes ``(batch, 2, action_dim)`` in agent units
    :return: the deterministic action: the squashed mean, inside the box
    """
    return squash(mean, bounds)
