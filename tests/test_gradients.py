"""``clip_grad_norms_``: torch's ``clip_grad_norm_`` per network, bit for bit, in one pass."""

import pytest
import torch as th
from torch import nn

from sb3_safeq.common.gradients import clip_grad_norms_


def _networks_with_gradients(seed: int, scale: float) -> tuple[nn.Module, nn.Module]:
    th.manual_seed(seed)
    critic, actor = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)), nn.Linear(5, 2)
    inputs = th.randn(11, 5)
    (scale * (critic(inputs).pow(2).sum() + actor(inputs).sum())).backward()
    return critic, actor


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_each_group_is_clipped_as_clip_grad_norm_does(scale: float) -> None:
    expected_critic, expected_actor = _networks_with_gradients(0, scale)
    for network in (expected_critic, expected_actor):
        nn.utils.clip_grad_norm_(network.parameters(), max_norm=0.5)
    critic, actor = _networks_with_gradients(0, scale)
    clip_grad_norms_([list(critic.parameters()), list(actor.parameters())], max_norm=0.5)
    for expected, clipped in zip(
        [*expected_critic.parameters(), *expected_actor.parameters()],
        [*critic.parameters(), *actor.parameters()],
        strict=True,
    ):
        assert th.equal(expected.grad, clipped.grad)
    # Clipped separately: each network's norm is at most 0.5 (not their joint norm).
    for network in (critic, actor):
        norm = th.linalg.vector_norm(th.stack([parameter.grad.norm() for parameter in network.parameters()]))
        assert norm <= 0.5 + 1e-6


def test_parameters_without_gradients_are_skipped() -> None:
    critic, actor = _networks_with_gradients(1, 1e3)
    for parameter in actor.parameters():
        parameter.grad = None
    clip_grad_norms_([list(critic.parameters()), list(actor.parameters())], max_norm=0.5)
    assert all(parameter.grad is None for parameter in actor.parameters())
    clip_grad_norms_([[], list(actor.parameters())], max_norm=0.5)  # nothing to clip: no error
