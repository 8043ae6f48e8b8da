"""
The extraction policy of the linear-constraint support: a Gaussian squashed into ``[-1, 1]^d`` and carried onto each
state's polytope by the gauge (radial) map around an interior point.

With ``z`` drawn from the squashed Gaussian of :mod:`~sb3_safeq.common.supports.squashed_box` on the whole box and
``a0`` the state's interior point (its Chebyshev centre),

    a = a0 + s(z) z,    s(z) = g_box(z) / g_P(z)

(:func:`~sb3_safeq.common.supports.polytope_utils.gauge_map`), so every action lies in the polytope by construction
and ``log pi(a) = log p(z) - d log s(z)``. The map is inverted in closed form: ``s`` is constant along rays, so the
``z`` of an action ``a`` is ``(a - a0) / s(a - a0)``. Everything is in agent units; a support is the stored layout
of :class:`~sb3_safeq.common.supports.polytope.PolytopeSupport`, ``(batch, rows + 1, d + 1)``.
"""

import torch as th

from sb3_safeq.common.supports import squashed_box
from sb3_safeq.common.supports.box_utils import full_boxes
from sb3_safeq.common.supports.polytope_utils import gauge_map

# Slacks of the interior point are floored here (as gauge_map does): finite gauges on flat sets.
_MIN_SLACK = 1e-12


def unpack(supports: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    :param supports: stored polytope supports ``(batch, rows + 1, d + 1)``
    :return: ``A`` ``(batch, rows, d)``, ``b`` ``(batch, rows)`` and the interior point ``a0`` ``(batch, d)``
    """
    return supports[:, :-1, :-1], supports[:, :-1, -1], supports[:, -1, :-1]


def _scale(directions: th.Tensor, supports: th.Tensor) -> th.Tensor:
    """
    :param directions: ``a - a0``, ``(batch, n, d)``
    :param supports: ``(batch, rows + 1, d + 1)`` in agent units
    :return: ``s`` of each direction, ``(batch, n)`` (1 for a zero direction)
    """
    matrix, offsets, center = unpack(supports)
    dim = matrix.shape[-1]
    identity = th.eye(dim, dtype=matrix.dtype, device=matrix.device).expand(matrix.shape[0], dim, dim)
    rows = th.cat([matrix, identity, -identity], dim=1)
    bounds = th.cat([offsets, th.ones_like(center), th.ones_like(center)], dim=1)
    slack = (bounds - (center.unsqueeze(1) @ rows.transpose(-1, -2)).squeeze(1)).clamp_min(_MIN_SLACK)
    box_gauge = directions.abs().amax(dim=-1)
    polytope_gauge = ((directions @ rows.transpose(-1, -2)) / slack.unsqueeze(1)).amax(dim=-1)
    zero = box_gauge <= 0.0
    return th.where(zero, th.ones_like(box_gauge), box_gauge / polytope_gauge.clamp_min(1e-30))


def rsample(mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    Reparameterised sample and its log-density.

    :param mean: Gaussian mean, ``(batch, d)``
    :param log_std: Gaussian log standard deviation, ``(batch, d)``
    :param supports: ``(batch, rows + 1, d + 1)`` in agent units
    :return: actions in the polytopes ``(batch, d)`` and their log-densities ``(batch,)``
    """
    z, log_pz = squashed_box.rsample(mean, log_std, full_boxes(mean.shape[0], mean.shape[-1], mean.device))
    matrix, offsets, center = unpack(supports)
    actions, log_det = gauge_map(z, matrix, offsets, center)
    return actions, log_pz - log_det


def log_prob(actions: th.Tensor, mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> th.Tensor:
    """
    Log-density of given actions inside the polytopes (e.g. behavior samples).

    :param actions: ``(batch, n, d)`` in agent units
    :param mean: Gaussian mean, ``(batch, d)``
    :param log_std: Gaussian log standard deviation, ``(batch, d)``
    :param supports: ``(batch, rows + 1, d + 1)`` in agent units
    :return: log-densities ``(batch, n)``
    """
    directions = actions - supports[:, -1, :-1].unsqueeze(1)
    scale = _scale(directions, supports)
    z = directions / scale.unsqueeze(-1)
    boxes = full_boxes(mean.shape[0], mean.shape[-1], mean.device)
    return squashed_box.log_prob(z, mean, log_std, boxes) - actions.shape[-1] * scale.log()


def mode(mean: th.Tensor, supports: th.Tensor) -> th.Tensor:
    """
    :param mean: Gaussian mean, ``(batch, d)``
    :param supports: ``(batch, rows + 1, d + 1)`` in agent units
    :return: the deterministic action, the image of the squashed mean, inside the polytope
    """
    z = squashed_box.mode(mean, full_boxes(mean.shape[0], mean.shape[-1], mean.device))
    matrix, offsets, center = unpack(supports)
    return gauge_map(z, matrix, offsets, center)[0]
