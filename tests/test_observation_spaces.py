"""
Observation spaces beyond flat vectors, for both kinds: Dict observations train with the kind's MultiInputPolicy and
a SafeDictReplayBuffer whose supports stay aligned with the observations; image observations train with the kind's
CnnPolicy; Discrete, MultiDiscrete and MultiBinary observations train with the MlpPolicy (SB3's one-hot
preprocessing); the policy names resolve to each kind's classes.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_safeq import SafeDictReplayBuffer, SafeSupportQ
from sb3_safeq.safeq.box_policies import BoxCnnPolicy, BoxMultiInputPolicy
from sb3_safeq.safeq.policies import CnnPolicy, MultiInputPolicy
from tests.box_toy_envs import FixedBoxEnv
from tests.helpers import KINDS, SMALL, decode_supports, random_env, to_agent_units
from tests.polytope_toy_envs import FixedPolytopeEnv
from tests.toy_envs import FixedMaskEnv

MULTI_INPUT_POLICIES = {"mask": MultiInputPolicy, "box": BoxMultiInputPolicy, "polytope": BoxMultiInputPolicy}
CNN_POLICIES = {"mask": CnnPolicy, "box": BoxCnnPolicy, "polytope": BoxCnnPolicy}
# A support with a single safe choice for predict, and that choice: the fourth action; a point box.
ONE_CHOICE: dict[str, tuple[dict[str, Any], Any]] = {
    "mask": ({"action_masks": np.array([0, 0, 0, 1, 0])}, 3),
    "box": ({"safe_bounds": ([0.5, 1.0], [0.5, 1.0])}, [0.5, 1.0]),
    # a_0 >= 0.5, a_1 >= 1, a_0 + a_1 <= 1.5: the single point (0.5, 1).
    "polytope": ({"safe_constraints": ([[-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]], [-0.5, -1.0, 1.5])}, [0.5, 1.0]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_dict_observations_train_with_a_safe_dict_buffer(kind: str) -> None:
    model = SafeSupportQ("MultiInputPolicy", random_env(kind, dict_obs=True), exploration="induced", seed=0, **SMALL)
    model.learn(200)
    assert isinstance(model.policy, MULTI_INPUT_POLICIES[kind])
    buffer = model.replay_buffer
    assert isinstance(buffer, SafeDictReplayBuffer)
    # The flat entry (named after the kind) encodes the support: the stored supports stay aligned with it.
    n = buffer.pos
    expected = to_agent_units(model.action_space, decode_supports(kind, buffer.observations[kind][:n]))
    expected_next = to_agent_units(model.action_space, decode_supports(kind, buffer.next_observations[kind][:n]))
    np.testing.assert_array_equal(buffer.supports[:n], expected)
    np.testing.assert_array_equal(buffer.next_supports[:n], expected_next)
    obs, _ = random_env(kind, dict_obs=True).reset(seed=0)
    support_kwargs, only_action = ONE_CHOICE[kind]
    action, _ = model.predict(obs, deterministic=True, **support_kwargs)
    # A polytope's single point is met within the kind's contract, 1e-6 (here a float32 rounding, 6e-8, off 1.0).
    atol = 1e-6 if kind == "polytope" else 0.0
    np.testing.assert_allclose(action, np.asarray(only_action, dtype=model.action_space.dtype), rtol=0, atol=atol)


class ImageMaskEnv(FixedMaskEnv):
    """Image observations, a fixed mask."""

    observation_space = spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}


class ImageBoxEnv(FixedBoxEnv):
    """Image observations, a fixed box."""

    observation_space = spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}


class ImagePolytopeEnv(FixedPolytopeEnv):
    """Image observations, a fixed polytope."""

    observation_space = spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.actions.append(action)
        return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}


@pytest.mark.parametrize("kind", KINDS)
def test_cnn_policy_on_image_observations(kind: str) -> None:
    if kind == "polytope":  # a_0 + a_1 <= 0.5, -a_0 <= 0.5 in [-1, 1]^2
        env: gym.Env = ImagePolytopeEnv([[1.0, 1.0], [-1.0, 0.0]], [0.5, 0.5])
    else:
        env = ImageMaskEnv(np.array([True, False, True])) if kind == "mask" else ImageBoxEnv([-0.5, 0.0], [0.5, 1.0])
    model = SafeSupportQ("CnnPolicy", env, seed=0, learning_starts=20, batch_size=8, buffer_size=200)
    model.learn(60)
    assert isinstance(model.policy, CNN_POLICIES[kind])
    assert model.safety_counters.out_of_support_actions == 0
    assert SafeSupportQ.policy_aliases["CnnPolicy"] is CnnPolicy


class SampledMaskEnv(FixedMaskEnv):
    """Observations drawn from any observation space, a fixed mask."""

    def __init__(self, mask: np.ndarray, observation_space: spaces.Space) -> None:
        super().__init__(mask)
        self.observation_space = observation_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        super().step(action)
        return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}


class SampledBoxEnv(FixedBoxEnv):
    """Observations drawn from any observation space, a fixed box."""

    def __init__(self, low: Any, high: Any, observation_space: spaces.Space) -> None:
        super().__init__(low, high)
        self.observation_space = observation_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        super().step(action)
        return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "observation_space",
    [spaces.Discrete(7), spaces.MultiDiscrete([3, 4]), spaces.MultiBinary(5)],
    ids=["discrete", "multi_discrete", "multi_binary"],
)
def test_discrete_observation_spaces_train_with_the_mlp_policy(kind: str, observation_space: spaces.Space) -> None:
    low, high = np.array([-0.5, 0.0]), np.array([0.5, 1.0])
    mask = np.array([True, False, True])
    env = SampledMaskEnv(mask, observation_space) if kind == "mask" else SampledBoxEnv(low, high, observation_space)
    model = SafeSupportQ("MlpPolicy", env, seed=0, **SMALL)
    model.learn(120)
    assert model._n_updates > 0
    assert model.safety_counters.out_of_support_actions == 0
    executed = np.array(env.actions)
    assert len(executed) == 120
    if kind == "mask":
        assert set(executed.ravel().tolist()) <= {0, 2}
    else:
        assert ((executed >= low - 1e-6) & (executed <= high + 1e-6)).all()
    observation = observation_space.sample()
    support_kwargs = {"action_masks": mask} if kind == "mask" else {"safe_bounds": (low, high)}
    action, _ = model.predict(observation, deterministic=True, **support_kwargs)
    if kind == "mask":
        assert int(action) in (0, 2)
    else:
        assert ((action >= low - 1e-6) & (action <= high + 1e-6)).all()
