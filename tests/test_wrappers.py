"""
The safety wrapper, for both kinds of support: it carries the support of the returned observation in ``info`` (also
through a VecEnv's auto-reset), counts out-of-support actions, costs and empty supports, shields and stops in strict
mode, returns copies, reads the support from the environment or a function, refuses environments without one, and is
added by SafeSupportQ when missing.
"""

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import MissingSupportError, SafeSupportQ, SafetyLoggerCallback, SafetyWrapper, UnsafeVisitError
from tests.box_toy_envs import FixedBoxEnv, NoBoundsBoxEnv
from tests.helpers import (
    INFO_KEY,
    KINDS,
    SMALL,
    SUPPORT_METHOD,
    WRAPPER_ARGUMENT,
    as_support,
    decode_supports,
    fixed_env,
    no_support_env,
    random_env,
    safe_action,
)
from tests.polytope_toy_envs import FixedPolytopeEnv, NoConstraintsEnv
from tests.toy_envs import FixedMaskEnv, NoMaskEnv

#: An action inside the support of :func:`tests.helpers.fixed_env` (mask [T, F, T], box [-0.5, 0.5] x [0, 1]).
#: (polytope: a_0 + a_1 <= 0.5, -a_0 <= 0.5 in [-1, 1]^2.)
INSIDE = {"mask": 0, "box": np.zeros(2, dtype=np.float32), "polytope": np.zeros(2, dtype=np.float32)}


def _other(kind: str) -> str:
    return "box" if kind == "mask" else "mask"


def _empty(kind: str, support: np.ndarray) -> bool:
    """:return: whether a support has no safe action (written independently of the package)"""
    if kind == "polytope":  # the empty fixed polytope: a_0 <= -2 in [-1, 1]^2
        return bool(np.array_equal(support[0], [1.0, 0.0, -2.0]))
    return not support.any() if kind == "mask" else bool((support[0] > support[1]).any())


# ------------------------------------------------------------------------------- the support travels in info


def _safe_action(kind: str, support: np.ndarray, step: int) -> Any:
    """:return: the first safe action of a mask, or an action towards the point mass's goal clipped into the box"""
    if kind == "mask":
        return int(np.flatnonzero(support)[0])
    return np.clip(np.array([1.0, 0.1 * step % 1.0], dtype=np.float32), support[0], support[1])


@pytest.mark.parametrize("env_name", ["mask", "box", "box-point-mass"])
def test_reset_and_step_carry_the_support_of_the_returned_observation(env_name: str) -> None:
    kind = env_name.split("-")[0]
    env = SafetyWrapper(gym.make("SafePointMass-v0") if env_name == "box-point-mass" else random_env(kind))
    encodes = env_name != "box-point-mass"  # the random toy envs encode the support in the observation
    method = SUPPORT_METHOD[kind]
    obs, info = env.reset(seed=0)
    for step in range(40):
        support = info[INFO_KEY[kind]]
        assert support.dtype == (np.bool_ if kind == "mask" else np.float32)
        assert support.shape == ((5,) if kind == "mask" else (2, 2))
        result = getattr(env, method)()
        if kind == "box":
            low, high = result
            assert low.dtype == high.dtype == np.float32
        np.testing.assert_array_equal(support, as_support(kind, result))
        np.testing.assert_array_equal(support, as_support(kind, getattr(env.unwrapped, method)()))
        if encodes:
            np.testing.assert_array_equal(support, decode_supports(kind, obs))
        obs, _, terminated, truncated, info = env.step(_safe_action(kind, support, step))
        assert info["out_of_support"] is False and info["cost"] == 0.0 and info["empty_support"] is False
        if encodes:  # the support of the returned observation, terminal ones included
            np.testing.assert_array_equal(info[INFO_KEY[kind]], decode_supports(kind, obs))
        if terminated or truncated:
            obs, info = env.reset()
    assert env.counters.steps == 40 and env.counters.out_of_support_actions == 0


@pytest.mark.parametrize("kind", KINDS)
def test_terminal_supports_survive_the_vec_env_auto_reset(kind: str) -> None:
    # Truncation by TimeLimit and termination both: info must hold the terminal observation's support.
    for terminate, limit in ((True, 1000), (False, 7)):
        vec_env = DummyVecEnv([lambda t=terminate, n=limit: SafetyWrapper(TimeLimit(random_env(kind, terminate=t), n))])
        vec_env.seed(3)
        vec_env.reset()
        n_done = 0
        for _ in range(60):
            support = as_support(kind, vec_env.env_method(SUPPORT_METHOD[kind])[0])
            action = safe_action(kind, support)
            _, _, dones, infos = vec_env.step(np.array([action]))
            if dones[0]:
                n_done += 1
                terminal_obs = infos[0]["terminal_observation"]
                np.testing.assert_array_equal(infos[0][INFO_KEY[kind]], decode_supports(kind, terminal_obs))
                assert infos[0]["TimeLimit.truncated"] is (not terminate)
        assert n_done >= 2


