"""
Behavior policies for linear-constraint supports, supported inside each state's polytope
``{a in action box : A a <= b}``.

They work in the environment's action units: ``support`` is a tensor of stored polytope supports of shape
``(batch, rows + 1, action_dim + 1)``: the rows ``[A | b]`` (unused rows are ``A_i = 0, b_i = 1``) and a last row
``[a0 | r]``, an interior point and the signed radius of the largest ball inside the set (see
:class:`~sb3_safeq.common.supports.polytope.PolytopeSupport`). Samples have shape ``(batch, n_samples, action_dim)``.

Log-densities are needed only by the reverse-KL extraction, where a constant per state does not change the
gradient: :meth:`PolytopeBehaviorPolicy.log_prob` may omit the normaliser (the uniform behavior returns 0 inside,
not ``-log volume``, which has no closed form for a polytope).

To write your own, subclass :class:`PolytopeBehaviorPolicy` and implement ``sample`` and ``log_prob`` with these
shapes.
"""

import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.supports.errors import EmptySupportError
from sb3_safeq.common.supports.polytope_utils import CONTAINS_TOLERANCE, contains_mask, sample_uniform


def polytope_parts(support: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    """
    :param support: stored polytope supports ``(batch, rows + 1, d + 1)``
    :return: ``A`` ``(batch, rows, d)``, ``b`` ``(batch, rows)``, the interior points ``(batch, d)`` and the signed
        radii ``(batch,)``
    """
    return support[:, :-1, :-1], support[:, :-1, -1], support[:, -1, :-1], support[:, -1, -1]


class PolytopeBehaviorPolicy(BehaviorPolicy):
    """
    Base class of behavior policies over linear-constraint supports (see the module docstring for units and shapes).

    :param low: lower bounds of the action space (set by SafeSupportQ through :meth:`bind`)
    :param high: upper bounds of the action space
    """

    low: th.Tensor | None = None
    high: th.Tensor | None = None

    def bind(self, low: th.Tensor, high: th.Tensor) -> None:
        """
        Give the behavior the action box every polytope is intersected with.

        :param low: lower bounds of the action space, ``(d,)``
        :param high: upper bounds, ``(d,)``
        """
        self.low, self.high = low, high

    def _box(self, support: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        if self.low is None or self.high is None:
            raise RuntimeError(f"{type(self).__name__} was not bound to an action space: call bind(low, high).")
        return self.low.to(support), self.high.to(support)

    @staticmethod
    def check_not_empty(support: th.Tensor) -> None:
        """:raises EmptySupportError: if a state's polytope is empty (negative radius)"""
        if bool((support[:, -1, -1] < -CONTAINS_TOLERANCE).any()):
            raise EmptySupportError(
                "A state given to the behavior policy has an empty polytope of safe actions (no action satisfies "
                "A a <= b in the action box): no safe-supported behavior can act there."
            )


class UniformPolytopeBehavior(PolytopeBehaviorPolicy):
    """
    Uniform in each state's polytope: exact rejection from the action box while the polytope fills enough of it,
    hit-and-run chains otherwise (:func:`~sb3_safeq.common.supports.polytope_utils.sample_uniform`).
    """

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        self.check_not_empty(support)
        low, high = self._box(support)
        matrix, offsets, center, radius = polytope_parts(support)
        # A flat set (no interior, e.g. a single safe action) has no uniform law: its draws are its centre, without
        # the rejection rounds and hit-and-run burn-in that could not leave it anyway.
        samples = center.unsqueeze(1).expand(-1, n_samples, -1).clone()
        solid = radius > CONTAINS_TOLERANCE
        if bool(solid.any()):
            drawn = sample_uniform(matrix[solid], offsets[solid], low, high, n_samples, interior=center[solid])
            assert isinstance(drawn, th.Tensor)
            samples[solid] = drawn
        return samples

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        # The uniform density is 1 / volume inside: the volume is a constant per state, left out (module docstring).
        low, high = self._box(support)
        matrix, offsets, _, _ = polytope_parts(support)
        inside = contains_mask(actions, matrix, offsets, low, high)
        return th.zeros(actions.shape[:2], dtype=actions.dtype, device=actions.device).masked_fill(~inside, -th.inf)

    def __repr__(self) -> str:
        return "UniformPolytopeBehavior()"
