import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_safeq.common.tabular import reachable_states
from sb3_safeq.envs import (
    SAFE_DISCRETE_ENV_IDS,
    SafeCartPoleEnv,
    SafeCliffWalkingEnv,
    SafeFrozenLakeEnv,
    register_envs,
)

register_envs()

TABULAR_ENV_IDS = ("SafeCliffWalking-v0", "SafeCliffWalkingSlippery-v0", "SafeFrozenLake8x8-v0")
UP, RIGHT, DOWN = 0, 1, 2  # CliffWalking actions
FROZEN_DOWN = 1  # FrozenLake action


def run_random(env: gym.Env, steps: int, masked: bool, seed: int) -> tuple[float, int]:
    """Uniformly random policy, restricted to the mask or not; returns (total cost, empty masks seen)."""
    action_masks = env.get_wrapper_attr("action_masks")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    total_cost, empty_masks = 0.0, 0
    for _ in range(steps):
        mask = action_masks()
        empty_masks += int(not mask.any())
        allowed = np.flatnonzero(mask) if masked and mask.any() else np.arange(len(mask))
        _, _, terminated, truncated, info = env.step(int(allowed[rng.integers(len(allowed))]))
        total_cost += info["cost"]
        if terminated or truncated:
            env.reset()
    return total_cost, empty_masks


def test_register_envs_is_idempotent() -> None:
    register_envs()
    register_envs()
    assert SAFE_DISCRETE_ENV_IDS == (
        "SafeCliffWalking-v0",
        "SafeCliffWalkingSlippery-v0",
        "SafeFrozenLake8x8-v0",
        "SafeCartPole-v0",
    )
    limits = {env_id: gym.spec(env_id).max_episode_steps for env_id in SAFE_DISCRETE_ENV_IDS}
    assert limits == {
        "SafeCliffWalking-v0": 100,
        "SafeCliffWalkingSlippery-v0": 100,
        "SafeFrozenLake8x8-v0": 200,
        "SafeCartPole-v0": 500,
    }


@pytest.mark.parametrize("env_id", SAFE_DISCRETE_ENV_IDS)
def test_masks_and_cost_through_wrappers(env_id: str) -> None:
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    assert info["cost"] == 0.0
    mask = env.get_wrapper_attr("action_masks")()
    assert mask.dtype == np.bool_ and mask.shape == (env.action_space.n,)
    assert mask.any()
    _, _, _, _, info = env.step(int(np.flatnonzero(mask)[0]))
    assert type(info["cost"]) is float and info["cost"] == 0.0
    assert isinstance(env.get_wrapper_attr("safe_set_definition"), str)


@pytest.mark.parametrize("env_id", SAFE_DISCRETE_ENV_IDS)
def test_masked_random_policy_is_never_unsafe(env_id: str) -> None:
    steps = 20_000 if env_id == "SafeCartPole-v0" else 5_000
    total_cost, empty_masks = run_random(gym.make(env_id), steps, masked=True, seed=1)
    assert total_cost == 0.0
    assert empty_masks == 0


@pytest.mark.parametrize("env_id", TABULAR_ENV_IDS)
def test_unmasked_random_policy_pays_cost(env_id: str) -> None:
    total_cost, _ = run_random(gym.make(env_id), 2_000, masked=False, seed=1)
    assert total_cost > 0.0


def test_cliff_cost_fires_on_entering_the_cliff() -> None:
    env = gym.make("SafeCliffWalking-v0")
    env.reset(seed=0)
    assert not env.get_wrapper_attr("action_masks")()[RIGHT]
    observation, reward, terminated, _, info = env.step(RIGHT)
    assert info["cost"] == 1.0 and reward == -100 and observation == 36 and not terminated


def test_cliff_optimal_safe_path() -> None:
    env = gym.make("SafeCliffWalking-v0")
    env.reset(seed=0)
    action_masks = env.get_wrapper_attr("action_masks")
    total_reward, total_cost = 0.0, 0.0
    for action in [UP] + [RIGHT] * 11 + [DOWN]:
        assert action_masks()[action]
        _, reward, terminated, truncated, info = env.step(action)
        total_reward += reward
        total_cost += info["cost"]
    assert (total_reward, total_cost, terminated, truncated) == (-13, 0.0, True, False)


def test_deterministic_cliff_mask_is_one_step_rule() -> None:
    env = SafeCliffWalkingEnv()
    one_step = np.array([[all(outcome[2] != -100 for outcome in env.P[s][a]) for a in range(4)] for s in range(48)])
    np.testing.assert_array_equal(env.safe_action_table, one_step)


