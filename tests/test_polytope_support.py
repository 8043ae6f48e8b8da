"""
The linear-constraint support kind (``ConstrainedBox`` actions, ``safe_action_constraints() -> (A, b)``): the gate,
the storage in agent units, the wrapper, ``predict``, the gauge-mapped extraction head and training, with the
property that sampled, shielded, extracted and predicted actions stay inside random polytopes (thin, flat, one row,
many rows, only the action box) within the stated tolerance, and that empty ones fail loudly.
"""

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb3_safeq import (
    ConstrainedBox,
    EmptySupportError,
    SafeSupportQ,
    SafetyWrapper,
    UniformPolytopeBehavior,
    make_support_kind,
)
from sb3_safeq.common.supports import gauge_polytope
from sb3_safeq.common.supports import polytope_utils as pu
from sb3_safeq.common.supports.polytope import PolytopeSupport
from tests.test_polytope_utils import random_polytope

NON_EMPTY = ("box_only", "one_row", "many_rows", "thin", "flat")
TINY_POLYTOPE: dict[str, Any] = {
    "learning_starts": 30,
    "batch_size": 16,
    "buffer_size": 1000,
    "n_behavior_samples": 4,
    "policy_kwargs": {"net_arch": [16, 16]},
    "seed": 0,
}


class RandomPolytopeEnv(gym.Env):
    """
    A new random polytope of safe actions every step (the observation encodes its rows), raising on any action
    outside it: a learner's unsafe action fails the test.

    :param kinds: the kinds of :func:`random_polytope` drawn from (never ``"empty"`` unless asked)
    :param max_constraints: rows stored per state
    """

    def __init__(self, kinds: tuple[str, ...] = ("one_row", "many_rows", "box_only"), max_constraints: int = 12):
        self.kinds = kinds
        self.action_space = ConstrainedBox(-2.0, 3.0, shape=(2,), max_constraints=max_constraints)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(3 * max_constraints,), dtype=np.float32)
        self._constraints: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 2)), np.zeros(0))
        self._t = 0

    def _draw(self) -> np.ndarray:
        kind = self.kinds[int(self.np_random.integers(len(self.kinds)))]
        matrix, offsets, _, _ = random_polytope(kind, 2, int(self.np_random.integers(2**31)))
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        # Re-centre the random rows inside this action box: keep those that leave an interior point.
        keep = matrix @ ((low + high) / 2) <= offsets + 0.5 if kind != "thin" else np.ones(len(offsets), bool)
        rows = self.action_space.max_constraints
        self._constraints = (matrix[keep][:rows], offsets[keep][:rows])
        padded = pu.pad_constraints(*self._constraints, self.action_space.max_constraints)
        return padded.ravel().astype(np.float32)

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        return self._constraints[0].copy(), self._constraints[1].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {"cost": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        matrix, offsets = self._constraints
        low, high = self.action_space.low, self.action_space.high
        if not pu.contains(matrix, offsets, np.asarray(action, np.float64), low, high):
            raise AssertionError(f"action {action} outside the polytope A={matrix.tolist()} b={offsets.tolist()}")
        self._t += 1
        return self._draw(), float(np.asarray(action)[0]), self._t >= 15, False, {"cost": 0.0}


def kind_and_support(kind: str, seed: int) -> tuple[PolytopeSupport, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:return: the kind of a random action box, a random polytope's stored support and its ``(A, b)``"""
    matrix, offsets, low, high = random_polytope(kind, 2, seed)
    space = ConstrainedBox(low.astype(np.float32), high.astype(np.float32), max_constraints=13)
    support_kind = make_support_kind(space)
    assert isinstance(support_kind, PolytopeSupport)
    return support_kind, support_kind.validate((matrix, offsets), "test"), (matrix, offsets)


def assert_inside(support_kind: PolytopeSupport, actions: np.ndarray, stored: np.ndarray) -> None:
    for action in np.asarray(actions).reshape(-1, support_kind.action_dim):
        assert support_kind.contains(action, stored), (action, stored)


# ------------------------------------------------------------------------------------------ the space, the gate


def test_a_constrained_box_selects_the_polytope_kind_and_stays_a_box() -> None:
    space = ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=3)
    assert isinstance(make_support_kind(space), PolytopeSupport)
    assert type(make_support_kind(spaces.Box(-1.0, 1.0, shape=(2,)))).__name__ == "BoxSupport"
    assert space == spaces.Box(-1.0, 1.0, shape=(2,)) and "max_constraints=3" in repr(space)
    with pytest.raises(ValueError, match="max_constraints=0 must be >= 1"):
        ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=0)
    with pytest.raises(TypeError, match="must be an int"):
        ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ("box_only", "one_row", "many_rows", "thin", "flat", "empty"))
