"""
SafeSupportQ's constructor arguments, for both kinds: bad hyperparameters and policy classes of the other kind fail
with a message naming the problem; environments without a support, unsupported action spaces and VecEnvs without the
safety wrapper are refused clearly; registered environment ids are accepted.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import MissingSupportError, SafeSupportQ, SafetyWrapper
from sb3_safeq.safeq.box_policies import BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import SafeSupportQPolicy
from tests.box_toy_envs import FixedBoxEnv, RandomBoxEnv
from tests.helpers import KINDS, SUPPORT_METHOD, TINY, no_support_env, random_env
from tests.toy_envs import FixedMaskEnv, NoMaskEnv, RandomMaskEnv


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha=0.0 is invalid"),
        ({"alpha": -1.0}, "alpha=-1.0 is invalid"),
        ({"alpha": float("nan")}, "alpha=nan is invalid"),
        ({"exploration": "greedy"}, "exploration='greedy' is invalid"),
        ({"mixture_weight": 1.5}, "mixture_weight"),
        ({"loss": "l1"}, "loss='l1' is invalid"),
        ({"tau": -0.1}, r"tau=-0.1 must be in \[0, 1\]"),  # 0 is accepted: a frozen target network
        ({"tau": 1.5}, r"tau=1.5 must be in \[0, 1\]"),
        ({"target_update_interval": 0}, "target_update_interval"),
        ({"actor_update_interval": 0}, "actor_update_interval=0"),
        ({"behavior": "greedy"}, "Unknown behavior policy 'greedy'"),
        ({"replay_buffer_class": ReplayBuffer}, "does not store"),
        ({"policy_kwargs": {"net_arch": {"qf": [8]}}}, "net_arch as a dict"),
        ({"n_behavior_samples": 0}, "n_behavior_samples"),
        ({"n_behavior_samples": -3}, "n_behavior_samples"),
        ({"n_behavior_samples": 2.5}, "n_behavior_samples"),
        ({"extraction": "foo"}, "extraction='foo'"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_hyperparameters_fail_clearly(kind: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SafeSupportQ("MlpPolicy", random_env(kind), **{**TINY, **kwargs})


class _DiscreteOnlyPolicy(SafeSupportQPolicy):
    """A user's policy class for Discrete actions (the policy names' classes are swapped for their Box twins)."""


class _BoxOnlyPolicy(BoxSafeSupportQPolicy):
    """A user's policy class for Box actions."""


@pytest.mark.parametrize("kind", KINDS)
def test_policy_class_of_the_other_kind_fails_clearly(kind: str) -> None:
    # SafeSupportQPolicy is also what "MlpPolicy" names, which each kind resolves to its own class; a Box policy class
    # on Discrete actions, or a user's subclass of either kind's class on the other kind, does not fit.
    other_kind = [BoxSafeSupportQPolicy, _BoxOnlyPolicy] if kind == "mask" else [_DiscreteOnlyPolicy]
    for policy in other_kind:
        with pytest.raises(ValueError, match="does not fit the action space"):
            SafeSupportQ(policy, random_env(kind), **TINY)


@pytest.mark.parametrize(
    ("env", "error", "match"),
    [
        (lambda: gym.make("Pendulum-v1"), MissingSupportError, "has no `safe_action_bounds\\(\\)` method"),
        (lambda: FixedMaskEnv(np.ones(4, bool), spaces.MultiDiscrete([2, 2])), ValueError, "MultiDiscrete"),
        (NoMaskEnv, MissingSupportError, "has no `action_masks\\(\\)` method"),
        (
            lambda: FixedBoxEnv(np.zeros(2), np.zeros(2), action_space=spaces.Box(-np.inf, np.inf, (2,), np.float32)),
            ValueError,
            "infinite bounds",
        ),
        (
            lambda: FixedBoxEnv(np.zeros(2), np.zeros(2), action_space=spaces.Box(-1.0, 1.0, (2, 2), np.float32)),
            ValueError,
            "flat Box",
        ),
    ],
    ids=["pendulum", "multi-discrete", "no-action-masks", "infinite-box", "non-flat-box"],
)
def test_unsupported_environments_fail_clearly(env: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SafeSupportQ("MlpPolicy", env())


@pytest.mark.parametrize("kind", KINDS)
def test_environments_without_a_support_fail_clearly(kind: str) -> None:
    method = SUPPORT_METHOD[kind]
    env_class = RandomMaskEnv if kind == "mask" else RandomBoxEnv
    with pytest.raises(MissingSupportError, match=f"no `{method}\\(\\)` method"):
        SafeSupportQ("MlpPolicy", no_support_env(kind))
    # A VecEnv must carry the wrapper in every sub-environment (it holds the terminal observations' supports).
    for vec_env in (make_vec_env(env_class, n_envs=2), DummyVecEnv([env_class])):
        with pytest.raises(MissingSupportError, match="wrapper_class=SafetyWrapper"):
            SafeSupportQ("MlpPolicy", vec_env)
    with pytest.raises(MissingSupportError, match=f"lack a `{method}\\(\\)`"):
        SafeSupportQ("MlpPolicy", DummyVecEnv([lambda: no_support_env(kind)]))
    # A VecEnv whose sub-environments carry the wrapper is accepted.
    SafeSupportQ("MlpPolicy", DummyVecEnv([lambda: SafetyWrapper(env_class())]), **TINY)


@pytest.mark.parametrize("env_id", ["SafeCliffWalking-v0", "SafePointMass-v0", "SafeDoubleIntegrator-v0"])
def test_model_accepts_the_registered_env_ids(env_id: str) -> None:
    # SB3 documents `Algorithm(policy, "EnvId-v0")`; it builds the env with gym.make(env_id, render_mode="rgb_array").
    model = SafeSupportQ("MlpPolicy", env_id, learning_starts=10, seed=0, **TINY)
    model.learn(20)
    assert model.safety_counters.steps == 20 and model.safety_counters.unsafe_visits == 0


@pytest.mark.parametrize(("kind", "default"), [("mask", 4), ("box", 1)])
def test_actor_update_interval_defaults_to_the_support_kind_s(kind: str, default: int, tmp_path: Any) -> None:
    # Discrete heads regress onto the exact pi_Q (every fourth step suffices); Box heads need every update.
    model = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **TINY)
    assert model.actor_update_interval == default
    assert SafeSupportQ("MlpPolicy", random_env(kind), actor_update_interval=3, **TINY).actor_update_interval == 3
    model.save(tmp_path / "model.zip")
    assert SafeSupportQ.load(tmp_path / "model.zip").actor_update_interval == default