@pytest.mark.parametrize("env_id", TABULAR_ENV_IDS)
def test_tabular_safe_set_is_invariant(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    table = env.safe_action_table
    assert table.dtype == np.bool_ and table.shape == (env.observation_space.n, env.action_space.n)
    start = np.flatnonzero(env.initial_state_distrib)
    reached = reachable_states(env.P, *table.shape, start, table)
    assert table[reached].any(axis=1).all()
    if "Cliff" in env_id:
        # Even an unmasked policy only meets cliff states that keep a safe action.
        reached = reachable_states(env.P, *table.shape, start)
        assert table[reached].any(axis=1).all()
    # Every safe action keeps every outcome inside the states that still have a safe action (or terminates).
    for state, action in np.argwhere(table):
        for prob, next_state, _, terminated in env.P[state][action]:
            assert prob == 0.0 or terminated or table[next_state].any()


def test_slippery_cliff_removes_moves_that_can_slip_into_the_cliff() -> None:
    env = SafeCliffWalkingEnv(is_slippery=True)
    above_cliff = 2 * 12 + 5
    np.testing.assert_array_equal(env.safe_action_table[above_cliff], [True, False, False, False])
    env.reset(seed=0)
    costs = []
    for _ in range(30):
        env.s = above_cliff
        costs.append(env.step(RIGHT)[4]["cost"])
    assert 1.0 in costs and 0.0 in costs


def test_frozen_lake_cost_fires_on_falling_into_a_hole() -> None:
    env = SafeFrozenLakeEnv(is_slippery=False)
    env.reset(seed=0)
    above_hole = 1 * 8 + 3  # the cell below, (2, 3), is a hole on the 8x8 map
    env.s = above_hole
    assert not env.action_masks()[FROZEN_DOWN]
    observation, _, terminated, _, info = env.step(FROZEN_DOWN)
    assert info["cost"] == 1.0 and terminated and env.desc.ravel()[observation] == b"H"


def test_frozen_lake_terminal_rows() -> None:
    env = SafeFrozenLakeEnv()
    letters = env.desc.ravel()
    assert not env.safe_action_table[letters == b"H"].any()
    assert env.safe_action_table[letters == b"G"].all()


def test_frozen_lake_start_without_safe_action_is_rejected() -> None:
    with pytest.raises(ValueError, match="no safe action"):
        SafeFrozenLakeEnv(desc=["SH", "HG"], is_slippery=True)


def test_cartpole_cost_fires_outside_the_limit() -> None:
    env = SafeCartPoleEnv()
    env.reset(seed=0)
    env.state = np.array([0.99, 1.0, 0.0, 0.0])
    _, _, terminated, _, info = env.step(1)
    assert info["cost"] == 1.0 and not terminated


def test_cartpole_mask_looks_ahead() -> None:
    env = SafeCartPoleEnv()
    env.reset(seed=0)
    env.state = np.array([0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(env.action_masks(), [True, True])
    # Well inside the limit but too fast: a position-only rule would allow both actions.
    env.state = np.array([0.7, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(env.action_masks(), [True, False])
    # Nothing can stop the cart before the limit: the state is outside the invariant set.
    env.state = np.array([0.95, 2.0, 0.0, 0.0])
    assert not env.action_masks().any()
    # Terminal states end the episode: no action can be unsafe.
    env.state = np.array([0.95, 2.0, 0.5, 0.0])
    assert env.action_masks().all()


def test_cartpole_certified_actions_keep_a_safe_action() -> None:
    env = SafeCartPoleEnv()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    checked = 0
    for state in rng.uniform([-1.0, -2.0, -0.2, -2.0], [1.0, 2.0, 0.2, 2.0], size=(2_000, 4)):
        env.state = state
        env.steps_beyond_terminated = None
        mask = env.action_masks()
        for action in np.flatnonzero(mask):
            env.state = state
            env.steps_beyond_terminated = None
            _, _, terminated, _, info = env.step(int(action))
            assert info["cost"] == 0.0
            assert terminated or env.action_masks().any()
            checked += 1
    assert checked > 1_000


def test_cartpole_initial_states_have_safe_actions() -> None:
    env = SafeCartPoleEnv()
    for corner in np.array(np.meshgrid(*[[-0.05, 0.05]] * 4)).T.reshape(-1, 4):
        env.reset(seed=0)
        env.state = corner
        np.testing.assert_array_equal(env.action_masks(), [True, True])


def test_cartpole_validation() -> None:
    with pytest.raises(ValueError, match="position_limit"):
        SafeCartPoleEnv(position_limit=0.0)
    with pytest.raises(ValueError, match="lookahead_steps"):
        SafeCartPoleEnv(lookahead_steps=0)
    with pytest.raises(RuntimeError, match="reset"):
        SafeCartPoleEnv().action_masks()


@pytest.mark.parametrize("env_id", SAFE_DISCRETE_ENV_IDS)
def test_dummy_vec_env_method(env_id: str) -> None:
    vec_env = DummyVecEnv([lambda: Monitor(gym.make(env_id))] * 2)
    vec_env.seed(0)
    vec_env.reset()
    masks = np.stack(vec_env.env_method("action_masks"))
    assert masks.shape == (2, vec_env.action_space.n) and masks.dtype == np.bool_
    actions = np.array([np.flatnonzero(mask)[0] for mask in masks])
    _, _, _, infos = vec_env.step(actions)
    assert all(info["cost"] == 0.0 for info in infos)


def test_subproc_vec_env_method() -> None:
    # "module:id" makes each worker import (and so register) the package, whatever the start method.
    vec_env = make_vec_env("sb3_safeq:SafeCliffWalking-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        vec_env.reset()
        masks = np.stack(vec_env.env_method("action_masks"))
        np.testing.assert_array_equal(masks, [[True, False, True, True]] * 2)
        _, _, _, infos = vec_env.step(np.array([RIGHT, UP]))
        assert [info["cost"] for info in infos] == [1.0, 0.0]
    finally:
        vec_env.close()


def test_maskable_ppo_smoke() -> None:
    # Tiny networks: a torch thread pool only adds contention (x100 slower on a busy 2-core machine).
    n_threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        model = MaskablePPO("MlpPolicy", gym.make("SafeCliffWalking-v0"), seed=0)
        model.learn(256)
    finally:
        th.set_num_threads(n_threads)
    action, _ = model.predict(36, action_masks=np.array([True, False, True, True]))
    assert action != RIGHT