# --------------------------------------------------------------------------------- counters, shield, strict

# Actions stepped in the fixed environments and whether each is outside the support.
OUT_OF_SUPPORT_ACTIONS: dict[str, list[tuple[Any, bool]]] = {
    "mask": [(1, True), (0, False), (2, False)],
    "box": [
        ([0.6, 0.5], True),
        ([0.0, -1e-3], True),
        ([np.nan, 0.5], True),
        ([0.5, 1.0], False),
        ([-0.5, 0.0], False),
        ([0.1, 0.2], False),
    ],
    "polytope": [
        ([0.5, 0.5], True),
        ([-0.6, 0.0], True),
        ([np.nan, 0.0], True),
        ([0.25, 0.25], False),  # on a facet
        ([-0.5, 1.0], False),  # a vertex
        ([0.25, 0.2500001], False),  # outside by 1e-7 (float32): within the kind's 1e-6 distance per row
        ([0.0, 0.0], False),
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_support_actions_are_counted_and_passed_through(kind: str) -> None:
    inner = fixed_env(kind)
    env = SafetyWrapper(inner)
    env.reset(seed=0)
    actions = [
        action if kind == "mask" else np.array(action, dtype=np.float32) for action, _ in OUT_OF_SUPPORT_ACTIONS[kind]
    ]
    flags = []
    for action in actions:
        _, _, _, _, info = env.step(action)
        flags.append(info["out_of_support"])
        assert info["shielded"] is False
    assert flags == [outside for _, outside in OUT_OF_SUPPORT_ACTIONS[kind]]
    assert env.counters.out_of_support_actions == sum(flags) and env.counters.shielded_actions == 0
    # Without the shield the environment gets every action as it came, NaN included.
    for sent, received in zip(actions, inner.actions, strict=True):
        np.testing.assert_array_equal(received, sent)


# Actions stepped with the shield on: (action, the actions the environment may receive instead, outside?). The mask's
# shield draws uniformly among the safe actions (both must occur); the box's clips, and sends NaN to the midpoint.
SHIELDED_ACTIONS: dict[str, list[tuple[Any, list[Any], bool]]] = {
    "mask": [(1, [0, 2], True)] * 50,
    "box": [
        ([0.6, 0.5], [[0.5, 0.5]], True),
        ([-3.0, 2.0], [[-0.5, 1.0]], True),
        ([np.nan, 0.5], [[0.0, 0.5]], True),
        ([0.25, 0.75], [[0.25, 0.75]], False),  # inside: untouched
    ],
    # The polytope's shield projects (Euclidean), and sends a NaN axis to the Chebyshev centre's.
    "polytope": [
        ([1.0, 1.0], [[0.25, 0.25]], True),
        ([-1.0, 0.0], [[-0.5, 0.0]], True),
        ([np.nan, 0.0], [[float(np.float32(0.08578644)), 0.0]], True),
        ([1.0, -1.0], [[1.0, -1.0]], False),  # inside: untouched
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_shield_replaces_out_of_support_actions(kind: str) -> None:
    inner = fixed_env(kind)
    env = SafetyWrapper(inner, shield=True)
    env.reset(seed=0)
    for action, admissible, outside in SHIELDED_ACTIONS[kind]:
        _, _, _, _, info = env.step(action if kind == "mask" else np.array(action, dtype=np.float32))
        executed = np.asarray(inner.actions[-1])
        assert any(np.array_equal(executed, np.asarray(option, dtype=executed.dtype)) for option in admissible)
        assert info["shielded"] is info["out_of_support"] is outside
    # Every admissible action occurs (the unsafe one never reached the environment).
    executed_set = {tuple(np.atleast_1d(action).tolist()) for action in inner.actions}
    admissible_set = {tuple(np.atleast_1d(o).tolist()) for _, options, _ in SHIELDED_ACTIONS[kind] for o in options}
    assert executed_set == admissible_set
    n_outside = sum(outside for _, _, outside in SHIELDED_ACTIONS[kind])
    assert env.counters.shielded_actions == n_outside == env.counters.out_of_support_actions


def test_shield_clips_float64_actions_just_outside_the_box() -> None:
    # A float64 action may lie outside the float32 box by less than float32 rounding: it is still outside the box,
    # and the environment (which computes in float64) must not receive it.
    inner = FixedBoxEnv([-0.5, 0.0], [0.5, 1.0])
    env = SafetyWrapper(inner, shield=True)
    env.reset()
    _, _, _, _, info = env.step(np.array([0.5 + 1e-9, 1.0 + 1e-10], dtype=np.float64))
    executed = np.asarray(inner.actions[-1], dtype=np.float64)
    assert np.all(executed <= [0.5, 1.0]), f"the environment got {executed.tolist()}, outside [0.5, 1.0]"
    assert info["out_of_support"] is True and info["shielded"] is True


# The cost of every step and the number of steps counted, per kind.
COSTS = {"mask": (2.5, 2), "box": (0.5, 3), "polytope": (1.5, 2)}


@pytest.mark.parametrize("kind", KINDS)
def test_costs_are_counted_and_strict_mode_stops(kind: str) -> None:
    cost, steps = COSTS[kind]
    counting = SafetyWrapper(fixed_env(kind, cost=cost))
    counting.reset()
    for _ in range(steps):
        counting.step(INSIDE[kind])  # a safe action can still have a cost: the support may be wrong
    assert counting.counters.unsafe_visits == steps and counting.counters.cumulative_cost == cost * steps
    strict = SafetyWrapper(fixed_env(kind, cost=cost), strict=True)
    strict.reset()
    with pytest.raises(UnsafeVisitError, match="strict mode"):
        strict.step(INSIDE[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_empty_support_states_are_counted(kind: str) -> None:
    env = SafetyWrapper(fixed_env(kind, empty=True))
    _, info = env.reset()
    assert info["empty_support"] is True and _empty(kind, info[INFO_KEY[kind]])
    _, _, _, _, info = env.step(INSIDE[kind])
    assert info["empty_support"] is True and info["out_of_support"] is True
    assert env.counters.empty_support_states == 2


@pytest.mark.parametrize("kind", KINDS)
def test_missing_cost_warns_once(kind: str) -> None:
    env = SafetyWrapper(fixed_env(kind, cost=None))
    env.reset()
    with pytest.warns(UserWarning, match="no info\\['cost'\\]"):
        env.step(INSIDE[kind])
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        env.step(INSIDE[kind])
    assert not [w for w in later if "info['cost']" in str(w.message)]  # warned once, not on every step
    assert env.counters.steps == 2


# ------------------------------------------------------------------------------------ where supports come from


def _overwrite(value: Any) -> None:
    """Scribble over a returned support in place (a mask, a box array, or a (low, high) pair)."""
    for array in value if isinstance(value, tuple) else (value,):
        array[...] = np.logical_not(array) if array.dtype == np.bool_ else 3.0


@pytest.mark.parametrize("kind", KINDS)
def test_returned_supports_are_copies(kind: str) -> None:
    env = SafetyWrapper(fixed_env(kind))
    _, info = env.reset()
    space = env.action_space
    expected = as_support(kind, getattr(env, SUPPORT_METHOD[kind])(), space)
    _overwrite(getattr(env, SUPPORT_METHOD[kind])())
    _overwrite(info[INFO_KEY[kind]])
    np.testing.assert_array_equal(as_support(kind, getattr(env, SUPPORT_METHOD[kind])(), space), expected)
    _, _, _, _, info = env.step(INSIDE[kind])
    assert info["out_of_support"] is False
    _overwrite(info[INFO_KEY[kind]])
    np.testing.assert_array_equal(as_support(kind, getattr(env, SUPPORT_METHOD[kind])(), space), expected)


# A support function per kind, for an environment without the method, and what it gives.
SUPPORT_FUNCTIONS = {
    "mask": (lambda env: np.array([False, True, True]), [False, True, True]),
    "box": (lambda env: ([0.0, -0.25], [0.0, 0.25]), [[0.0, -0.25], [0.0, 0.25]]),
    # Padded to max_constraints=2 with (0, 1), then the Chebyshev centre and radius of a_0 <= 0.5 in [-1, 1]^2.
    "polytope": (lambda env: ([[1.0, 0.0]], [0.5]), [[1.0, 0.0, 0.5], [0.0, 0.0, 1.0], [-0.25, -0.25, 0.75]]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_support_function_replaces_the_method_and_the_other_kind_does_not_apply(kind: str) -> None:
    function, expected = SUPPORT_FUNCTIONS[kind]
    custom = SafetyWrapper(no_support_env(kind), **{WRAPPER_ARGUMENT[kind]: function})
    _, info = custom.reset()
    np.testing.assert_array_equal(info[INFO_KEY[kind]], expected)
    other = _other(kind)
    with pytest.raises(AttributeError, match=SUPPORT_METHOD[kind]):
        getattr(custom, SUPPORT_METHOD[other])()
    with pytest.raises(ValueError, match=f"{WRAPPER_ARGUMENT[other]} does not apply"):
        SafetyWrapper(fixed_env(kind), **{WRAPPER_ARGUMENT[other]: SUPPORT_FUNCTIONS[other][0]})


@pytest.mark.parametrize(
    ("make_env", "match"),
    [
        (lambda: SafetyWrapper(NoMaskEnv(), action_mask_fn=lambda env: np.ones(4, dtype=bool)), "expected \\(3,\\)"),
        (lambda: SafetyWrapper(FixedBoxEnv([-2.0, 0.0], [0.5, 1.0])), "outside the action space"),
        (lambda: SafetyWrapper(FixedPolytopeEnv([[1.0, 0.0, 0.0]], [0.5])), "A has 3 columns"),
    ],
    ids=KINDS,
)
def test_malformed_supports_from_the_env_fail_clearly(make_env: Any, match: str) -> None:
    env = make_env()
    with pytest.raises(ValueError, match=match):
        env.reset()


@pytest.mark.parametrize(
    ("make_env", "error", "match"),
    [
        (NoMaskEnv, MissingSupportError, "action_masks"),
        (NoBoundsBoxEnv, MissingSupportError, "safe_action_bounds"),
        (NoConstraintsEnv, MissingSupportError, "safe_action_constraints"),
        (lambda: gym.make("Pendulum-v1"), MissingSupportError, "safe_action_bounds"),
        (lambda: FixedMaskEnv(np.ones(4, bool), spaces.MultiDiscrete([2, 2])), ValueError, "MultiDiscrete"),
    ],
    ids=["mask", "box", "polytope", "pendulum", "multi-discrete"],
)
def test_environments_without_a_support_are_refused(make_env: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SafetyWrapper(make_env())


def test_action_masker_is_found_through_gymnasium_wrappers() -> None:
    # sb3-contrib's ActionMasker (Discrete actions only) is found through further gymnasium wrappers.
    wrapped = SafetyWrapper(TimeLimit(ActionMasker(NoMaskEnv(), lambda env: np.array([1, 0, 1])), 10))
    _, info = wrapped.reset()
    np.testing.assert_array_equal(info["action_mask"], [True, False, True])


# ------------------------------------------------------------------------------- the wrapper in SafeSupportQ


def _single_safe_action_env(kind: str) -> tuple[gym.Env, Any]:
    """:return: an environment (without the wrapper) where one action is safe, and that action in agent units"""
    if kind == "mask":
        return ActionMasker(NoMaskEnv(), lambda env: np.array([False, True, False])), 1
    if kind == "polytope":  # rows that only touch the corner (-1, -1) of the action box [-1, 1]^2
        return FixedPolytopeEnv([[1.0, 0.0], [0.0, 1.0]], [-1.0, -1.0]), [-1.0, -1.0]
    return FixedBoxEnv([0.25, -0.5], [0.25, -0.5]), [0.25, -0.5]  # action space [-1, 1]^2: agent units too


@pytest.mark.parametrize("kind", KINDS)
def test_plain_env_gets_the_safety_wrapper_automatically(kind: str) -> None:
    env, only_safe_action = _single_safe_action_env(kind)
    model = SafeSupportQ("MlpPolicy", env, seed=0, **SMALL)
    assert model.get_env().env_is_wrapped(SafetyWrapper)[0]
    model.learn(100)
    actions = model.replay_buffer.actions[:100, 0]
    assert (actions == np.asarray(only_safe_action, dtype=np.float32)).all()


def test_safety_logger_callback_counts_for_any_algorithm() -> None:
    from stable_baselines3 import DQN

    env = SafetyWrapper(FixedMaskEnv(np.array([True, False, False])))
    callback = SafetyLoggerCallback()
    DQN("MlpPolicy", env, learning_starts=10, seed=0).learn(200, callback=callback)
    # Unmasked DQN picks unsafe actions often; every step is seen by the callback.
    assert callback.counters.steps == 200
    assert callback.counters.out_of_support_actions == env.counters.out_of_support_actions > 50