def test_the_gate_stores_rows_centre_and_radius(kind: str) -> None:
    support_kind, stored, (matrix, offsets) = kind_and_support(kind, seed=3)
    assert stored.shape == support_kind.storage_shape_and_dtype()[0] and stored.dtype == np.float32
    assert bool(support_kind.empty(stored)) == (kind == "empty")
    if kind != "empty":
        assert support_kind.contains(stored[-1, :-1], stored)  # the Chebyshev centre is inside
    back_matrix, back_offsets = support_kind.env_method_result(stored)
    np.testing.assert_allclose(back_matrix, matrix[np.any(matrix != 0, axis=1)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back_offsets, offsets[np.any(matrix != 0, axis=1)], rtol=1e-6, atol=1e-6)


def test_agent_units_round_trip_and_keep_membership() -> None:
    support_kind, stored, _ = kind_and_support("many_rows", seed=5)
    agent = support_kind.to_agent(stored[None])[0]
    back = support_kind.constraints_to_env_tensor(th.as_tensor(agent[None], dtype=th.float64)).numpy()[0]
    np.testing.assert_allclose(back[:-1], stored[:-1], rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    env_actions = rng.uniform(support_kind.action_space.low, support_kind.action_space.high, size=(200, 2))
    agent_actions = support_kind.scaler.to_agent(env_actions).astype(np.float64)
    inside_env = pu.contains(stored[None, :-1, :-1], stored[None, :-1, -1], env_actions)
    inside_agent = pu.contains(agent[None, :-1, :-1], agent[None, :-1, -1], agent_actions, tolerance=1e-4)
    assert inside_env.any() and (~inside_env).any()
    np.testing.assert_array_equal(inside_env, inside_agent)


# ---------------------------------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(NON_EMPTY), seed=st.integers(0, 10_000), deterministic=st.booleans())
def test_sampled_shielded_extracted_and_predicted_actions_are_inside(kind: str, seed: int, deterministic: bool) -> None:
    support_kind, stored, (_matrix, _offsets) = kind_and_support(kind, seed)
    rng = np.random.default_rng(seed)
    behavior = support_kind.make_behavior("uniform")
    th.manual_seed(seed)
    samples = behavior.sample(th.zeros(1, 1), th.as_tensor(stored[None], dtype=th.float64), 32)[0].numpy()
    assert_inside(support_kind, samples, stored)
    assert_inside(support_kind, support_kind.sample_uniform(stored[None], rng), stored)
    outside = rng.uniform(-10.0, 10.0, size=(5, 2))
    for action in outside:
        assert_inside(support_kind, support_kind.shield(action, stored, rng), stored)
    assert_inside(support_kind, support_kind.shield(np.array([np.nan, 0.0]), stored, rng), stored)
    # The extraction head, for arbitrary network outputs (far out means are the hardest: the gauge map's edge).
    agent = th.as_tensor(support_kind.to_agent(stored[None]).repeat(6, axis=0))
    mean = th.as_tensor(rng.normal(scale=4.0, size=(6, 2)), dtype=th.float32)
    log_std = th.as_tensor(rng.uniform(-3.0, 1.0, size=(6, 2)), dtype=th.float32)
    head = support_kind.head_mode(mean, agent) if deterministic else support_kind.head_rsample(mean, log_std, agent)[0]
    env_actions = support_kind.clip_actions(support_kind.scaler.to_env(head.numpy()), np.repeat(stored[None], 6, 0))
    assert_inside(support_kind, env_actions, stored)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(NON_EMPTY), seed=st.integers(0, 10_000), deterministic=st.booleans())
def test_predict_is_inside_for_single_and_batched_observations(kind: str, seed: int, deterministic: bool) -> None:
    model = model_on(RandomPolytopeEnv())
    _support_kind, _stored, (matrix, offsets) = kind_and_support(kind, seed)
    space = model.action_space
    matrix, offsets = pu.validate_constraints((matrix, offsets), space, 12)  # the model's box is [-2, 3]^2
    if pu.chebyshev_center(matrix, offsets, space.low, space.high).is_empty():
        return
    observations = np.random.default_rng(seed).normal(size=(3, 36)).astype(np.float32)
    one, _ = model.predict(observations[0], deterministic=deterministic, safe_constraints=(matrix, offsets))
    batched, _ = model.predict(
        observations,
        deterministic=deterministic,
        safe_constraints=(np.stack([matrix] * 3), np.stack([offsets] * 3)),
    )
    listed, _ = model.predict(observations, deterministic=deterministic, safe_constraints=[(matrix, offsets)] * 3)
    for action in (one, *batched, *listed):
        assert pu.contains(matrix, offsets, action, space.low, space.high)


def test_an_empty_polytope_fails_loudly_everywhere() -> None:
    support_kind, stored, (_matrix, _offsets) = kind_and_support("empty", seed=1)
    with pytest.raises(EmptySupportError):
        support_kind.make_behavior("uniform").sample(th.zeros(1, 1), th.as_tensor(stored[None]), 4)
    model = model_on(RandomPolytopeEnv())
    space = model.action_space
    with pytest.raises(EmptySupportError, match="empty polytope"):
        model.predict(np.zeros(36, np.float32), safe_constraints=(np.array([[0.0, 0.0]]), np.array([-1.0])))
    assert space.max_constraints == 12


def test_the_head_density_is_the_density_of_its_samples() -> None:
    support_kind, stored, _ = kind_and_support("many_rows", seed=11)
    agent = th.as_tensor(support_kind.to_agent(stored[None]), dtype=th.float64).repeat(4096, 1, 1)
    mean = th.full((4096, 2), 0.3, dtype=th.float64)
    log_std = th.full((4096, 2), -0.5, dtype=th.float64)
    actions, log_density = gauge_polytope.rsample(mean, log_std, agent)
    again = gauge_polytope.log_prob(actions.unsqueeze(1), mean, log_std, agent)[:, 0]
    np.testing.assert_allclose(again.numpy(), log_density.numpy(), atol=2e-5)
    # A density on the polytope: its importance-weighted mass under uniform proposals in [-1, 1]^2 is 1.
    proposals = th.rand(200_000, 2, dtype=th.float64) * 2 - 1
    inside = pu.contains_mask(proposals.unsqueeze(0), agent[:1, :-1, :-1], agent[:1, :-1, -1])[0]
    densities = gauge_polytope.log_prob(proposals[None], mean[:1], log_std[:1], agent[:1])[0].exp()
    mass = float((densities * inside).mean() * 4.0)
    assert mass == pytest.approx(1.0, abs=0.03)


# ------------------------------------------------------------------------------------------ wrapper and training


def model_on(env: gym.Env, **kwargs: Any) -> SafeSupportQ:
    return SafeSupportQ("MlpPolicy", SafetyWrapper(env), **{**TINY_POLYTOPE, **kwargs})


def test_the_wrapper_writes_counts_shields_and_refuses() -> None:
    env = SafetyWrapper(RandomPolytopeEnv(), shield=True)
    _obs, info = env.reset(seed=0)
    stored = info["safe_action_constraints"]
    assert stored.shape == (13, 3) and env.support_kind.contains(stored[-1, :-1], stored)
    matrix, offsets = env.safe_action_constraints()
    far = np.array([3.0, 3.0], np.float32) if not pu.contains(matrix, offsets, [3.0, 3.0]) else None
    if far is not None:
        env.step(far)  # shielded onto the polytope, so the raising environment accepts it
        assert env.counters.out_of_support_actions == 1 and env.counters.shielded_actions == 1
    with pytest.raises(ValueError, match="needs max_constraints"):
        SafetyWrapper(gym.make("SafePointMass-v0"), safe_constraints_fn=lambda e: (np.zeros((0, 2)), np.zeros(0)))
    with pytest.raises(ValueError, match="contradicts"):
        SafetyWrapper(RandomPolytopeEnv(), max_constraints=3)


def test_a_plain_box_env_with_a_constraint_function() -> None:
    def half_plane(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[1.0, 1.0]]), np.array([0.0])  # a_0 + a_1 <= 0

    env = SafetyWrapper(gym.make("SafePointMass-v0"), safe_constraints_fn=half_plane, max_constraints=2)
    assert isinstance(env.action_space, ConstrainedBox)
    model = SafeSupportQ("MlpPolicy", env, **TINY_POLYTOPE)
    model.learn(60)
    assert model.safety_counters.out_of_support_actions == 0
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True, safe_constraints=half_plane(env))
    assert action.sum() <= 1e-6


