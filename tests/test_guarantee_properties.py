"""
The guarantee as a property over random set-ups: for random supports (masks with any safe subset; boxes with
degenerate axes), numbers of environments, exploration modes, episode lengths, terminations or truncations and empty
terminal supports, nothing outside the support is executed (the environments raise on it), and every stored support
is the one of its observation or next observation (the observations encode their supports, read back here without
the package).
"""

from typing import Any

import numpy as np
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.safeq.arguments import EXPLORATION_MODES
from tests.helpers import KINDS, TINY, decode_supports, random_env, to_agent_units


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    n_envs=st.integers(1, 3),
    exploration=st.sampled_from(EXPLORATION_MODES),
    episode_length=st.integers(2, 9),
    terminate=st.booleans(),
    empty_terminal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_nothing_outside_the_support_is_executed_or_stored(
    kind: str, n_envs: int, exploration: str, episode_length: int, terminate: bool, empty_terminal: bool, seed: int
) -> None:
    # Without termination the time limit truncates; only a terminated state may have no safe action.
    terminal_support = "empty" if empty_terminal and terminate else "random"

    def make() -> Any:
        env = random_env(kind, episode_length=episode_length, terminate=terminate, terminal_support=terminal_support)
        return SafetyWrapper(TimeLimit(env, max_episode_steps=episode_length))

    vec_env = DummyVecEnv([make for _ in range(n_envs)])
    model = SafeSupportQ("MlpPolicy", vec_env, exploration=exploration, learning_starts=20, seed=seed, **TINY)
    model.learn(60 * n_envs)
    counters = model.safety_counters
    assert counters.steps == 60 * n_envs
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0

    buffer = model.replay_buffer
    n = buffer.size()
    space = model.action_space
    observations = buffer.observations[:n].reshape(n * n_envs, -1)
    next_observations = buffer.next_observations[:n].reshape(n * n_envs, -1)
    stored = buffer.supports[:n].reshape(n * n_envs, *buffer.supports.shape[2:])
    stored_next = buffer.next_supports[:n].reshape(n * n_envs, *buffer.supports.shape[2:])
    np.testing.assert_array_equal(stored, to_agent_units(space, decode_supports(kind, observations)))
    np.testing.assert_array_equal(stored_next, to_agent_units(space, decode_supports(kind, next_observations)))
