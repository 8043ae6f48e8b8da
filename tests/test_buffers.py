"""
The replay buffer stores the support of every observation and next observation aligned with its transition, for
both kinds: filled by hand with staged supports, by single- and multi-environment training, and across episode ends,
where a VecEnv's auto-reset replaces the terminal observation (whose support must be kept, even when empty).
"""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_safeq import ConstrainedBox, SafeReplayBuffer, SafeSupportQ, SafetyWrapper
from tests.helpers import (
    KINDS,
    SMALL,
    SUPPORT_METHOD,
    TINY,
    as_support,
    assert_in_supports,
    decode_supports,
    random_env,
    safe_action,
    to_agent_units,
)


class SupportRecorder(gym.Wrapper):
    """Records the support of every observation the environment returns (keyed by the observation's bytes)."""

    def __init__(self, env: gym.Env, kind: str, table: dict[bytes, np.ndarray]) -> None:
        super().__init__(env)
        self.kind = kind
        self.table = table

    def _record(self, observation: np.ndarray) -> None:
        method = self.env.get_wrapper_attr(SUPPORT_METHOD[self.kind])
        self.table[np.asarray(observation, dtype=np.float32).tobytes()] = as_support(self.kind, method())

    def reset(self, **kwargs: Any) -> Any:
        observation, info = self.env.reset(**kwargs)
        self._record(observation)
        return observation, info

    def step(self, action: Any) -> Any:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(observation)
        return observation, reward, terminated, truncated, info


