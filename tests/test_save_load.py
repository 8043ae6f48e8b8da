"""
Saving and loading, for both kinds of support: a loaded model (with or without an environment) has the same
networks, optimizer states, hyperparameters and behavior policy, predicts the same actions, takes its replay buffer
back with the supports, and goes on training; a behavior given by import path is rebuilt from the path.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_safeq import DiscreteBehaviorPolicy, SafeReplayBuffer, SafeSupportQ, UniformBoxBehavior
from sb3_safeq.safeq.box_policies import BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import SafeSupportQPolicy
from tests.helpers import SMALL, assert_in_supports, decode_supports, kinds, predict_kwargs, random_env

SMALL_WITHOUT_SAMPLES = {key: value for key, value in SMALL.items() if key != "n_behavior_samples"}

POLICY_BASES = {"mask": SafeSupportQPolicy, "box": BoxSafeSupportQPolicy, "polytope": BoxSafeSupportQPolicy}


def _prefer_last(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A stochastic behavior function (saved with the model) that prefers the highest safe action."""
    probs = masks.astype(float)
    probs[np.arange(len(masks)), [np.flatnonzero(m)[-1] for m in masks]] += 3.0
    return probs * masks


def _mask_probe() -> tuple[np.ndarray, np.ndarray]:
    """:return: 64 observations of RandomMaskEnv and random masks for them"""
    observations = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    masks = np.random.default_rng(1).random((64, 5)) < 0.5
    masks[:, 1] = True
    return observations, masks


def _polytope_probe() -> tuple[np.ndarray, np.ndarray]:
    """:return: observations of RandomPolytopeEnv and their polytopes (stored layout, environment units)"""
    env = random_env("polytope")
    observations = np.stack([env.reset(seed=seed)[0] for seed in range(16)])
    return observations, decode_supports("polytope", observations)


def _point_mass_probe() -> tuple[np.ndarray, np.ndarray]:
    """:return: point-mass observations far from and next to its walls, with their safe boxes"""
    env = gym.make("SafePointMass-v0").unwrapped
    observations, boxes = [], []
    for position in [(-1.2, 0.0), (-0.45, 0.1), (0.0, 0.0), (-0.5, 0.36), (1.4, 1.45), (-1.3, -1.49)]:
        observation, _ = env.reset(options={"position": position})
        observations.append(observation)
        boxes.append(np.stack(env.safe_action_bounds()))
    return np.stack(observations), np.stack(boxes)


# name: (kind, environment, constructor arguments that must come back, other arguments, steps before and after)
ROUND_TRIPS: dict[str, tuple[str, Callable[[], gym.Env], dict[str, Any], dict[str, Any], int, int]] = {
    "mask": (
        "mask",
        lambda: random_env("mask"),
        {"alpha": 0.3, "exploration": "mixture", "mixture_weight": 0.25},
        {"behavior": _prefer_last, **SMALL},
        200,
        100,
    ),
    **{
        f"box-{extraction}": (
            "box",
            lambda: gym.make("SafePointMass-v0"),
            {"extraction": extraction, "twin_min": False, "n_behavior_samples": 4},
            {"learning_starts": 100, "batch_size": 32, "policy_kwargs": {"net_arch": [32, 32]}},
            300,
            50,
        )
        for extraction in ("forward_kl", "reverse_kl")
    },
    "polytope-reverse_kl-induced": (
        "polytope",
        lambda: random_env("polytope"),
        {"extraction": "reverse_kl", "exploration": "induced", "share_target_draws": True, "n_behavior_samples": 4},
        SMALL_WITHOUT_SAMPLES,
        120,
        40,
    ),
}


