import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq.envs import SAFE_CONTINUOUS_ENV_IDS, SafeDoubleIntegratorEnv, SafePointMassEnv, register_envs
from sb3_safeq.envs.double_integrator import braking_distance, max_speed_within
from sb3_safeq.envs.point_mass import float32_box_inside

register_envs()

# Slack for float64 rounding in the real-arithmetic guarantees; the envs' margins (0.01) are 1e7 times larger.
TOLERANCE = 1e-9
UNIT_SQUARE = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0))


def box_points(low: np.ndarray, high: np.ndarray, fractions: list[tuple[float, ...]]) -> list[np.ndarray]:
    """Corners, centre and the given fractional points of a box, as float32 actions (all inside the box)."""
    corners = np.array(np.meshgrid(*zip(low, high, strict=True))).T.reshape(-1, len(low))
    points = [*corners, (low + high) / 2, *(low + (high - low) * np.array(f) for f in fractions)]
    return [np.clip(np.asarray(point, dtype=np.float32), low, high) for point in points]


def is_empty(box: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.any(box[0] > box[1]))


def run_policy(env: gym.Env, steps: int, policy: str, seed: int) -> tuple[float, int, list[float]]:
    """
    Run ``"uniform"`` (in the safe box), ``"corners"`` (a random corner of the safe box), ``"unmasked"`` (uniform
    in the action space) or ``"greedy"`` (straight to the goal / to the wall, clipped into the box) or
    ``"greedy unmasked"``; returns (total cost, empty boxes seen, episode returns).
    """
    bounds = env.get_wrapper_attr("safe_action_bounds")
    space = env.action_space
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    total_cost, empty, returns, episode_return = 0.0, 0, [], 0.0
    for _ in range(steps):
        low, high = bounds()
        empty += int(is_empty((low, high)))
        if policy == "uniform":
            action = rng.uniform(low, high)
        elif policy == "corners":
            action = np.where(rng.random(len(low)) < 0.5, low, high)
        elif policy == "unmasked":
            action = rng.uniform(space.low, space.high)
        else:
            # Full speed straight to the goal (point mass) or full acceleration towards the wall.
            action = observation[2:4] / max(np.abs(observation[2:4]).max(), 1e-9) if len(low) == 2 else np.ones(1)
            if policy == "greedy":
                action = np.clip(action, low, high)
        observation, reward, terminated, truncated, info = env.step(action.astype(np.float32))
        total_cost += info["cost"]
        episode_return += reward
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            observation, _ = env.reset()
    return total_cost, empty, returns


# Environment ids, safe boxes, cost through wrappers


def test_continuous_ids_register() -> None:
    register_envs()
    assert SAFE_CONTINUOUS_ENV_IDS == ("SafePointMass-v0", "SafeDoubleIntegrator-v0")
    for env_id, dims in zip(SAFE_CONTINUOUS_ENV_IDS, (2, 1), strict=True):
        assert gym.spec(env_id).max_episode_steps == 200
        env = gym.make(env_id)
        assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.dtype == np.float32
        assert env.action_space.shape == (dims,)


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
def test_bounds_contract_through_wrappers(env_id: str) -> None:
    env = gym.make(env_id)
    bounds = env.get_wrapper_attr("safe_action_bounds")
    _, info = env.reset(seed=0)
    assert info["cost"] == 0.0
    for _ in range(50):
        low, high = bounds()
        for bound in (low, high):
            assert bound.dtype == np.float32 and bound.shape == env.action_space.shape
        assert np.all(env.action_space.low <= low) and np.all(low <= high) and np.all(high <= env.action_space.high)
        _, _, _, _, info = env.step(high)
        assert type(info["cost"]) is float and info["cost"] == 0.0
    assert isinstance(env.get_wrapper_attr("safe_set_definition"), str)


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
def test_env_checkers_pass(env_id: str) -> None:
    check_env(gym.make(env_id).unwrapped)
    sb3_check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_class", [SafePointMassEnv, SafeDoubleIntegratorEnv])
