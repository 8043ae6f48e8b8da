import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import MissingSupportError, SafeReplayBuffer, SafetyLoggerCallback, SafetyWrapper, UnsafeVisitError
from tests.toy_envs import FixedMaskEnv, NoMaskEnv, RandomMaskEnv


def test_reset_and_step_carry_the_mask_of_the_returned_observation() -> None:
    env = SafetyWrapper(RandomMaskEnv())
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["action_mask"], obs[:-1].astype(bool))
    np.testing.assert_array_equal(env.action_masks(), info["action_mask"])
    for _ in range(30):
        action = int(np.flatnonzero(env.action_masks())[0])
        obs, _, terminated, _, info = env.step(action)
        np.testing.assert_array_equal(info["action_mask"], obs[:-1].astype(bool))
        assert info["out_of_support"] is False and info["cost"] == 0.0
        if terminated:
            obs, info = env.reset()


def test_terminal_masks_survive_the_vec_env_auto_reset() -> None:
    # Truncation by TimeLimit and termination both: info must hold the terminal observation's mask.
    for terminate, limit in ((True, 1000), (False, 7)):
        vec_env = DummyVecEnv([lambda t=terminate, n=limit: SafetyWrapper(TimeLimit(RandomMaskEnv(terminate=t), n))])
        vec_env.seed(3)
        vec_env.reset()
        n_done = 0
        for _ in range(60):
            mask = vec_env.env_method("action_masks")[0]
            _, _, dones, infos = vec_env.step(np.array([np.flatnonzero(mask)[0]]))
            if dones[0]:
                n_done += 1
                terminal_obs = infos[0]["terminal_observation"]
                np.testing.assert_array_equal(infos[0]["action_mask"], terminal_obs[:-1].astype(bool))
                assert infos[0]["TimeLimit.truncated"] is (not terminate)
        assert n_done >= 2


def test_counters_shield_and_strict_mode() -> None:
    mask = np.array([True, False, True])
    env = SafetyWrapper(FixedMaskEnv(mask))
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert info["out_of_support"] is True and info["shielded"] is False
    assert env.counters.out_of_support_actions == 1 and env.counters.shielded_actions == 0

    shielded = SafetyWrapper(FixedMaskEnv(mask), shield=True)
    shielded.reset(seed=0)
    executed = []
    inner_step = shielded.env.step

    def recording_step(action: int):
        executed.append(int(action))
        return inner_step(action)

    shielded.env.step = recording_step
    for _ in range(50):
        _, _, _, _, info = shielded.step(1)
        assert info["shielded"] is True
    assert set(executed) == {0, 2}  # the unsafe action never reached the environment
    assert shielded.counters.shielded_actions == 50 == shielded.counters.out_of_support_actions

    class CostlyEnv(FixedMaskEnv):
        def step(self, action):
            obs, reward, terminated, truncated, _ = super().step(action)
            return obs, reward, terminated, truncated, {"cost": 2.5}

    counting = SafetyWrapper(CostlyEnv(mask))
    counting.reset()
    counting.step(0)
    counting.step(0)
    assert counting.counters.unsafe_visits == 2 and counting.counters.cumulative_cost == 5.0
    strict = SafetyWrapper(CostlyEnv(mask), strict=True)
    strict.reset()
    with pytest.raises(UnsafeVisitError, match="strict mode"):
        strict.step(0)


def test_empty_support_states_are_counted() -> None:
    env = SafetyWrapper(FixedMaskEnv(np.zeros(3, dtype=bool)))
    _, info = env.reset()
    assert info["empty_support"] is True
    _, _, _, _, info = env.step(0)
    assert info["empty_support"] is True and info["out_of_support"] is True
    assert env.counters.empty_support_states == 2


def test_mask_sources_and_errors() -> None:
    with pytest.raises(MissingSupportError, match="action_masks"):
        SafetyWrapper(NoMaskEnv())
    masked = SafetyWrapper(NoMaskEnv(), action_mask_fn=lambda env: np.array([False, True, True]))
    _, info = masked.reset()
    np.testing.assert_array_equal(info["action_mask"], [False, True, True])
    # sb3-contrib's ActionMasker is found through further gymnasium wrappers.
    wrapped = SafetyWrapper(TimeLimit(ActionMasker(NoMaskEnv(), lambda env: np.array([1, 0, 1])), 10))
    _, info = wrapped.reset()
    np.testing.assert_array_equal(info["action_mask"], [True, False, True])
    bad_shape = SafetyWrapper(NoMaskEnv(), action_mask_fn=lambda env: np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        bad_shape.reset()
    with pytest.raises(MissingSupportError, match="safe_action_bounds"):
        SafetyWrapper(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="MultiDiscrete"):
        SafetyWrapper(FixedMaskEnv(np.ones(4, bool), spaces.MultiDiscrete([2, 2])))


def test_missing_cost_warns_once() -> None:
    class NoCostEnv(FixedMaskEnv):
        def step(self, action):
            obs, reward, terminated, truncated, _ = super().step(action)
            return obs, reward, terminated, truncated, {}

    env = SafetyWrapper(NoCostEnv(np.ones(3, dtype=bool)))
    env.reset()
    with pytest.warns(UserWarning, match="no info\\['cost'\\]"):
        env.step(0)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        env.step(0)
    assert not [w for w in later if "info['cost']" in str(w.message)]  # warned once, not on every step
    assert env.counters.steps == 2


def test_replay_buffer_stores_supports_aligned_with_transitions() -> None:
    n_envs = 3
    vec_env = make_vec_env(
        lambda: TimeLimit(RandomMaskEnv(terminate=False), 5), n_envs=n_envs, seed=0, wrapper_class=SafetyWrapper
    )
    buffer = SafeReplayBuffer(200, vec_env.observation_space, vec_env.action_space, n_envs=n_envs)
    obs = vec_env.reset()
    current = np.stack(vec_env.env_method("action_masks"))
    for _ in range(40):
        actions = np.array([np.flatnonzero(m)[-1] for m in current])
        new_obs, rewards, dones, infos = vec_env.step(actions)
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
        buffer.stage_supports(current)
        buffer.add(obs, next_obs, actions, rewards, dones, infos)
        obs = new_obs
        current = np.stack(vec_env.env_method("action_masks"))
    samples = buffer.sample(256)
    # In RandomMaskEnv the observation encodes its own mask: every support must match its observation.
    np.testing.assert_array_equal(samples.supports.numpy(), samples.observations[:, :-1].numpy().astype(bool))
    np.testing.assert_array_equal(samples.next_supports.numpy(), samples.next_observations[:, :-1].numpy().astype(bool))
    # Truncations are not terminations.
    assert samples.dones.sum() == 0
    with pytest.raises(RuntimeError, match="stage_supports"):
        buffer.add(obs, obs, actions, rewards, dones, infos)


def test_safety_logger_callback_counts_for_any_algorithm() -> None:
    from stable_baselines3 import DQN

    env = SafetyWrapper(FixedMaskEnv(np.array([True, False, False])))
    callback = SafetyLoggerCallback()
    DQN("MlpPolicy", env, learning_starts=10, seed=0).learn(200, callback=callback)
    # Unmasked DQN picks unsafe actions often; every step is seen by the callback.
    assert callback.counters.steps == 200
    assert callback.counters.out_of_support_actions == env.counters.out_of_support_actions > 50
