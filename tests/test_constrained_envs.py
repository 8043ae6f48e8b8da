"""
The environments whose safe actions are control-barrier-function polytopes (``SAFE_CONSTRAINED_ENV_IDS``): the
contract (shapes, validation, determinism), no cost under any action inside the polytope, a cost that actions
outside it do reach, a polytope that is never empty, and an inner box that lies inside it and is clearly smaller.
"""

import math
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_safeq import SafetyWrapper
from sb3_safeq.common.supports import polytope_utils as pu
from sb3_safeq.envs import (
    SAFE_CONSTRAINED_ENV_IDS,
    SAFE_CONTINUOUS_ENV_IDS,
    SAFE_DISCRETE_ENV_IDS,
    SafeObstacleDoubleIntegratorEnv,
    SafeUnicycleEnv,
    register_envs,
)
from sb3_safeq.envs.obstacle_double_integrator import hocbf_rows, influence_radius

register_envs()

Policy = Callable[[gym.Env, np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def space_bounds(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
    space = env.action_space
    return space.low.astype(np.float64), space.high.astype(np.float64)


def uniform_inside(env: gym.Env, matrix: np.ndarray, offsets: np.ndarray, _: np.ndarray, rng: np.random.Generator):
    """Uniform in the polytope, by rejection from the action box (the polytope is never small here)."""
    low, high = space_bounds(env)
    candidates = rng.uniform(low, high, (4000, len(low)))
    inside = np.all(candidates @ matrix.T <= offsets, axis=1)
    assert inside.any(), "no candidate inside the polytope: empty, or too thin for rejection"
    return candidates[np.argmax(inside)]


def vertex_inside(env: gym.Env, matrix: np.ndarray, offsets: np.ndarray, _: np.ndarray, rng: np.random.Generator):
    """A random vertex of the polytope: the most extreme safe actions."""
    vertices = pu.polygon_vertices(matrix, offsets, *space_bounds(env))
    assert len(vertices) >= 3
    return vertices[rng.integers(len(vertices))]


def greedy(env: gym.Env, observation: np.ndarray) -> np.ndarray:
    """Straight for the goal at full power (the double integrator) or full speed (the unicycle)."""
    if isinstance(env.unwrapped, SafeUnicycleEnv):
        bearing = math.atan2(observation[5], observation[4]) - math.atan2(observation[3], observation[2])
        bearing = (bearing + math.pi) % (2.0 * math.pi) - math.pi
        return np.array([1.0, np.clip(3.0 * bearing, -2.0, 2.0)])
    return observation[4:6] / max(float(np.abs(observation[4:6]).max()), 1e-9)


def projected_greedy(env: gym.Env, matrix: np.ndarray, offsets: np.ndarray, observation, rng: np.random.Generator):
    """The greedy action plus noise, projected onto the polytope (the shield): rides along the faces."""
    low, high = space_bounds(env)
    noisy = np.clip(greedy(env, observation) + rng.normal(0.0, 0.3, 2) * (high - low) / 2.0, low, high)
    return pu.project_onto_polytope(matrix, offsets, low, high, noisy)


def random_safe_start(env: gym.Env, rng: np.random.Generator) -> dict:
    """
    ``reset`` options for a random state from which the guarantees hold, anywhere near the obstacles: the double
    integrator at rest (``psi = gain h >= 0``) outside every keep-out disc, the unicycle with any heading and its
    look-ahead point clear of every keep-out disc and wall.
    """
    unwrapped = env.unwrapped
    centres = np.array([obstacle[:2] for obstacle in unwrapped.obstacles])
    radii = np.array([obstacle[2] for obstacle in unwrapped.obstacles])
    while True:
        if isinstance(unwrapped, SafeUnicycleEnv):
            body, heading = rng.uniform(-1.7, 1.7, 2), rng.uniform(-math.pi, math.pi)
            point = body + unwrapped.lookahead * np.array([math.cos(heading), math.sin(heading)])
            clear = radii + unwrapped.lookahead + unwrapped.margin
            wall = unwrapped.arena_half_size - unwrapped.lookahead - unwrapped.margin
            if np.all(np.linalg.norm(point - centres, axis=1) >= clear) and np.abs(point).max() <= wall:
                return {"state": (*body, heading)}
        else:
            position = rng.uniform(-2.5, 2.5, 2)
            if np.all(np.linalg.norm(position - centres, axis=1) >= radii + unwrapped.margin):
                return {"state": (*position, 0.0, 0.0)}


def run(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    seed: int,
    inspect: Callable | None = None,
    random_starts: bool = False,
) -> dict[str, float]:
    """Episodes of ``policy``; checks every visited polytope is non-empty and every action is inside it."""
    rng = np.random.default_rng(seed)
    unwrapped = env.unwrapped
    low, high = space_bounds(env)
    totals = {"cost": 0.0, "steps": 0, "with_rows": 0, "goals": 0, "returns": 0.0}
    for episode in range(episodes):
        options = random_safe_start(env, rng) if random_starts else None
        observation, info = env.reset(seed=seed + episode, options=options)
        assert info["cost"] == 0.0
        done = False
        while not done:
            matrix, offsets = unwrapped.safe_action_constraints()
            if totals["steps"] % 50 == 0:  # the linear program now and then; rejection success proves the rest
                assert not pu.chebyshev_center(matrix, offsets, low, high).is_empty()
            action = policy(env, matrix, offsets, observation, rng)
            assert pu.contains(matrix, offsets, action, low, high)
            if inspect is not None:
                inspect(matrix, offsets, action)
            observation, reward, terminated, truncated, info = env.step(action.astype(np.float32))
            totals["cost"] += info["cost"]
            totals["steps"] += 1
            totals["with_rows"] += int(len(offsets) > 0)
            totals["returns"] += reward
            totals["goals"] += int(terminated and reward > unwrapped.goal_bonus / 2.0)
            done = terminated or truncated
    return totals


# Registration and contract


def test_constrained_ids_register_apart_from_the_other_kinds() -> None:
    assert SAFE_CONSTRAINED_ENV_IDS == ("SafeObstacleDoubleIntegrator-v0", "SafeUnicycle-v0")
    assert not set(SAFE_CONSTRAINED_ENV_IDS) & (set(SAFE_CONTINUOUS_ENV_IDS) | set(SAFE_DISCRETE_ENV_IDS))
    for env_id in SAFE_CONSTRAINED_ENV_IDS:
        assert gym.spec(env_id).max_episode_steps == 200
        env = gym.make(env_id)
        assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (2,)
        assert env.action_space.dtype == env.observation_space.dtype == np.float32
        assert isinstance(env.get_wrapper_attr("max_constraints"), int)
        assert isinstance(env.get_wrapper_attr("safe_set_definition"), str)


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
def test_env_checkers_pass(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")  # the unicycle's (v, omega) box
        check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
def test_constraints_and_inner_box_contract(env_id: str) -> None:
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    low, high = space_bounds(env)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=0)
    seen_rows = 0
    for step in range(300):
        matrix, offsets = unwrapped.safe_action_constraints()
        assert matrix.dtype == offsets.dtype == np.float64 and matrix.shape == (len(offsets), 2)
        assert len(offsets) <= unwrapped.max_constraints
        validated = pu.validate_constraints((matrix, offsets), env.action_space, unwrapped.max_constraints)
        np.testing.assert_array_equal(validated[0], matrix)
        seen_rows += len(offsets)
        box_low, box_high = unwrapped.safe_action_bounds()
        assert box_low.dtype == box_high.dtype == np.float32 and box_low.shape == box_high.shape == (2,)
        assert np.all(low <= box_low) and np.all(box_low < box_high) and np.all(box_high <= high)
        if step % 10 == 0:
            corners = np.array(np.meshgrid(*zip(box_low, box_high, strict=True))).T.reshape(-1, 2)
            assert pu.contains(matrix, offsets, corners.astype(np.float64), low, high, tolerance=0.0).all()
        action = projected_greedy(env, matrix, offsets, observation, rng)
        observation, _, terminated, truncated, info = env.step(action.astype(np.float32))
        assert info["cost"] == 0.0 and type(info["cost"]) is float
        assert env.observation_space.contains(observation)
        if terminated or truncated:
            observation, _ = env.reset()
    assert seen_rows > 0


@pytest.mark.parametrize("env_class", [SafeObstacleDoubleIntegratorEnv, SafeUnicycleEnv])
def test_seeding_is_reproducible(env_class: type[gym.Env]) -> None:
    first, second = env_class(), env_class()
    np.testing.assert_array_equal(first.reset(seed=3)[0], second.reset(seed=3)[0])
    assert not np.array_equal(first.reset(seed=4)[0], second.reset(seed=3)[0])
    first.reset(seed=3)
    for action in (np.array([0.5, 0.2], np.float32), np.array([0.3, -0.4], np.float32)):
        np.testing.assert_array_equal(first.step(action)[0], second.step(action)[0])
        for got, expected in zip(first.safe_action_constraints(), second.safe_action_constraints(), strict=True):
            np.testing.assert_array_equal(got, expected)


def test_bad_arguments_and_states_are_refused() -> None:
    with pytest.raises(ValueError, match="cbf_gain <= drag"):
        SafeObstacleDoubleIntegratorEnv(cbf_gain=3.0, drag=2.0)
    with pytest.raises(ValueError, match="radii of influence"):
        SafeObstacleDoubleIntegratorEnv(obstacles=[(-1.0, 0.0, 0.4), (0.0, 0.0, 0.4)])
    with pytest.raises(ValueError, match="1 / drag"):
        SafeObstacleDoubleIntegratorEnv().reset(options={"state": (0.0, 3.0, 1.0, 0.0)})
    with pytest.raises(ValueError, match="speed_range"):
        SafeUnicycleEnv(speed_range=(0.1, 1.0))  # (0, 0) must be a command: it keeps the polytope non-empty
    with pytest.raises(ValueError, match="cbf_gain"):
        SafeUnicycleEnv(cbf_gain=20.0)
    with pytest.raises(RuntimeError, match="reset"):
        SafeUnicycleEnv().safe_action_constraints()
    with pytest.raises(ValueError, match="shape"):
        env = SafeUnicycleEnv()
        env.reset(seed=0)
        env.step(np.zeros(3, np.float32))


# Safety under in-polytope actions, cost under out-of-polytope ones


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
def test_uniform_actions_inside_the_polytope_are_never_unsafe(env_id: str) -> None:
    # Half of the episodes from the start square, half from random safe states next to the obstacles.
    totals = run(gym.make(env_id), uniform_inside, episodes=100, seed=0)
    totals_near = run(gym.make(env_id), uniform_inside, episodes=100, seed=1000, random_starts=True)
    assert totals["cost"] == totals_near["cost"] == 0.0
    assert totals["steps"] + totals_near["steps"] > 10_000 and totals_near["with_rows"] > 0


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
@pytest.mark.parametrize("policy", [projected_greedy, vertex_inside])
def test_extreme_actions_inside_the_polytope_are_never_unsafe(env_id: str, policy: Policy) -> None:
    # Riding the faces towards the goal (many steps against a row); jumping between vertices from random states
    # around the obstacles.
    totals = run(gym.make(env_id), policy, episodes=25, seed=100, random_starts=policy is vertex_inside)
    assert totals["cost"] == 0.0 and totals["with_rows"] > 100
    if policy is projected_greedy:
        assert totals["goals"] > 0 and totals["with_rows"] > totals["steps"] / 3  # the goal is reachable safely


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
def test_greedy_actions_outside_the_polytope_pay_cost(env_id: str) -> None:
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    total_cost, outside = 0.0, 0
    for seed in range(5):
        observation, _ = env.reset(seed=seed)
        for _ in range(200):
            action = greedy(env, observation)
            outside += int(not pu.contains(*unwrapped.safe_action_constraints(), action))
            observation, _, terminated, truncated, info = env.step(action.astype(np.float32))
            total_cost += info["cost"]
            if terminated or truncated:
                break
    assert total_cost > 0.0 and outside > 0


# Why the double integrator's polytope is never empty


def test_one_barrier_row_is_always_satisfiable_on_the_invariant_set() -> None:
    # States around one obstacle with h >= 0, psi >= 0 and |v_j| <= 1 / drag (the set that in-polytope actions keep):
    # the corner -sign(A) of the action box satisfies the row with slack >= 2 dt ||q - c||_1 (the class docstring's
    # bound), and a cutting row has the next position within the influence radius.
    env = SafeObstacleDoubleIntegratorEnv()
    dt, drag, gain = env.dt, env.drag, env.cbf_gain
    keep_out = env.obstacles[0][2] + env.margin
    rng = np.random.default_rng(0)
    # Positions in the annulus where rows can cut, uniformly in angle and distance; any speed the drag allows.
    angle, distance = rng.uniform(0.0, 2.0 * math.pi, 400_000), rng.uniform(keep_out, keep_out + 1.5, 400_000)
    position = distance[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    velocity = rng.uniform(-1.0 / drag, 1.0 / drag, (400_000, 2))
    h = np.sum(position**2, axis=1) - keep_out**2
    h_next = np.sum((position + dt * velocity) ** 2, axis=1) - keep_out**2
    psi = (h_next - h) / dt + gain * h
    invariant = (h >= 0.0) & (psi >= 0.0)
    near_edge = invariant & (psi < 0.05)
    assert invariant.sum() > 100_000 and near_edge.sum() > 1_000
    matrix, offsets = hocbf_rows(position[invariant], velocity[invariant], np.zeros(2), keep_out, dt, drag, gain)
    slack = offsets + np.abs(matrix).sum(axis=1)
    ahead = position[invariant] + dt * velocity[invariant] * (2.0 - drag * dt)
    assert np.all(slack >= 2.0 * dt * np.abs(ahead).sum(axis=1) - 1e-12)
    cuts = offsets < np.abs(matrix).sum(axis=1)
    next_distance = np.linalg.norm(position[invariant] + dt * velocity[invariant], axis=1)
    assert cuts.any() and next_distance[cuts].max() <= influence_radius(keep_out, dt, drag, gain)


def test_double_integrator_layout_keeps_at_most_one_row() -> None:
    env = SafeObstacleDoubleIntegratorEnv()
    counts = []
    run(gym.make("SafeObstacleDoubleIntegrator-v0"), projected_greedy, 10, 7, lambda m, b, a: counts.append(len(b)))
    assert max(counts) == 1 and env.max_constraints == 4


def test_unicycle_rows_couple_both_commands_and_admit_stopping() -> None:
    rows = []
    run(gym.make("SafeUnicycle-v0"), uniform_inside, 10, 3, lambda m, b, a: rows.append((m, b)))
    matrix = np.vstack([m for m, _ in rows])
    offsets = np.concatenate([b for _, b in rows])
    assert np.all(offsets >= 0.0)  # (v, omega) = (0, 0) satisfies every row: never empty
    coupled = np.all(np.abs(matrix) > 1e-9, axis=1)
    assert coupled.mean() > 0.5


# The inner box against the polytope


@pytest.mark.parametrize("env_id", SAFE_CONSTRAINED_ENV_IDS)
def test_inner_box_is_clearly_smaller_and_the_best_action_is_often_on_a_slanted_face(env_id: str) -> None:
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    low, high = space_bounds(env)
    ratios, on_face, with_rows = [], 0, 0

    def inspect(matrix: np.ndarray, offsets: np.ndarray, action: np.ndarray) -> None:
        nonlocal on_face, with_rows
        if len(offsets) == 0:
            return
        with_rows += 1
        slanted = np.all(np.abs(matrix) > 1e-9, axis=1)
        on_face += int(np.any(slanted & (np.abs(matrix @ action - offsets) <= 1e-7 * np.linalg.norm(matrix, axis=1))))
        if with_rows % 7 == 0:
            box_low, box_high = unwrapped.safe_action_bounds()
            vertices = pu.polygon_vertices(matrix, offsets, low, high)
            x, y = vertices[:, 0], vertices[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            ratios.append(float(np.prod(box_high.astype(np.float64) - box_low)) / area)

    run(env, projected_greedy, episodes=15, seed=50, inspect=inspect)
    assert len(ratios) > 20
    assert 0.0 < np.mean(ratios) < 0.8 and max(ratios) <= 1.0 + 1e-9
    assert on_face / with_rows > 0.3


def test_an_empty_polytope_gives_an_empty_box_the_box_support_accepts() -> None:
    # Unsafe states (reached only by acting outside the polytope, e.g. the head evaluated without its support) may have
    # no safe action: the inner box must then say so as boxes do (low > high, finite), not with infinities.
    env = gym.make("SafeObstacleDoubleIntegrator-v0", support="box")
    unwrapped = env.unwrapped
    low, high = space_bounds(env)
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(400):
        x, y = unwrapped.obstacles[0][:2] + rng.uniform(-0.6, 0.6, size=2)
        velocity = rng.uniform(-unwrapped.max_speed, unwrapped.max_speed, size=2)
        env.reset(seed=0, options={"state": (x, y, *velocity)})
        if not pu.chebyshev_center(*unwrapped.safe_action_constraints(), low, high).is_empty():
            continue
        found += 1
        box_low, box_high = unwrapped.safe_action_bounds()
        assert np.all(np.isfinite(box_low)) and np.all(np.isfinite(box_high)) and np.any(box_low > box_high)
        stored = SafetyWrapper(gym.make("SafeObstacleDoubleIntegrator-v0", support="box")).support_kind.validate(
            (box_low, box_high), "test"
        )
        assert SafetyWrapper(env).support_kind.empty(stored[None])[0]
    assert found > 0