def test_seeding_is_reproducible(env_class: type[gym.Env]) -> None:
    first, second = env_class(), env_class()
    np.testing.assert_array_equal(first.reset(seed=3)[0], second.reset(seed=3)[0])
    assert not np.array_equal(first.reset(seed=4)[0], second.reset(seed=3)[0])
    first.reset(seed=3)
    action = first.action_space.high * 0.5
    np.testing.assert_array_equal(first.step(action)[0], second.step(action)[0])


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
def test_dummy_vec_env_method(env_id: str) -> None:
    vec_env = DummyVecEnv([lambda: Monitor(gym.make(env_id))] * 2)
    vec_env.seed(0)
    vec_env.reset()
    for _ in range(20):
        lows, highs = map(np.stack, zip(*vec_env.env_method("safe_action_bounds"), strict=True))
        assert lows.shape == highs.shape == (2, *vec_env.action_space.shape) and lows.dtype == np.float32
        assert np.all(lows <= highs)
        _, _, _, infos = vec_env.step(lows)
        assert all(info["cost"] == 0.0 for info in infos)


# Random and greedy policies


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
@pytest.mark.parametrize("policy", ["uniform", "corners", "greedy"])
def test_policies_inside_the_box_are_never_unsafe(env_id: str, policy: str) -> None:
    total_cost, empty, _ = run_policy(gym.make(env_id), 3_000, policy, seed=1)
    assert total_cost == 0.0 and empty == 0


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
@pytest.mark.parametrize("policy", ["unmasked", "greedy unmasked"])
def test_unconstrained_policies_pay_cost(env_id: str, policy: str) -> None:
    total_cost, empty, _ = run_policy(gym.make(env_id), 3_000, policy, seed=1)
    assert total_cost > 0.0 and empty > 0


@pytest.mark.parametrize("env_id", SAFE_CONTINUOUS_ENV_IDS)
def test_hugging_the_constraint_pays(env_id: str) -> None:
    # The greedy controller clipped into the box runs along the constraint and beats the box's random policy.
    _, _, greedy_returns = run_policy(gym.make(env_id), 2_000, "greedy", seed=2)
    _, _, random_returns = run_policy(gym.make(env_id), 2_000, "uniform", seed=2)
    assert np.mean(greedy_returns) > np.mean(random_returns) + 50.0


# SafePointMass-v0


def safe_positions() -> st.SearchStrategy[tuple[float, float]]:
    """Positions in the safe set: anywhere, or close to (up to on) a hazard's edge or a wall."""
    env = SafePointMassEnv()
    half = env.arena_half_size
    anywhere = st.tuples(st.floats(-half, half), st.floats(-half, half))
    near_hazard = st.builds(
        lambda hazard, angle, clearance: (
            hazard[0] + (hazard[2] + clearance) * math.cos(angle),
            hazard[1] + (hazard[2] + clearance) * math.sin(angle),
        ),
        st.sampled_from(env.hazards),
        st.floats(0.0, 2.0 * math.pi),
        st.floats(0.0, 0.05),
    )
    near_wall = st.builds(
        lambda side, depth, along: (side * (half - depth), along),
        st.sampled_from([-1.0, 1.0]),
        st.floats(0.0, 0.05),
        st.floats(-half, half),
    )
    return st.one_of(anywhere, near_hazard, near_wall, near_wall.map(lambda p: (p[1], p[0])))


def point_mass_is_safe(env: SafePointMassEnv, position: tuple[float, float]) -> bool:
    inside = max(abs(value) for value in position) <= env.arena_half_size
    return inside and all(math.hypot(position[0] - x, position[1] - y) >= r for x, y, r in env.hazards)


def assert_point_mass_rule(env: SafePointMassEnv, before: np.ndarray, after: np.ndarray) -> None:
    """The box's defining rule: clearances to hazards and walls shrink to no less than min(margin, current)."""
    for x, y, radius in env.hazards:
        distance = math.hypot(before[0] - x, before[1] - y)
        assert math.hypot(after[0] - x, after[1] - y) >= min(radius + env.margin, distance) - TOLERANCE
    for b, a in zip(before, after, strict=True):
        assert env.arena_half_size - abs(a) >= min(env.margin, env.arena_half_size - abs(b)) - TOLERANCE


