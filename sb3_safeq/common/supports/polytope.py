"""
The linear-constraint support kind: a polytope of safe actions ``{a in action box : A a <= b}`` per state, from the
environment's ``safe_action_constraints() -> (A, b)`` (typically control barrier function conditions), for
environments whose action space is a :class:`~sb3_safeq.common.supports.constrained_box.ConstrainedBox`.

It is the ``Box`` kind with another set: the critics, the sampled soft value and the extraction losses are the box
kind's (:class:`~sb3_safeq.common.supports.box.BoxSupport`), and this module replaces what depends on the set's
shape: validation and storage of the rows, containment (within :data:`CONTAINS_TOLERANCE`), shielding by Euclidean
projection, ``predict(..., safe_constraints=...)``, the behaviors inside the polytope and the extraction head carried
onto the polytope by the gauge map (:mod:`~sb3_safeq.common.supports.gauge_polytope`).

**Layout** of one state's support, float32 ``(max_constraints + 1, action_dim + 1)``: rows ``[A_i | b_i]`` padded
with ``(0, 1)`` rows (every action satisfies them), then ``[a0 | r]``: the Chebyshev centre of the set (the centre
of the largest ball inside it, from one linear program per distinct set of rows, computed by the validation gate)
and the ball's signed radius, ``r < -tolerance`` for an empty set. In agent units the rows and the centre are
rewritten exactly for the ``[-1, 1]`` actions; the radius keeps its environment units (only its sign is used there).
"""

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.behaviors.polytope import PolytopeBehaviorPolicy, UniformPolytopeBehavior
from sb3_safeq.common.supports import gauge_polytope
from sb3_safeq.common.supports.box import BoxSupport
from sb3_safeq.common.supports.constrained_box import ConstrainedBox
from sb3_safeq.common.supports.errors import EmptySupportError
from sb3_safeq.common.supports.polytope_utils import (
    CONTAINS_TOLERANCE,
    PADDING_B,
    SAFE_CONSTRAINTS_INFO_KEY,
    SAFE_CONSTRAINTS_METHOD,
    chebyshev_center,
    constraints_to_agent,
    contains,
    pad_constraints,
    project_onto_polytope,
    unpad_constraints,
    validate_constraints,
)

#: Distinct sets of rows whose Chebyshev centre the kind remembers (see ``PolytopeSupport._centre_and_radius``).
_CENTRE_CACHE_SIZE = 4096
#: Fraction of the action range by which an action may leave its polytope through unit-conversion rounding (float32:
#: about 1e-7) before :meth:`PolytopeSupport.clip_actions` calls it an error instead of projecting it back.
_ROUNDING_SLACK = 1e-4


def _is_matrix(value: Any) -> bool:
    """
    :return: whether ``value`` reads as a numeric array of two or three dimensions: the ``A`` of a pair ``(A, b)``
        (given as an array or as nested lists), not a pair itself (a pair ``(A_i, b_i)`` is ragged)
    """
    if isinstance(value, np.ndarray):
        return value.ndim in (2, 3)
    try:
        return np.asarray(value, dtype=np.float64).ndim in (2, 3)
    except (TypeError, ValueError):
        return False