def _recorded(table: dict[bytes, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """:return: the lookup of an observation's support in the table of a :class:`SupportRecorder`"""
    return lambda observation: table[np.asarray(observation, dtype=np.float32).tobytes()]


def _empty(kind: str, supports: np.ndarray) -> np.ndarray:
    """:return: per support, whether it has no safe action (written independently of the package)"""
    if kind == "polytope":  # the toy env's empty polytope a_0 <= -3 on [-2, 1] x [0, 5]: 1.5 a_0 <= -2.5 in agent units
        return np.all(np.isclose(supports[..., 0, :], [1.5, 0.0, -2.5]), axis=-1)
    return ~supports.any(axis=-1) if kind == "mask" else (supports[..., 0, :] > supports[..., 1, :]).any(axis=-1)


def _check_stored_supports(model: SafeSupportQ, kind: str, support_of: Callable[[np.ndarray], np.ndarray]) -> int:
    """
    Check the supports in the replay buffer against the supports of the stored (next) observations.

    :param support_of: the raw support of one observation
    :return: the number of stored episode ends
    """
    buffer = model.replay_buffer
    assert isinstance(buffer, SafeReplayBuffer) and not buffer.full
    n, n_envs, space = buffer.pos, model.n_envs, model.action_space
    if isinstance(space, ConstrainedBox):
        shape: tuple[int, ...] = (space.max_constraints + 1, space.shape[0] + 1)
    else:
        shape = (space.n,) if isinstance(space, spaces.Discrete) else (2, space.shape[0])
    assert buffer.supports.shape == buffer.next_supports.shape == (buffer.buffer_size, n_envs, *shape)
    supports, next_supports = buffer.supports[:n], buffer.next_supports[:n]
    assert supports.dtype == (np.bool_ if kind == "mask" else np.float32)
    if kind == "box":  # agent units (a polytope's rows are not bounded)
        assert np.all((supports >= -1.0) & (supports <= 1.0))
        assert np.all((next_supports >= -1.0) & (next_supports <= 1.0))
    actions = buffer.actions[:n].reshape(n * n_envs, *buffer.actions.shape[2:])  # agent units
    assert_in_supports(actions[:, 0] if kind == "mask" else actions, supports.reshape(n * n_envs, *shape))
    for t in range(n):
        for env in range(n_envs):
            expected = to_agent_units(space, support_of(buffer.observations[t, env]))
            expected_next = to_agent_units(space, support_of(buffer.next_observations[t, env]))
            np.testing.assert_array_equal(supports[t, env], expected)
            np.testing.assert_array_equal(next_supports[t, env], expected_next)
    return int(buffer.dones[:n].sum())


@pytest.mark.parametrize("kind", KINDS)
def test_replay_buffer_stores_supports_aligned_with_transitions(kind: str) -> None:
    n_envs = 3
    vec_env = make_vec_env(
        lambda: TimeLimit(random_env(kind, terminate=False), 5), n_envs=n_envs, seed=0, wrapper_class=SafetyWrapper
    )
    space = vec_env.action_space
    buffer = SafeReplayBuffer(200, vec_env.observation_space, space, n_envs=n_envs)
    obs = vec_env.reset()
    current = np.stack([as_support(kind, support) for support in vec_env.env_method(SUPPORT_METHOD[kind])])
    for _ in range(40):
        # The highest safe action of each mask, the upper corner of each box.
        if kind == "polytope":  # the Chebyshev centre of each polytope
            actions = np.stack([safe_action(kind, support) for support in current])
        else:
            actions = np.array([np.flatnonzero(m)[-1] for m in current]) if kind == "mask" else current[:, 1]
        new_obs, rewards, dones, infos = vec_env.step(actions)
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
        buffer.stage_supports(to_agent_units(space, current))
        buffer.add(obs, next_obs, actions, rewards, dones, infos)
        obs = new_obs
        current = np.stack([as_support(kind, support) for support in vec_env.env_method(SUPPORT_METHOD[kind])])
    samples = buffer.sample(256)
    # In the random toy envs the observation encodes its own support: every support must match its observation.
    expected = to_agent_units(space, decode_supports(kind, samples.observations.numpy()))
    expected_next = to_agent_units(space, decode_supports(kind, samples.next_observations.numpy()))
    np.testing.assert_array_equal(samples.supports.numpy(), expected)
    np.testing.assert_array_equal(samples.next_supports.numpy(), expected_next)
    # Truncations are not terminations.
    assert samples.dones.sum() == 0
    with pytest.raises(RuntimeError, match=r"pass `add\(..., infos, supports=...\)`"):
        buffer.add(obs, obs, actions, rewards, dones, infos)


POINT_MASS_KWARGS = {
    "learning_starts": 100,
    "batch_size": 32,
    "policy_kwargs": {"net_arch": [32, 32]},
    "n_behavior_samples": 4,
}


# name: (kind, environment (id or factory), its keyword arguments, n_envs, VecEnv class, model arguments). Training
# collects with mixture exploration on masks (behavior and induced actions), with the behavior on the boxes.
def _mask_env() -> gym.Env:
    return TimeLimit(random_env("mask", terminate=False), 7)


def _polytope_env() -> gym.Env:
    return TimeLimit(random_env("polytope", terminate=False), 7)


# Module-level factories, not lambdas: SubprocVecEnv pickles them by reference, so its workers build the environments
# from their own imports (a lambda is pickled by value together with what it references).
MULTI_ENV_CASES: dict[str, tuple[str, Any, dict[str, Any], int, Any, dict[str, Any]]] = {
    "mask": ("mask", _mask_env, {}, 3, None, SMALL),
    "mask-subproc": ("mask", _mask_env, {}, 3, SubprocVecEnv, SMALL),
    "polytope-subproc": (
        "polytope",
        _polytope_env,
        {},
        3,
        SubprocVecEnv,
        SMALL,
    ),
    "box-point-mass": ("box", "SafePointMass-v0", {"max_episode_steps": 60}, 2, None, POINT_MASS_KWARGS),
    "box-double-integrator": ("box", "SafeDoubleIntegrator-v0", {"max_episode_steps": 60}, 2, None, POINT_MASS_KWARGS),
}


@pytest.mark.parametrize("name", list(MULTI_ENV_CASES))
def test_multi_env_training_is_safe_and_stores_every_support(name: str) -> None:
    kind, env_id, env_kwargs, n_envs, vec_env_cls, model_kwargs = MULTI_ENV_CASES[name]
    table: dict[bytes, np.ndarray] = {}
    vec_env = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=0,
        env_kwargs=env_kwargs,
        wrapper_class=lambda env: SafetyWrapper(SupportRecorder(env, kind, table)),
        vec_env_cls=vec_env_cls,
    )
    exploration = "mixture" if kind == "mask" else "behavior"
    model = SafeSupportQ("MlpPolicy", vec_env, exploration=exploration, seed=0, **model_kwargs)
    model.learn(300)
    assert model.num_timesteps == 300
    counters = model.safety_counters
    assert counters.steps == 300
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0
    assert all(wrapper_counters.unsafe_visits == 0 for wrapper_counters in vec_env.get_attr("counters"))
    # A SubprocVecEnv records in its workers: there the toy env's observations, which encode their masks, tell.
    if vec_env_cls is SubprocVecEnv:
        n_ends = _check_stored_supports(model, kind, lambda observation: decode_supports(kind, observation))
    else:
        n_ends = _check_stored_supports(model, kind, _recorded(table))
    buffer = model.replay_buffer
    n = buffer.pos
    assert n == 300 // n_envs
    assert n_ends >= 2 * n_envs and buffer.timeouts[:n].sum() > 0  # TimeLimit truncations: two per environment
    # Within an episode, the support of each next observation is the support of the next step's observation.
    continued = ~buffer.dones[: n - 1].astype(bool)
    same_support = np.all((buffer.next_supports[: n - 1] == buffer.supports[1:n]).reshape(n - 1, n_envs, -1), axis=-1)
    assert np.all(same_support[continued])
    vec_env.close()


@pytest.mark.parametrize("terminate", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_terminal_transitions_keep_the_terminal_support(kind: str, terminate: bool) -> None:
    # Terminations reach an empty support (allowed: the episode ends there); truncations a random one. The
    # auto-reset starts a new episode with another support: the buffer must keep the terminal observation's.
    def make_env() -> gym.Env:
        # 16 actions: two random masks are then almost never equal, so a swapped support would show.
        size = {"n_actions": 16} if kind == "mask" else {}
        terminal = "empty" if terminate else "random"
        env = random_env(kind, episode_length=5, terminate=terminate, terminal_support=terminal, **size)
        return env if terminate else TimeLimit(env, 5)

    table: dict[bytes, np.ndarray] = {}
    wrap = lambda env: SafetyWrapper(SupportRecorder(env, kind, table))  # noqa: E731
    vec_env = make_vec_env(make_env, n_envs=2, seed=0, wrapper_class=wrap)
    model = SafeSupportQ("MlpPolicy", vec_env, learning_starts=30, seed=0, **TINY)
    model.learn(100)
    assert _check_stored_supports(model, kind, _recorded(table)) == 20
    buffer = model.replay_buffer
    n = buffer.pos
    done = buffer.dones[:n].astype(bool)
    terminal_supports = buffer.next_supports[:n][done]
    assert np.all(buffer.timeouts[:n][done] == (not terminate))
    if terminate:
        assert np.all(_empty(kind, terminal_supports))
        assert not np.any(_empty(kind, buffer.next_supports[:n][~done]))
    # The support of the observation after the reset is another one.
    after_reset = buffer.supports[1:n][done[: n - 1]]
    differs = terminal_supports[: len(after_reset)] != after_reset
    assert np.all(differs.reshape(len(after_reset), -1).any(axis=-1))
    # The observations encode their supports (random toy envs): a direct check of the terminal ones.
    terminal_observations = buffer.next_observations[:n][done]
    expected = to_agent_units(model.action_space, decode_supports(kind, terminal_observations))
    np.testing.assert_array_equal(terminal_supports, expected)