@settings(max_examples=300, deadline=None)
@given(position=safe_positions(), fractions=st.lists(UNIT_SQUARE, min_size=1, max_size=4))
def test_point_mass_box_is_safe_and_invariant(
    position: tuple[float, float], fractions: list[tuple[float, float]]
) -> None:
    env = SafePointMassEnv()
    assume(point_mass_is_safe(env, position))
    env.reset(options={"position": position})
    low, high = env.safe_action_bounds()
    assert np.all(low >= -1.0) and np.all(low <= 0.0) and np.all(high >= 0.0) and np.all(high <= 1.0)
    for action in box_points(low, high, fractions):
        env.reset(options={"position": position})
        _, _, _, _, info = env.step(action)
        assert info["cost"] == 0.0
        assert_point_mass_rule(env, np.array(position), env.position)
        next_low, next_high = env.safe_action_bounds()
        assert np.all(next_low <= 0.0) and np.all(next_high >= 0.0)


def test_point_mass_box_is_not_needlessly_small() -> None:
    env = SafePointMassEnv()
    env.reset(options={"position": (-1.0, 0.0)})
    np.testing.assert_array_equal(env.safe_action_bounds(), ([-1.0, -1.0], [1.0, 1.0]))
    # In the gap between the two large hazards the box still allows full speed along it.
    env.reset(options={"position": (-0.02, 0.0)})
    low, high = env.safe_action_bounds()
    assert low[0] == -1.0 and high[0] == 1.0 and 0.0 < high[1] < 0.5


def test_point_mass_degenerate_box() -> None:
    # A slot narrower than twice the margin: at its middle neither hazard may be approached, so y is pinned to 0.
    env = SafePointMassEnv(hazards=[(0.0, 0.105, 0.1), (0.0, -0.105, 0.1)])
    env.reset(options={"position": (0.0, 0.0)})
    low, high = env.safe_action_bounds()
    assert low[1] == high[1] == 0.0 and low[0] < high[0]
    for action in box_points(low, high, []):
        env.reset(options={"position": (0.0, 0.0)})
        assert env.step(action)[4]["cost"] == 0.0
        assert np.all(np.diff(env.safe_action_bounds(), axis=0) >= 0.0)


def test_point_mass_cost_fires() -> None:
    env = SafePointMassEnv()
    # Just left of the upper large hazard's leftmost point: pushing right enters it, and the box forbids that.
    env.reset(options={"position": (-0.45, 0.44)})
    assert env.safe_action_bounds()[1][0] < 1.0
    _, _, terminated, _, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert info["cost"] == 1.0 and not terminated
    assert is_empty(env.safe_action_bounds())
    # Against a wall: the mass stops on the boundary and the step is unsafe.
    env.reset(options={"position": (1.45, 1.0)})
    _, _, _, _, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert info["cost"] == 1.0 and env.position[0] == env.arena_half_size
    assert not is_empty(env.safe_action_bounds())


def test_point_mass_reaches_goal() -> None:
    env = SafePointMassEnv()
    env.reset(options={"position": (1.0, 0.0)})
    _, reward, terminated, _, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert terminated and info["cost"] == 0.0
    assert reward == pytest.approx(env.progress_scale * 0.1 - env.time_penalty + env.goal_bonus)


def test_point_mass_validation() -> None:
    with pytest.raises(ValueError, match="margin"):
        SafePointMassEnv(margin=0.0)
    with pytest.raises(ValueError, match="radius > 0"):
        SafePointMassEnv(hazards=[(0.0, 0.0, -1.0)])
    with pytest.raises(ValueError, match="goal"):
        SafePointMassEnv(goal=(0.0, 0.44))
    with pytest.raises(ValueError, match="start square"):
        SafePointMassEnv(start_noise=0.5, start=(-0.5, 0.0))
    env = SafePointMassEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.safe_action_bounds()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="arena"):
        env.reset(options={"position": (2.0, 0.0)})


# SafeDoubleIntegrator-v0