class PolytopeSupport(BoxSupport):
    """
    Per-state polytopes of safe actions of a :class:`ConstrainedBox` action space (layout in the module docstring).

    Behaviors: :class:`~sb3_safeq.common.behaviors.polytope.PolytopeBehaviorPolicy` subclasses (working in action
    units); the default is uniform in the polytope. The policy is the box kind's, with the extraction head's squashed
    Gaussian carried from ``[-1, 1]^d`` onto each state's polytope by the gauge map around its Chebyshev centre.

    :param action_space: the environment's :class:`ConstrainedBox` action space
    """

    action_space_type = ConstrainedBox
    name = "polytope"
    method_name = SAFE_CONSTRAINTS_METHOD
    info_key = SAFE_CONSTRAINTS_INFO_KEY
    predict_keyword = "safe_constraints"
    wrapper_argument = "safe_constraints_fn"
    behavior_class = PolytopeBehaviorPolicy  # type: ignore[assignment]  # not box behaviors: a sibling class
    action_space: ConstrainedBox

    def __init__(self, action_space: ConstrainedBox) -> None:
        super().__init__(action_space)
        fixed_axes = np.flatnonzero(action_space.low >= action_space.high)
        if fixed_axes.size:
            # A zero-width axis has no [-1, 1] agent coordinate (0 / 0) and no volume for the behavior's density:
            # training would turn NaN. Refuse it here, with the fix, rather than crash later in a projection.
            raise ValueError(
                f"The ConstrainedBox action space {action_space!r} has axes {fixed_axes.tolist()} of zero width "
                "(low == high): the polytope kind needs every action axis to have room. Drop the fixed axes from the "
                "action space (set them inside the environment), or give them a width."
            )
        self.max_constraints = action_space.max_constraints
        self._low = action_space.low.astype(np.float64)
        self._high = action_space.high.astype(np.float64)
        self._centres: dict[bytes, np.ndarray] = {}

    def missing_method_message(self, env: gym.Env) -> str:
        return (
            f"The environment {env!r} has a ConstrainedBox action space but no `{SAFE_CONSTRAINTS_METHOD}()` method, "
            "so its safe actions are unknown. Give the environment a method `safe_action_constraints() -> (A, b)` "
            "returning the linear constraints A a <= b of the current state's safe actions (A of shape (m, "
            f"{self.action_dim}), b of shape (m,), m <= max_constraints={self.max_constraints}, in action units), or "
            "wrap it with `sb3_safeq.SafetyWrapper(env, safe_constraints_fn=fn, max_constraints=m)` where "
            "`fn(env) -> (A, b)`."
        )

    def support_through_action_wrapper(self, wrapper: gym.Wrapper, method: Callable[[], Any]) -> Callable[[], Any]:
        return super(BoxSupport, self).support_through_action_wrapper(wrapper, method)

    # ------------------------------------------------------------------ the gate, units and storage

    def validate(self, support: Any, source: str) -> np.ndarray:
        matrix, offsets = validate_constraints(support, self.action_space, self.max_constraints, source)
        stored = np.empty((self.max_constraints + 1, self.action_dim + 1), dtype=np.float32)
        stored[:-1] = pad_constraints(matrix, offsets, self.max_constraints)
        stored[-1] = self._centre_and_radius(stored[:-1])
        return stored

    def _centre_and_radius(self, rows: np.ndarray) -> np.ndarray:
        """
        :param rows: the stored rows ``[A | b]`` of one state (float32, padded)
        :return: ``[a0 | r]``, the Chebyshev centre and signed radius of the set (float32)

        The linear program costs milliseconds (HiGHS through SciPy) while the rows often repeat from state to state
        (e.g. no obstacle nearby: no row at all), so results are kept per distinct rows, up to
        :data:`_CENTRE_CACHE_SIZE` of them.
        """
        key = rows.tobytes()
        cached = self._centres.get(key)
        if cached is None:
            matrix, offsets = rows[:, :-1].astype(np.float64), rows[:, -1].astype(np.float64)
            ball = chebyshev_center(matrix, offsets, self._low, self._high)
            radius = max(float(ball.radius), float(np.finfo(np.float32).min))  # -inf: a row 0 a <= b < 0
            cached = np.append(ball.center, radius).astype(np.float32)
            if len(self._centres) >= _CENTRE_CACHE_SIZE:
                self._centres.clear()
            self._centres[key] = cached
        return cached

    def env_method_result(self, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return unpad_constraints(support[:-1].astype(np.float64))

    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        return (self.max_constraints + 1, self.action_dim + 1), np.float32

    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw_supports, dtype=np.float64)
        agent = np.empty_like(raw)
        agent[..., :-1, :] = constraints_to_agent(raw[..., :-1, :], self._low, self._high)
        agent[..., -1, :-1] = self.scaler.to_agent(raw[..., -1, :-1])
        agent[..., -1, -1] = raw[..., -1, -1]
        return agent.astype(np.float32)

    def constraints_to_env_tensor(self, supports: th.Tensor) -> th.Tensor:
        """
        :param supports: stored supports in agent units ``(batch, rows + 1, d + 1)``
        :return: the same in environment units (the inverse of :meth:`to_agent`)
        """
        low = th.as_tensor(self._low, dtype=supports.dtype, device=supports.device)
        half_width = th.as_tensor((self._high - self._low) / 2.0, dtype=supports.dtype, device=supports.device)
        middle = low + half_width
        matrix = supports[:, :-1, :-1] / half_width
        offsets = supports[:, :-1, -1] + matrix @ middle
        center = self.scaler.to_env_tensor(supports[:, -1, :-1])
        rows = th.cat([matrix, offsets.unsqueeze(-1)], dim=-1)
        last = th.cat([center, supports[:, -1, -1:]], dim=-1).unsqueeze(1)
        return th.cat([rows, last], dim=1)

    def clip_actions(self, actions: np.ndarray, raw_supports: np.ndarray) -> np.ndarray:
        # Actions come out of the agent's units inside up to rounding; any that the stored (float32) rows do not
        # contain within the tolerance is projected onto them (Euclidean projection, exact up to the tolerance). An
        # action farther out than rounding explains (or NaN) comes from a behavior or head that left the set: that is
        # an error to report, not something to project away silently.
        actions = np.asarray(actions, dtype=np.float64)
        raw = np.asarray(raw_supports, dtype=np.float64)
        matrix, offsets = raw[:, :-1, :-1], raw[:, :-1, -1]
        clipped = np.clip(actions, self._low, self._high)
        inside = contains(matrix, offsets, clipped.astype(np.float32), self._low, self._high)
        if not bool(inside.all()):
            slack = _ROUNDING_SLACK * float(np.max(self._high - self._low))
            box_excess = np.max(np.abs(actions - clipped), axis=-1)
            norms = np.maximum(np.linalg.norm(matrix, axis=-1), 1e-300)
            row_excess = np.max((np.einsum("bmd,bd->bm", matrix, clipped) - offsets) / norms, axis=-1)
            far = ~inside & ~(np.maximum(box_excess, row_excess) <= slack)  # NaN counts as far
            if far.any():
                first_far = int(np.flatnonzero(far)[0])
                raise ValueError(
                    f"Action {actions[first_far].tolist()} of state {first_far} lies outside its polytope of safe "
                    f"actions by more than rounding explains ({_ROUNDING_SLACK:g} of the action range): a behavior "
                    "policy's sample(), or a custom policy, drew outside the set. PolytopeBehaviorPolicy subclasses "
                    "must draw inside {a in action box : A a <= b}."
                )
        for index in np.flatnonzero(~inside):
            clipped[index] = project_onto_polytope(matrix[index], offsets[index], self._low, self._high, clipped[index])
        return clipped.astype(self.action_space.dtype)

    def empty(self, supports: np.ndarray) -> np.ndarray:
        return np.asarray(supports[..., -1, -1] < -CONTAINS_TOLERANCE)

    def empty_message(self, where: str) -> str:
        return (
            f"{where} has an empty polytope of safe actions (no action of the action box satisfies A a <= b): no "
            "safe-supported behavior can act there. The safe set must be *invariant*: every state reachable with "
            "safe actions needs a non-empty polytope (for a control barrier function, a condition that is feasible "
            "in every safe state, e.g. a smaller class-K gain or input constraints in the CBF design)."
        )

    def contains(self, action: Any, support: np.ndarray) -> bool:
        values = np.asarray(action, dtype=np.float64).reshape(self.action_dim)
        raw = np.asarray(support, dtype=np.float64)
        return bool(contains(raw[:-1, :-1], raw[:-1, -1], values, self._low, self._high))  # False for NaN

    def shield(self, action: Any, support: np.ndarray, rng: np.random.Generator) -> Any:
        # The nearest action of the polytope (a Euclidean projection); a NaN action goes to the Chebyshev centre.
        raw = np.asarray(support, dtype=np.float64)
        values = np.asarray(action, dtype=np.float64).reshape(self.action_dim)
        values = np.where(np.isnan(values), raw[-1, :-1], values)
        projected = project_onto_polytope(raw[:-1, :-1], raw[:-1, -1], self._low, self._high, values)
        return projected.astype(self.action_space.dtype)

    # ------------------------------------------------------------------ predict

    def predict_supports(self, supports: Any, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = self._predict_pairs(supports, n_obs)
        raw = np.stack([self.validate(pair, source="safe_constraints") for pair in pairs])
        if self.empty(raw).any():
            raise EmptySupportError(self.empty_message("An observation passed to predict()"))
        return raw, self.to_agent(raw)

    def _predict_pairs(self, supports: Any, n_obs: int) -> Sequence[Any]:
        """
        Read the layouts ``predict(safe_constraints=...)`` accepts: ``(A, b)`` for one observation; ``(A, b)`` with
        ``A`` of shape ``(n_obs, m, d)`` and ``b`` of shape ``(n_obs, m)``; a list of one ``(A, b)`` per observation
        (as ``VecEnv.env_method("safe_action_constraints")`` gives them).

        :return: one ``(A, b)`` per observation, not validated yet
        """
        dim = self.action_dim
        layouts = (
            f"give safe_constraints=(A, b) with A of shape (m, {dim}) for one observation or ({n_obs}, m, {dim}) for "
            f"{n_obs}, or a list of one (A, b) per observation"
        )
        if not isinstance(supports, (tuple, list)):
            raise ValueError(f"safe_constraints must be a pair (A, b) or a list of pairs: {layouts}.")
        is_pair = len(supports) == 2 and _is_matrix(supports[0])
        if is_pair:
            matrix = np.asarray(supports[0])
            if matrix.ndim == 3:
                offsets = np.asarray(supports[1])
                if matrix.shape[0] != n_obs or offsets.ndim != 2 or offsets.shape[0] != n_obs:
                    raise ValueError(
                        f"safe_constraints has A of shape {matrix.shape} and b of shape {offsets.shape} for {n_obs} "
                        f"observation(s): {layouts}."
                    )
                return [(matrix[index], offsets[index]) for index in range(n_obs)]
            if n_obs != 1:
                raise ValueError(
                    f"safe_constraints holds the constraints of one state for {n_obs} observations: {layouts}."
                )
            return [supports]
        if len(supports) != n_obs:
            raise ValueError(f"safe_constraints holds {len(supports)} pairs for {n_obs} observation(s): {layouts}.")
        return list(supports)

    def predict_argument(self, raw_supports: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.env_method_result(support) for support in raw_supports]

    # ------------------------------------------------------------------ behavior policies

    def make_behavior(self, behavior: str | BehaviorPolicy | Callable[..., Any]) -> BehaviorPolicy:
        made = super().make_behavior(behavior)
        assert isinstance(made, PolytopeBehaviorPolicy)
        made.bind(th.as_tensor(self._low), th.as_tensor(self._high))
        return made

    def uniform_behavior(self) -> BehaviorPolicy:
        return UniformPolytopeBehavior()

    def make_estimated_behavior(
        self, observation_space: spaces.Space, device: th.device, **behavior_kwargs: Any
    ) -> BehaviorPolicy:
        # Not the box kind's: a cloned box says nothing about the constraints A a <= b.
        return super(BoxSupport, self).make_estimated_behavior(observation_space, device, **behavior_kwargs)

    def sample_uniform(self, raw_supports: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Rejection from the action box with numpy's generator (reproducible); the thin polytopes rejection cannot
        # fill in 256 rounds fall back to the behavior's hit-and-run.
        raw = np.asarray(raw_supports, dtype=np.float64)
        actions = np.empty((raw.shape[0], self.action_dim), dtype=np.float64)
        for index, support in enumerate(raw):
            for _ in range(256):
                candidate = rng.uniform(self._low, self._high)
                if contains(support[:-1, :-1], support[:-1, -1], candidate, tolerance=0.0):
                    break
            else:
                behavior = self.make_behavior("uniform")
                candidate = behavior.sample(th.zeros(1), th.as_tensor(support[None]), 1)[0, 0].numpy()
            actions[index] = candidate
        return actions.astype(self.action_space.dtype)

    def behavior_from_function(self, function: Callable[..., Any]) -> BehaviorPolicy:
        raise TypeError(
            "A behavior function is not accepted for linear-constraint supports: its draws could not be checked "
            "against the polytope without rejection. Subclass sb3_safeq.PolytopeBehaviorPolicy (sample and log_prob "
            "inside the polytope, in action units), or use behavior='uniform'."
        )

    # ------------------------------------------------------------------ learning

    def behavior_samples(
        self, behavior: BehaviorPolicy, observations: PyTorchObs, boxes: th.Tensor, n_samples: int
    ) -> th.Tensor:
        env_samples = behavior.sample(observations, self.constraints_to_env_tensor(boxes), n_samples)
        return self.scaler.to_agent_tensor(env_samples)

    def behavior_log_prob(
        self, behavior: BehaviorPolicy, observations: PyTorchObs, boxes: th.Tensor, actions: th.Tensor
    ) -> th.Tensor:
        env_actions = self.scaler.to_env_tensor(actions)
        env_supports = self.constraints_to_env_tensor(boxes)
        log_density = behavior.log_prob(observations, env_supports, env_actions.unsqueeze(1))[:, 0]
        return log_density + self.scaler.log_half_width_tensor(log_density.device).to(log_density.dtype).sum()

    def fill_empty(self, supports: th.Tensor) -> th.Tensor:
        # A terminal state's empty polytope: its value is multiplied by 0, the whole box does to sample from.
        empty = supports[:, -1, -1] < -CONTAINS_TOLERANCE
        whole = th.zeros_like(supports[0])
        whole[:-1, -1] = PADDING_B
        whole[-1, -1] = 1.0
        return th.where(empty[:, None, None], whole, supports)

    def head_rsample(self, mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return gauge_polytope.rsample(mean, log_std, supports)

    def head_log_prob(self, actions: th.Tensor, mean: th.Tensor, log_std: th.Tensor, supports: th.Tensor) -> th.Tensor:
        return gauge_polytope.log_prob(actions, mean, log_std, supports)

    def head_mode(self, mean: th.Tensor, supports: th.Tensor) -> th.Tensor:
        return gauge_polytope.mode(mean, supports)