def _behavior_scores(behavior: Any, reference: Any, observations: th.Tensor, supports: th.Tensor) -> th.Tensor:
    """:return: log-probabilities under ``behavior`` of every action (masks), or of draws of ``reference`` (boxes)"""
    if isinstance(behavior, DiscreteBehaviorPolicy):
        return behavior.log_probs(observations, supports)
    th.manual_seed(0)
    return behavior.log_prob(observations, supports, reference.sample(observations, supports, 8))


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_save_load_round_trip(tmp_path: Path, name: str) -> None:
    kind, make_env, restored, other, steps, more_steps = ROUND_TRIPS[name]
    model = SafeSupportQ("MlpPolicy", make_env(), seed=0, **restored, **other)
    model.learn(steps)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = SafeSupportQ.load(tmp_path / "model.zip", env=make_env())

    assert isinstance(loaded.policy, POLICY_BASES[kind]) and type(loaded.policy) is type(model.policy)
    assert {key: getattr(loaded, key) for key in restored} == restored
    assert type(loaded.behavior_policy) is type(model.behavior_policy)
    if kind == "box":
        assert isinstance(loaded.behavior_policy, UniformBoxBehavior)
    assert loaded.actor is loaded.policy.actor and loaded.critic is loaded.policy.critic
    assert loaded.critic_target is loaded.policy.critic_target
    for network in ("actor", "critic", "critic_target"):
        saved_parameters = getattr(model, network).parameters()
        for saved, restored_parameter in zip(saved_parameters, getattr(loaded, network).parameters(), strict=True):
            assert th.equal(saved, restored_parameter), network
    # One optimizer, one parameter group for both networks (the critic's first, then the extraction head's): both
    # have stepped and come back.
    saved_state, restored_state = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert [len(group["params"]) for group in saved_state["param_groups"]] == [
        len(list(model.critic.parameters())) + len(list(model.actor.parameters()))
    ]
    n_parameters = sum(len(group["params"]) for group in saved_state["param_groups"])
    assert saved_state["state"].keys() == restored_state["state"].keys() == set(range(n_parameters))
    for key, values in saved_state["state"].items():
        for field, value in values.items():
            assert th.equal(value, restored_state["state"][key][field]), (key, field)

    probes = {"mask": _mask_probe, "box": _point_mass_probe, "polytope": _polytope_probe}
    observations, supports = probes[kind]()
    observations_t, supports_t = th.as_tensor(observations), th.as_tensor(supports)
    assert th.equal(
        _behavior_scores(model.behavior_policy, model.behavior_policy, observations_t, supports_t),
        _behavior_scores(loaded.behavior_policy, model.behavior_policy, observations_t, supports_t),
    )
    # A model loaded without an environment predicts too (deployment).
    without_env = SafeSupportQ.load(tmp_path / "model.zip")
    for support_kwargs in ({}, predict_kwargs(kind, supports)):
        expected, _ = model.predict(observations, deterministic=True, **support_kwargs)
        np.testing.assert_array_equal(loaded.predict(observations, deterministic=True, **support_kwargs)[0], expected)
        np.testing.assert_array_equal(
            without_env.predict(observations, deterministic=True, **support_kwargs)[0], expected
        )
    assert_in_supports(expected, supports)
    th.manual_seed(3)
    expected, _ = model.predict(observations, **predict_kwargs(kind, supports))
    th.manual_seed(3)
    np.testing.assert_array_equal(loaded.predict(observations, **predict_kwargs(kind, supports))[0], expected)

    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert isinstance(loaded.replay_buffer, SafeReplayBuffer)
    np.testing.assert_array_equal(loaded.replay_buffer.supports, model.replay_buffer.supports)
    np.testing.assert_array_equal(loaded.replay_buffer.next_supports, model.replay_buffer.next_supports)
    before = [parameter.clone() for parameter in loaded.actor.parameters()]
    loaded.learn(more_steps, reset_num_timesteps=False)  # training goes on after loading
    assert loaded.num_timesteps == steps + more_steps
    assert any(not th.equal(a, b) for a, b in zip(before, loaded.actor.parameters(), strict=True))
    assert loaded.safety_counters.unsafe_visits == 0 and loaded.safety_counters.out_of_support_actions == 0


# The form a hyperparameter file can carry; a saved model keeps the string and rebuilds the behavior from it.
BEHAVIOR_PATHS = {"mask": "tests.helpers:highest_safe_action", "box": "tests.helpers:upper_corner"}


@pytest.mark.parametrize(
    "kind",
    kinds(
        polytope="behavior functions are refused for polytopes; a class path resolves in "
        "test_behaviors.py::test_behavior_import_paths[polytope]"
    ),
)
def test_behavior_given_by_import_path_survives_save_and_load(tmp_path: Path, kind: str) -> None:
    path = BEHAVIOR_PATHS[kind]
    model = SafeSupportQ("MlpPolicy", random_env(kind), behavior=path, **SMALL)
    model.learn(60)
    buffer = model.replay_buffer
    stored, supports = buffer.actions[: buffer.pos, 0], buffer.supports[: buffer.pos, 0]
    if kind == "mask":  # the highest safe action of each mask
        np.testing.assert_array_equal(stored[:, 0], [np.flatnonzero(mask)[-1] for mask in supports])
    else:  # the upper corner of each box (agent units, as the stored boxes)
        np.testing.assert_array_equal(stored, supports[:, 1])
    model.save(tmp_path / "model")
    loaded = SafeSupportQ.load(tmp_path / "model", env=random_env(kind))
    assert loaded.behavior == path
    # (pytest may import the helpers under another module name, so compare names, not objects)
    function = getattr(loaded.behavior_policy, "probability_fn" if kind == "mask" else "distribution_fn")
    assert function.__qualname__ == path.partition(":")[2]


@pytest.mark.parametrize("kind", ["mask", "box"])
def test_a_model_saved_with_one_optimizer_group_per_network_loads(tmp_path: Path, kind: str) -> None:
    # Models saved before the optimizer held both networks in one group stored two groups (critic, head): their
    # optimizer state comes back into the single group, parameter by parameter, and training goes on.
    model = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **SMALL)
    model.learn(80)
    n_critic = len(list(model.critic.parameters()))
    state = model.policy.optimizer.state_dict()
    (group,) = state["param_groups"]
    settings = {key: value for key, value in group.items() if key != "params"}
    two_groups = [
        {**settings, "params": group["params"][:n_critic]},
        {**settings, "params": group["params"][n_critic:]},
    ]
    params = model.get_parameters()
    params["policy.optimizer"] = {**state, "param_groups": two_groups}
    fresh = SafeSupportQ("MlpPolicy", random_env(kind), seed=1, **SMALL)
    fresh.set_parameters(params)
    restored = fresh.policy.optimizer.state_dict()
    assert len(restored["param_groups"]) == 1 and restored["state"].keys() == state["state"].keys()
    for index, values in state["state"].items():
        for field, value in values.items():
            assert th.equal(value, restored["state"][index][field]), (index, field)
    fresh.learn(20, reset_num_timesteps=False)

    different = [{**two_groups[0]}, {**two_groups[1], "lr": 1.0}]
    params["policy.optimizer"] = {**state, "param_groups": different}
    with pytest.raises(ValueError, match="different settings"):
        fresh.set_parameters(params)
    # The fix the error names: the networks alone, without the optimizer state, into a model that has neither.
    other = SafeSupportQ("MlpPolicy", random_env(kind), seed=2, **SMALL)
    other.set_parameters({"policy": params["policy"]}, exact_match=False)
    for saved, restored_parameter in zip(model.policy.parameters(), other.policy.parameters(), strict=True):
        assert th.equal(saved, restored_parameter)