def brake_to_rest(env: SafeDoubleIntegratorEnv, max_steps: int = 200) -> tuple[float, float]:
    """Apply full braking until the cart rests or turns; return (total cost, farthest position reached)."""
    total_cost, farthest = 0.0, env.state[0]
    for _ in range(max_steps):
        velocity = env.state[1]
        if velocity == 0.0:
            break
        _, _, _, _, info = env.step(np.array([-np.sign(velocity)], dtype=np.float32))
        total_cost += info["cost"]
        farthest = max(farthest, env.state[0]) if velocity > 0.0 else min(farthest, env.state[0])
        if np.sign(env.state[1]) != np.sign(velocity):
            break
    return total_cost, farthest


def safe_states(env: SafeDoubleIntegratorEnv) -> st.SearchStrategy[tuple[float, float]]:
    """States whose full-braking stopping points lie within the walls (up to TOLERANCE), boundary included."""
    speed = max_speed_within(env.p_max - env.p_min - 3 * TOLERANCE, env.dt)

    def state(velocity: float, fraction: float) -> tuple[float, float]:
        lowest = env.p_min + braking_distance(-velocity, env.dt) + TOLERANCE
        highest = env.p_max - braking_distance(velocity, env.dt) - TOLERANCE
        return lowest + fraction * (highest - lowest), velocity

    return st.builds(state, st.floats(-speed, speed), st.floats(0.0, 1.0))


@given(speed=st.floats(0.0, 3.0), dt=st.sampled_from([0.01, 0.05, 0.1, 0.3]))
def test_braking_distance_matches_simulation(speed: float, dt: float) -> None:
    position, velocity, farthest = 0.0, speed, 0.0
    while velocity > 0.0:
        position, velocity = position + dt * velocity, velocity - dt
        farthest = max(farthest, position)
    assert braking_distance(speed, dt) == pytest.approx(farthest, abs=1e-12)
    # The inverse: the largest speed that brakes within a distance.
    distance = braking_distance(speed, dt)
    assert max_speed_within(distance, dt) == pytest.approx(speed, abs=1e-9)
    assert braking_distance(max_speed_within(distance + 1e-3, dt), dt) == pytest.approx(distance + 1e-3, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), fractions=st.lists(st.tuples(st.floats(0.0, 1.0)), min_size=1, max_size=4))
def test_double_integrator_box_is_safe_and_invariant(data: st.DataObject, fractions: list[tuple[float]]) -> None:
    env = SafeDoubleIntegratorEnv()
    state = data.draw(safe_states(env))
    env.reset(options={"state": state})
    low, high = env.safe_action_bounds()
    assert -1.0 <= low[0] <= high[0] <= 1.0
    # The box contains brake-to-rest (rounded to float32 towards braking harder).
    brake = np.clip(-state[1] / env.dt, -1.0, 1.0)
    assert low[0] - 1e-6 <= brake <= high[0] + 1e-6
    for action in box_points(low, high, fractions):
        env.reset(options={"state": state})
        assert env.step(action)[4]["cost"] == 0.0
        assert not is_empty(env.safe_action_bounds())
        # Invariance, checked by simulation: full braking from the new state never reaches a wall.
        total_cost, _ = brake_to_rest(env)
        assert total_cost == 0.0


@settings(max_examples=200, deadline=None)
@given(velocity=st.floats(0.2, 1.9), excess=st.floats(1e-6, 0.02))
def test_double_integrator_safe_set_is_maximal(velocity: float, excess: float) -> None:
    # Just beyond the safe set no action can avoid the wall: even full braking crashes, and the box is empty.
    env = SafeDoubleIntegratorEnv()
    position = env.p_max - braking_distance(velocity, env.dt) + excess
    env.reset(options={"state": (position, velocity)})
    assert is_empty(env.safe_action_bounds())
    total_cost, _ = brake_to_rest(env)
    assert total_cost > 0.0


@settings(max_examples=200, deadline=None)
@given(velocity=st.floats(-1.0, 1.9), room=st.floats(0.0, 0.1))
def test_double_integrator_box_is_tight(velocity: float, room: float) -> None:
    # Accelerating slightly beyond the box's upper bound pushes the next stopping point past the allowed one.
    env = SafeDoubleIntegratorEnv()
    position = env.p_max - env.margin - braking_distance(velocity, env.dt) - room
    env.reset(options={"state": (position, velocity)})
    _, high = env.safe_action_bounds()
    assume(high[0] < 0.99)
    farthest = position + braking_distance(velocity, env.dt)
    allowed = max(env.p_max - env.margin, farthest)
    next_position, next_velocity = position + env.dt * velocity, velocity + env.dt * (float(high[0]) + 1e-3)
    assert next_position + braking_distance(next_velocity, env.dt) > allowed


