"""Gradient clipping of several networks at once, each to its own norm (what one gradient step of SafeSupportQ does)."""

from collections.abc import Sequence

import torch as th


@th.no_grad()
def clip_grad_norms_(parameter_groups: Sequence[Sequence[th.Tensor]], max_norm: float) -> None:
    """
    ``torch.nn.utils.clip_grad_norm_(group, max_norm)`` for each group, with the same arithmetic (2-norm over the
    group's per-tensor norms, scale ``min(max_norm / (norm + 1e-6), 1)``) but one ``_foreach_norm`` over all groups:
    with small networks the per-call overhead of ``clip_grad_norm_`` (grouping by device and dtype, twice per
    gradient step) costs more than the arithmetic. Parameters without a gradient are skipped; a group without any
    is left alone.

    :param parameter_groups: the parameters of each network, clipped separately
    :param max_norm: the largest 2-norm of each group's gradient, > 0
    """
    grads_by_group = [
        [parameter.grad for parameter in group if parameter.grad is not None] for group in parameter_groups
    ]
    all_grads = [grad for grads in grads_by_group for grad in grads]
    if not all_grads:
        return
    norms = th._foreach_norm(all_grads, 2.0)
    start = 0
    for grads in grads_by_group:
        if not grads:
            continue
        group_norm = th.linalg.vector_norm(th.stack(norms[start : start + len(grads)]), 2.0)
        start += len(grads)
        th._foreach_mul_(grads, th.clamp(max_norm / (group_norm + 1e-6), max=1.0))
