"""
Behavior policies of both kinds: their samples lie in the support, they are built from names, functions and import
paths (``make_support_kind(space).make_behavior``), a user's behavior is what collects the data, and behaviors that
leave the support, do not fit the action space or get an empty support fail clearly.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safeq import (
    CallableBoxBehavior,
    CallableDiscreteBehavior,
    ConstrainedBox,
    EmptySupportError,
    MaskedUniformBehavior,
    SafeReplayBuffer,
    SafeSupportQ,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
    UniformPolytopeBehavior,
    make_support_kind,
)
from sb3_safeq.common.behaviors.base import BehaviorPolicy
from tests.helpers import (
    ACTION_SPACE,
    KINDS,
    SMALL,
    TINY,
    assert_in_supports,
    beta_in_box,
    env_boxes,
    highest_safe_action,
    kinds,
    random_env,
    random_supports,
    upper_corner,
)

POINT_MASS_KWARGS = {"learning_starts": 100, "batch_size": 32, "n_behavior_samples": 4}

# ------------------------------------------------------------------------------ samples lie in the support


def _mask_uniform(data: st.DataObject) -> tuple[BehaviorPolicy, np.ndarray]:
    masks = data.draw(arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 6))), label="masks")
    masks[:, 0] |= ~masks.any(axis=1)  # at least one safe action per state
    return MaskedUniformBehavior(), masks


def _mask_callable(data: st.DataObject) -> tuple[BehaviorPolicy, np.ndarray]:
    _, masks = _mask_uniform(data)
    weights = data.draw(arrays(np.float64, masks.shape, elements=st.floats(0.0, 10.0)), label="weights")
    weights[np.arange(len(masks)), masks.argmax(axis=1)] += 1.0  # positive mass on some safe action
    return CallableDiscreteBehavior(lambda observations, m: weights * m), masks


def _box_uniform(data: st.DataObject) -> tuple[BehaviorPolicy, np.ndarray]:
    return UniformBoxBehavior(), data.draw(env_boxes(), label="boxes")


def _box_truncated_gaussian(data: st.DataObject) -> tuple[BehaviorPolicy, np.ndarray]:
    boxes = data.draw(env_boxes(), label="boxes")
    batch, _, dim = boxes.shape
    # The controller's action may lie far outside the box (and outside the action space).
    mean_values = st.one_of(st.floats(-3.0, 6.0), st.floats(-100.0, 100.0))
    means = data.draw(arrays(np.float64, (batch, dim), elements=mean_values), label="means")
    noise = data.draw(st.one_of(st.floats(1e-3, 10.0), arrays(np.float64, dim, elements=st.floats(1e-3, 10.0))))
    return TruncatedGaussianBehavior(lambda observations: means, noise_std=noise), boxes


def _box_callable(data: st.DataObject) -> tuple[BehaviorPolicy, np.ndarray]:
    return CallableBoxBehavior(beta_in_box), data.draw(env_boxes(), label="boxes")


BEHAVIORS: dict[str, Callable[[st.DataObject], tuple[BehaviorPolicy, np.ndarray]]] = {
    "mask-uniform": _mask_uniform,
    "mask-callable": _mask_callable,
    "box-uniform": _box_uniform,
    "box-truncated_gaussian": _box_truncated_gaussian,
    "box-callable": _box_callable,
}


@pytest.mark.parametrize("name", list(BEHAVIORS))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_behavior_samples_lie_in_the_support(name: str, data: st.DataObject) -> None:
    behavior, supports = BEHAVIORS[name](data)
    batch, action_shape = len(supports), supports.shape[2:]  # masks (batch, n), boxes (batch, 2, action_dim)
    th.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    observations = th.zeros(batch, 7)
    support = th.as_tensor(supports)

    samples = behavior.sample(observations, support, 16)
    assert samples.shape == (batch, 16, *action_shape)
    assert samples.dtype == (th.int64 if name.startswith("mask") else th.float32)
    assert_in_supports(samples, supports)
    actions = behavior.act(observations, supports)
    assert actions.shape == (batch, *action_shape)
    assert_in_supports(actions, supports)
    if name != "box-callable":  # the behavior's density is positive wherever it samples (the Beta's is infinite)
        assert th.isfinite(behavior.log_prob(observations, support, samples)).all()


def test_box_behavior_samples_lie_in_many_random_boxes() -> None:
    # The property above at scale: thousands of random float32 boxes make sure that the rounding of every
    # "low + width * fraction" is met.
    rng = np.random.default_rng(0)
    th.manual_seed(0)
    boxes = random_supports("box", rng, 5000, ACTION_SPACE)
    support = th.as_tensor(boxes)
    observations = th.zeros(len(boxes), 7)
    means = rng.uniform(-40.0, 40.0, (len(boxes), 3))
    behaviors = [
        UniformBoxBehavior(),
        TruncatedGaussianBehavior(lambda obs: means, noise_std=[0.01, 1.0, 30.0]),
        CallableBoxBehavior(beta_in_box),
    ]
    for behavior in behaviors:
        assert_in_supports(behavior.sample(observations, support, 4), boxes)
        assert_in_supports(behavior.act(observations, boxes), boxes)


# ------------------------------------------------------------------------------------- building a behavior

# A space of each kind, the kind's uniform behavior's import path and the other kind's.
_SPACES = {
    "mask": spaces.Discrete(4),
    "box": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    "polytope": ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=2),
}
_UNIFORM_PATHS = {
    "mask": "sb3_safeq:MaskedUniformBehavior",
    "box": "sb3_safeq:UniformBoxBehavior",
    "polytope": "sb3_safeq:UniformPolytopeBehavior",
}
_UNIFORM_CLASSES = {"mask": MaskedUniformBehavior, "box": UniformBoxBehavior, "polytope": UniformPolytopeBehavior}
#: Why a concern about behavior functions does not apply to polytopes.
_NO_FUNCTIONS = (
    "behavior functions are refused for polytopes "
    "(test_polytope_support.py::test_behavior_functions_are_refused_with_the_alternative)"
)


@pytest.mark.parametrize("kind", KINDS)
def test_behavior_import_paths(kind: str) -> None:
    support_kind = make_support_kind(_SPACES[kind])
    assert isinstance(support_kind.make_behavior(_UNIFORM_PATHS[kind]), _UNIFORM_CLASSES[kind])
    with pytest.raises(ValueError, match="Cannot import the behavior policy 'no_such_module:x'"):
        support_kind.make_behavior("no_such_module:x")
    with pytest.raises(ValueError, match="Cannot import"):
        support_kind.make_behavior(f"sb3_safeq.common.behaviors.{kind}:nope")
    with pytest.raises(TypeError, match="not a BehaviorPolicy subclass"):
        support_kind.make_behavior("collections:OrderedDict")
    other = "box" if kind == "mask" else "mask"
    with pytest.raises(TypeError, match="does not fit the action space"):
        support_kind.make_behavior(_UNIFORM_PATHS[other])


@pytest.mark.parametrize("kind", KINDS)
def test_behavior_of_the_other_kind_is_refused(kind: str) -> None:
    other = UniformBoxBehavior() if kind == "mask" else MaskedUniformBehavior()
    with pytest.raises(TypeError, match="does not fit the action space"):
        SafeSupportQ("MlpPolicy", random_env(kind), behavior=other, **TINY)


# ------------------------------------------------------------------------------ a user's behavior collects


@pytest.mark.parametrize("kind", kinds(polytope=_NO_FUNCTIONS))
def test_behavior_function_is_used_for_collection(kind: str) -> None:
    # Deterministic behaviors: the highest safe action of each mask, the upper corner of each box.
    calls = []
    function = highest_safe_action if kind == "mask" else upper_corner

    def recording(observations: Any, *support: Any) -> Any:
        calls.append(tuple(observations.shape))
        return function(observations, *support)

    model = SafeSupportQ("MlpPolicy", random_env(kind), behavior=recording, seed=0, **SMALL)
    model.learn(120)
    obs_dim = model.observation_space.shape[0]
    assert calls and calls[0] == (1, obs_dim)  # batched observations, as in the replay buffer
    assert (SMALL["batch_size"], obs_dim) in calls  # and batches of them for the soft target
    buffer = model.replay_buffer
    assert isinstance(buffer, SafeReplayBuffer)
    stored, supports = buffer.actions[: buffer.pos, 0], buffer.supports[: buffer.pos, 0]
    if kind == "mask":
        np.testing.assert_array_equal(stored[:, 0], [np.flatnonzero(mask)[-1] for mask in supports])
        # Each step of RandomMaskEnv pays 1 for the highest safe action, so this behavior earns every step.
        assert buffer.rewards[: buffer.pos].min() == 1.0
    else:
        np.testing.assert_array_equal(stored, supports[:, 1])  # agent units, as the stored boxes


def _towards_goal(observations: np.ndarray) -> np.ndarray:
    return np.clip(5.0 * observations[:, 2:4], -1.0, 1.0)  # goal minus position, scaled and clipped


@pytest.mark.parametrize("extraction", ["forward_kl", "reverse_kl"])
def test_truncated_gaussian_behavior_around_a_controller_trains(extraction: str) -> None:
    import gymnasium as gym

    shapes = []

    def controller(observations: np.ndarray) -> np.ndarray:
        shapes.append(observations.shape)
        return _towards_goal(observations)

    behavior = TruncatedGaussianBehavior(controller, noise_std=0.3)
    kwargs = {**POINT_MASS_KWARGS, "policy_kwargs": {"net_arch": [16]}}
    env = gym.make("SafePointMass-v0")
    model = SafeSupportQ("MlpPolicy", env, behavior=behavior, extraction=extraction, seed=0, **kwargs)
    model.learn(200)
    assert model.behavior_policy is behavior
    counters = model.safety_counters
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0
    assert (1, 16) in shapes and (32, 16) in shapes  # acting, and sampling for the target on batches
    buffer = model.replay_buffer
    actions, supports = buffer.actions[: buffer.pos, 0], buffer.supports[: buffer.pos, 0]
    assert np.all((actions >= supports[:, 0]) & (actions <= supports[:, 1]))
    # The behavior follows the controller (the goal is to the right): uniform actions would average about 0.
    assert actions[:, 0].mean() > 0.3
    assert all(th.isfinite(parameter).all() for parameter in model.policy.parameters())


# --------------------------------------------------------------------------------------- malformed behaviors


def _unsafe_mask_behavior(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return np.ones(masks.shape) / masks.shape[1]


def _too_wide_box_behavior(obs: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.distributions.Distribution:
    return th.distributions.Independent(th.distributions.Normal(th.zeros_like(low), 5.0), 1)


@pytest.mark.parametrize("kind", kinds(polytope=_NO_FUNCTIONS))
def test_behavior_with_mass_outside_the_support_is_rejected(kind: str) -> None:
    if kind == "mask":
        behavior, match = _unsafe_mask_behavior, "outside the safe mask"
    else:
        behavior, match = _too_wide_box_behavior, "outside the safe box"
        support = th.tensor([[[-0.5, 0.0], [0.5, 1.0]]])
        with pytest.raises(ValueError, match=match):
            CallableBoxBehavior(behavior).sample(th.zeros(1, 2), support, 64)
    model = SafeSupportQ("MlpPolicy", random_env(kind), behavior=behavior, seed=0, **SMALL)
    with pytest.raises(ValueError, match=match):
        model.learn(100)


@pytest.mark.parametrize("kind", KINDS)
def test_behaviors_refuse_empty_supports(kind: str) -> None:
    observations = th.zeros(1, 2)
    if kind == "mask":
        empty = th.tensor([[False, False, False]])
        behaviors: list[BehaviorPolicy] = [MaskedUniformBehavior()]
    else:
        empty = th.tensor([[[0.5, 0.0], [-0.5, 1.0]]])
        behaviors = [UniformBoxBehavior(), TruncatedGaussianBehavior(lambda obs: obs, 0.1)]
    for behavior in behaviors:
        with pytest.raises(EmptySupportError):
            behavior.sample(observations, empty)
        with pytest.raises(EmptySupportError):
            behavior.act(observations, empty.numpy())


def test_malformed_box_behaviors_fail_clearly() -> None:
    support = th.tensor([[[-0.5, 0.0], [0.5, 1.0]]])
    observations = th.zeros(1, 2)
    with pytest.raises(TypeError, match="Distribution"):
        CallableBoxBehavior(lambda obs, low, high: low).sample(observations, support, 1)
    for noise_std in (0.0, -1.0, np.nan, np.inf, [0.3, 0.0], [[0.1]]):
        with pytest.raises(ValueError, match="noise_std"):
            TruncatedGaussianBehavior(lambda obs: obs, noise_std=noise_std)
    with pytest.raises(TypeError, match="controller"):
        TruncatedGaussianBehavior("not a function", noise_std=0.1)  # type: ignore[arg-type]
    wrong_shape = TruncatedGaussianBehavior(lambda obs: np.zeros((1, 3)), noise_std=0.1)
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        wrong_shape.sample(observations, support, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        TruncatedGaussianBehavior(lambda obs: np.full((1, 2), np.nan), noise_std=0.1).sample(observations, support)
    controller_model = SafeSupportQ(
        "MlpPolicy", random_env("box"), behavior=TruncatedGaussianBehavior(lambda obs: np.zeros(5), 0.1), **TINY
    )
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        controller_model.learn(5)
