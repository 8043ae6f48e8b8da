"""
Adversarial inputs of the polytope support kind, each pinned after the review of issue 18: constraints given as
nested lists to ``predict``, zero-width action axes, rows of extreme scales and rows that only touch a corner of the
action box. Containment is checked with the tests' own rule (1e-6 distance per row, exact box).
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_safeq import ConstrainedBox, SafeSupportQ, SafetyWrapper, UniformPolytopeBehavior
from sb3_safeq.common.supports.polytope import PolytopeSupport
from tests.helpers import SMALL
from tests.polytope_toy_envs import FixedPolytopeEnv, rows_contain

SPACE = ConstrainedBox(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32), max_constraints=3)


def _inside(support: np.ndarray, actions: np.ndarray) -> bool:
    in_box = np.all((actions >= SPACE.low) & (actions <= SPACE.high))
    return bool(in_box and rows_contain(support[None, :-1], actions).all())


def test_predict_reads_constraints_given_as_nested_lists_as_one_pair() -> None:
    # predict(safe_constraints=([[...]], [...])) was read as a list of two pairs ("holds 2 pairs for 1 observation").
    model = SafeSupportQ("MlpPolicy", FixedPolytopeEnv([[1.0, 1.0]], [0.5]), seed=0, **SMALL)
    matrix, offsets = [[1.0, 1.0], [-1.0, 0.0]], [0.5, 0.5]
    action, _ = model.predict(np.zeros(3, np.float32), deterministic=True, safe_constraints=(matrix, offsets))
    assert action.shape == (2,) and rows_contain(np.array([[1.0, 1.0, 0.5], [-1.0, 0.0, 0.5]]), action)
    pairs = [(matrix, offsets), (np.array(matrix), np.array(offsets))]  # one pair per observation still works
    actions, _ = model.predict(np.zeros((2, 3), np.float32), safe_constraints=pairs)
    assert actions.shape == (2, 2)


def test_a_zero_width_action_axis_is_refused_with_the_fix() -> None:
    # It used to train into NaN and crash in the projection's NNLS with "array must not contain infs or NaNs".
    class FixedAxisEnv(FixedPolytopeEnv):
        action_space = ConstrainedBox(
            np.array([-1, 0.5], np.float32), np.array([1, 0.5], np.float32), max_constraints=2
        )

    with pytest.raises(ValueError, match=r"axes \[1\] of zero width .* Drop the fixed axes"):
        SafetyWrapper(FixedAxisEnv([[1.0, 1.0]], [0.6]))


@settings(max_examples=30, deadline=None)
@given(
    log_scale=st.sampled_from([-6.0, -3.0, 0.0, 3.0, 6.0]),
    direction=st.floats(0.0, 2 * np.pi),
    offset=st.floats(-0.5, 1.5),
    corner=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sampled_and_shielded_actions_are_inside_rows_of_any_scale(
    log_scale: float, direction: float, offset: float, corner: bool, seed: int
) -> None:
    kind = PolytopeSupport(SPACE)
    normal = np.array([np.cos(direction), np.sin(direction)])
    if corner:  # two rows that leave only the corner (1, 2) of the action box
        matrix, offsets = np.array([[-1.0, 0.0], [0.0, -1.0]]), np.array([-1.0, -2.0])
    else:  # a half-plane through a point of the box, then scaled: the set does not change
        matrix, offsets = normal[None], np.array([normal @ np.array([0.0, offset])])
    scale = 10.0**log_scale
    support = kind.validate((matrix * scale, offsets * scale), source="test")
    rng = np.random.default_rng(seed)
    samples = kind.sample_uniform(np.repeat(support[None], 4, axis=0), rng)
    assert np.isfinite(samples).all() and _inside(support, samples)
    for action in (rng.uniform(-3.0, 3.0, 2), np.array([np.nan, 1.0]), SPACE.high.astype(np.float64)):
        shielded = kind.shield(action, support, rng)
        assert np.isfinite(shielded).all() and _inside(support, shielded[None])
        assert kind.contains(shielded, support)


class _OutsideBehavior(UniformPolytopeBehavior):
    """Draws the far corner of the action box: outside the half-plane a_0 + a_1 <= 0 of the test below."""

    def sample(self, observations: Any, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        return th.ones(support.shape[0], n_samples, 2, dtype=support.dtype)


def test_a_behavior_subclass_drawing_outside_the_polytope_is_an_error_not_projected() -> None:
    def half_plane(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[1.0, 1.0]]), np.array([0.0])

    env = SafetyWrapper(gym.make("SafePointMass-v0"), safe_constraints_fn=half_plane, max_constraints=1)
    model = SafeSupportQ("MlpPolicy", env, behavior=_OutsideBehavior(), learning_starts=100, seed=0)
    with pytest.raises(ValueError, match="outside its polytope of safe actions by more than rounding explains"):
        model.learn(5)
    assert env.counters.out_of_support_actions == 0  # nothing outside was executed
    # Rounding-sized excesses are still projected back inside.
    stored = env.support_kind.validate(half_plane(env), "test")
    nudged = env.support_kind.clip_actions(np.array([[0.25, -0.25 + 1e-6]]), stored[None])
    assert nudged.sum() <= 1e-6 and env.support_kind.contains(nudged[0], stored)