@pytest.mark.parametrize("env_id", ["SafeObstacleDoubleIntegrator-v0", "SafeUnicycle-v0"])
def test_training_on_the_cbf_environments_is_safe_and_survives_save_load(env_id: str, tmp_path: Any) -> None:
    model = SafeSupportQ("MlpPolicy", gym.make(env_id), **{**TINY_POLYTOPE, "exploration": "mixture"})
    assert isinstance(model.support_kind, PolytopeSupport)
    model.learn(150)
    counters = model.safety_counters
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0
    model.save(tmp_path / "model")
    loaded = SafeSupportQ.load(tmp_path / "model")
    env = SafetyWrapper(gym.make(env_id))
    obs, _ = env.reset(seed=2)
    constraints = env.safe_action_constraints()
    first, _ = model.predict(obs, deterministic=True, safe_constraints=constraints)
    second, _ = loaded.predict(obs, deterministic=True, safe_constraints=constraints)
    np.testing.assert_array_equal(first, second)
    assert env.support_kind.contains(first, env.support_kind.validate(constraints, "test"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        induced = model.induced_policy(obs, deterministic=True, safe_constraints=constraints)
    assert env.support_kind.contains(induced.actions[0], env.support_kind.validate(constraints, "test"))


def test_the_raising_environment_is_never_given_an_outside_action_in_any_exploration_mode() -> None:
    for exploration in ("behavior", "induced", "mixture"):
        for extraction in ("forward_kl", "reverse_kl"):
            model = model_on(RandomPolytopeEnv(), exploration=exploration, extraction=extraction)
            model.learn(80)  # RandomPolytopeEnv raises on an outside action
            assert model.safety_counters.out_of_support_actions == 0


def test_a_box_support_on_the_same_dynamics() -> None:
    model = SafeSupportQ("MlpPolicy", gym.make("SafeObstacleDoubleIntegrator-v0", support="box"), **TINY_POLYTOPE)
    assert type(model.support_kind).__name__ == "BoxSupport"
    model.learn(60)
    assert model.safety_counters.unsafe_visits == 0


def test_behavior_functions_are_refused_with_the_alternative() -> None:
    with pytest.raises(TypeError, match="PolytopeBehaviorPolicy"):
        model_on(RandomPolytopeEnv(), behavior=lambda observations, low, high: None)
    assert isinstance(model_on(RandomPolytopeEnv()).behavior_policy, UniformPolytopeBehavior)


def test_the_cbf_example_trains_without_unsafe_visits() -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "cbf_single_integrator.py"
    result = subprocess.run(
        [sys.executable, str(script), "--steps", "600"], capture_output=True, text=True, timeout=600, check=True
    )
    assert "training: 600 steps, 0 unsafe visits" in result.stdout, result.stdout + result.stderr
    assert ", 0 unsafe visits" in result.stdout.splitlines()[-1]