def test_double_integrator_degenerate_box() -> None:
    # On the margin's boundary at speed: only full braking keeps the stopping point where it is.
    env = SafeDoubleIntegratorEnv()
    state = (env.p_max - env.margin - braking_distance(1.0, env.dt), 1.0)
    env.reset(options={"state": state})
    low, high = env.safe_action_bounds()
    assert low[0] == -1.0 and high[0] == pytest.approx(-1.0, abs=1e-6)
    for action in (low, high):
        env.reset(options={"state": state})
        assert env.step(action)[4]["cost"] == 0.0 and not is_empty(env.safe_action_bounds())


def test_double_integrator_crash() -> None:
    env = SafeDoubleIntegratorEnv()
    env.reset(options={"state": (0.99, 1.0)})
    assert is_empty(env.safe_action_bounds())
    _, reward, terminated, _, info = env.step(np.array([-1.0], dtype=np.float32))
    assert info["cost"] == 1.0 and not terminated and reward == 1.0
    np.testing.assert_array_equal(env.state, [env.p_max, 0.0])
    # Stopped at the wall: back in the safe set, where only not accelerating towards the wall is allowed.
    low, high = env.safe_action_bounds()
    assert low[0] == -1.0 and high[0] == 0.0


def test_double_integrator_greedy_parks_at_the_margin() -> None:
    env = SafeDoubleIntegratorEnv()
    env.reset(seed=0)
    for _ in range(200):
        _, high = env.safe_action_bounds()
        assert env.step(high)[4]["cost"] == 0.0
    position, velocity = env.state
    assert position == pytest.approx(env.p_max - env.margin, abs=1e-6) and velocity == pytest.approx(0.0, abs=1e-6)


def test_double_integrator_validation() -> None:
    with pytest.raises(ValueError, match="position_limits"):
        SafeDoubleIntegratorEnv(position_limits=(1.0, -1.0))
    with pytest.raises(ValueError, match="target"):
        SafeDoubleIntegratorEnv(target=2.0)
    with pytest.raises(ValueError, match="stop"):
        SafeDoubleIntegratorEnv(start_positions=(0.9, 0.995))
    with pytest.raises(ValueError, match="margin"):
        SafeDoubleIntegratorEnv(margin=-1.0)
    env = SafeDoubleIntegratorEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, dtype=np.float32))
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"state": (0.0, 10.0)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2, dtype=np.float32))


# Shared helpers


@given(low=st.floats(-2.0, 2.0), width=st.floats(0.0, 2.0))
def test_float32_box_inside(low: float, width: float) -> None:
    high = low + width
    low_32, high_32 = float32_box_inside([low], [high])
    assert low_32.dtype == high_32.dtype == np.float32
    assert float(low_32[0]) >= low and float(high_32[0]) <= high
    if low <= 0.0 <= high:
        assert low_32[0] <= 0.0 <= high_32[0]


@pytest.mark.parametrize(
    ("env_id", "shape"), [("SafePointMass-v0", (200, 200, 3)), ("SafeDoubleIntegrator-v0", (40, 240, 3))]
)
def test_rgb_array_rendering_follows_the_state(env_id: str, shape: tuple[int, int, int]) -> None:
    # SB3 builds environments from an id with render_mode="rgb_array": it must be accepted.
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.shape == shape and first.dtype == np.uint8
    assert (first == np.array([40, 90, 220], dtype=np.uint8)).all(axis=-1).any()  # the agent is drawn in blue
    for _ in range(5):
        env.step(env.unwrapped.safe_action_bounds()[1])  # the upper corner of the safe box moves the agent
    assert not np.array_equal(env.render(), first)
    no_render = gym.make(env_id)
    no_render.reset(seed=0)
    assert no_render.render() is None
    with pytest.raises(ValueError, match="rgb_array"):
        type(env.unwrapped)(render_mode="human")
