"""
``predict`` with safe supports, for both kinds: the action lies in the support given (single observations and
batches, every layout of the keyword, deterministic or not, thousands of random supports), stays in the action space
without one, takes the only safe choice, refuses malformed, empty and other-kind supports with a clear error, and
drives the evaluation of a policy inside the supports.
"""

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_safeq import (
    ConstrainedBox,
    EmptySupportError,
    PredictWithoutSupportWarning,
    SafeSupportQ,
    acting_without_support,
)
from sb3_safeq.common.evaluation import evaluate_safe_policy
from tests.helpers import (
    ACTION_HIGH,
    ACTION_LOW,
    KINDS,
    PREDICT_KEYWORD,
    SMALL,
    SUPPORT_METHOD,
    TINY,
    assert_in_supports,
    env_boxes,
    kinds,
    predict_kwargs,
    random_env,
    random_supports,
    stored_polytope,
)

#: The action space of ``predict_env("polytope")``.
POLYTOPE_3D = ConstrainedBox(ACTION_LOW, ACTION_HIGH, dtype=np.float32, max_constraints=3)


def predict_env(kind: str, **kwargs: Any) -> gym.Env:
    """
    :return: RandomMaskEnv (5 actions), or RandomBoxEnv or RandomPolytopeEnv on the asymmetric 3-D action space of
        the helpers
    """
    if kind == "mask":
        return random_env("mask", **kwargs)
    return random_env(kind, action_low=tuple(ACTION_LOW), action_high=tuple(ACTION_HIGH), **kwargs)


_MODEL_CACHE: dict[str, SafeSupportQ] = {}


def predict_model(kind: str) -> SafeSupportQ:
    """
    An untrained model per kind, built once (predict does not change it). The Box tests set the actor's output
    biases they rely on.
    """
    if kind not in _MODEL_CACHE:
        _MODEL_CACHE[kind] = (
            SafeSupportQ("MlpPolicy", predict_env(kind), seed=1, **SMALL)
            if kind == "mask"
            else SafeSupportQ("MlpPolicy", predict_env(kind), seed=0, **TINY)
        )
    return _MODEL_CACHE[kind]


def _set_box_actor(mean_bias: Any, log_std_bias: float | None = None, kind: str = "box") -> SafeSupportQ:
    """:return: the Box (or polytope) model with its squashed mean (and its spread) pushed where the test needs it"""
    model = predict_model(kind)
    with th.no_grad():
        model.actor.mean.bias.copy_(th.as_tensor(mean_bias, dtype=th.float32))
        if log_std_bias is not None:
            model.actor.log_std.bias.fill_(log_std_bias)
    return model


def _masks(max_batch: int = 6) -> st.SearchStrategy[np.ndarray]:
    """:return: strategy for masks ``(batch, 5)`` with at least one safe action each"""

    def non_empty(masks: np.ndarray) -> np.ndarray:
        masks[:, 0] |= ~masks.any(axis=1)
        return masks

    return arrays(np.bool_, st.tuples(st.integers(1, max_batch), st.just(5))).map(non_empty)


@pytest.mark.parametrize(
    "kind",
    kinds(
        polytope="draws boxes and (low, high) layouts; polytope layouts and random polytopes: "
        "test_polytope_support.py::test_predict_is_inside_for_single_and_batched_observations and "
        "test_predicted_actions_lie_in_many_random_supports[polytope]"
    ),
)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), single=st.booleans(), deterministic=st.booleans())
def test_predicted_actions_lie_in_the_supports(
    kind: str, data: st.DataObject, single: bool, deterministic: bool
) -> None:
    supports = data.draw(_masks() if kind == "mask" else env_boxes(), label="supports")
    if kind == "mask":
        model = predict_model(kind)
        observations = np.random.default_rng(0).random((len(supports), 6)).astype(np.float32)
        layout = "array"
    else:
        # Push the squashed mean anywhere in the box, up to its very bounds.
        mean_bias = data.draw(arrays(np.float32, 3, elements=st.floats(-30.0, 30.0, width=32)), label="mean_bias")
        model = _set_box_actor(mean_bias, data.draw(st.floats(-5.0, 2.0), label="log_std_bias"))
        observations = np.random.default_rng(len(supports)).uniform(-1.0, 1.0, (len(supports), 7)).astype(np.float32)
        layout = data.draw(st.sampled_from(["tuple", "array", "pairs"]), label="layout")
    if single:  # one observation and one support: a mask (5,), or low and high of shape (3,)
        supports, observations = supports[:1], observations[0]
    if layout == "tuple":
        kwargs = predict_kwargs(kind, supports[0] if single else supports)
    elif layout == "array":
        kwargs = {"action_masks" if kind == "mask" else "safe_bounds": supports[0] if single else supports}
    else:  # one (low, high) pair per observation, as VecEnv.env_method("safe_action_bounds") returns them
        kwargs = {"safe_bounds": [(box[0], box[1]) for box in supports]}
        if len(supports) == 2:  # as a list, [low, high] would have the same shapes: refused as ambiguous
            with pytest.raises(ValueError, match=r"it could be \[low, high\] or one box per observation"):
                model.predict(observations, deterministic=deterministic, **kwargs)
            return
    actions, state = model.predict(observations, deterministic=deterministic, **kwargs)
    assert state is None
    action_shape = model.action_space.shape
    assert actions.shape == (action_shape if single else (len(supports), *action_shape))
    assert actions.dtype == model.action_space.dtype
    assert_in_supports(actions.reshape(len(supports), *action_shape), supports)
    if kind == "mask":  # the masked distribution itself has no mass outside the masks
        with th.no_grad():
            batch = observations.reshape(len(supports), 6)
            logits = model.policy.action_logits(th.as_tensor(batch), th.as_tensor(supports))
        probs = th.softmax(logits, dim=-1).numpy()
        assert np.all(probs[~supports] == 0.0)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_predicted_actions_lie_in_many_random_supports(kind: str) -> None:
    # The property above at scale: for boxes, thousands of random float32 boxes make sure that the rounding of every
    # unit conversion is met, with a saturated mean.
    # For polytopes, 300 (one linear program each for the Chebyshev centre) with a mean saturated at box corners that
    # the rows cut off.
    rng = np.random.default_rng(0)
    model = predict_model(kind) if kind == "mask" else _set_box_actor([30.0, -30.0, 30.0], kind=kind)
    supports = random_supports(kind, rng, 300 if kind == "polytope" else 5000, model.action_space)
    observations = rng.uniform(-1.0, 1.0, (len(supports), model.observation_space.shape[0])).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic, **predict_kwargs(kind, supports))
        assert_in_supports(actions, supports)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_without_supports_stays_in_the_action_space(kind: str) -> None:
    model = predict_model(kind) if kind == "mask" else _set_box_actor([30.0, -30.0, 30.0], kind=kind)
    space = model.action_space
    obs, _ = predict_env(kind).reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert np.asarray(action).shape == space.shape and state is None
    observations = np.random.default_rng(0).uniform(0.0, 1.0, (64, *obs.shape)).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic)
        assert actions.shape == (64, *space.shape) and actions.dtype == space.dtype
        assert all(space.contains(action) for action in actions)


def test_predict_without_bounds_takes_the_squashed_mean_of_the_action_space() -> None:
    model = _set_box_actor([30.0, -30.0, 30.0])
    observations = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic)
        assert actions.shape == (64, 3) and actions.dtype == np.float32
        assert np.all(actions >= ACTION_LOW) and np.all(actions <= ACTION_HIGH)
    deterministic_actions, _ = model.predict(observations, deterministic=True)
    np.testing.assert_allclose(deterministic_actions, np.broadcast_to([1.0, 0.0, -0.25], (64, 3)), atol=1e-5)


# A support leaving one choice on some axes, and that choice: the mask's third action; for the box, a narrow interval
# on the first axis and points on the others. The box's squashed mean over the whole action space is far from it:
# predict must still answer inside the box, in the environment's units (a box in [0, 5] stays there, not in [-1, 1]).
ONE_CHOICE: dict[str, tuple[Any, dict[str, Any], list[int], Any]] = {
    "mask": (np.array([0, 0, 1, 0, 0], dtype=bool), {"action_masks": np.array([0, 0, 1, 0, 0])}, [0], [2]),
    "box": (
        np.array([[0.75, 4.5, -0.3], [0.875, 4.5, -0.3]], dtype=np.float32),
        {
            "safe_bounds": (
                np.array([0.75, 4.5, -0.3], dtype=np.float32),
                np.array([0.875, 4.5, -0.3], dtype=np.float32),
            )
        },
        [1, 2],
        np.array([4.5, -0.3], dtype=np.float32),
    ),
    # Two opposite rows pin a_1 = 4.5, a third cuts the (a_0, a_2) face; the mean's corner is cut off.
    "polytope": (
        stored_polytope(POLYTOPE_3D, [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 1.0]], [4.5, -4.5, 0.5]),
        {"safe_constraints": ([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 1.0]], [4.5, -4.5, 0.5])},
        [1],
        np.array([4.5], dtype=np.float32),
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_predict_takes_the_only_safe_choice(kind: str) -> None:
    support, kwargs, forced_axes, forced_values = ONE_CHOICE[kind]
    model = predict_model(kind) if kind == "mask" else _set_box_actor(np.zeros(3), -5.0, kind=kind)
    observation, _ = predict_env(kind).reset(seed=0)
    if kind == "box":
        observation = np.zeros(7, dtype=np.float32)
    for deterministic in (True, False):
        action, _ = model.predict(observation, deterministic=deterministic, **kwargs)
        assert_in_supports(np.asarray(action)[None], support[None])
        np.testing.assert_array_equal(np.atleast_1d(action)[forced_axes], forced_values)


_BOX_LOW, _BOX_HIGH = ACTION_LOW.copy(), ACTION_HIGH.copy()
# (kind, observations, predict keywords, error, message)
BAD_SUPPORTS: dict[str, tuple[str, Any, dict[str, Any], type[Exception], str]] = {
    "mask-all-false": ("mask", None, {"action_masks": np.zeros(5, dtype=bool)}, EmptySupportError, "all-False"),
    "mask-wrong-size": (
        "mask",
        None,
        {"action_masks": np.ones(4, dtype=bool)},
        ValueError,
        r"action_masks has shape \(4,\), expected \(1, 5\)",
    ),
    "mask-safe-bounds": (
        "mask",
        None,
        {"safe_bounds": (np.zeros(1), np.ones(1))},
        ValueError,
        "safe_bounds does not apply to the action space Discrete",
    ),
    "box-outside-the-space": (
        "box",
        None,
        {"safe_bounds": (_BOX_LOW - 1.0, _BOX_HIGH)},
        ValueError,
        "outside the action space",
    ),
    "box-nan": ("box", None, {"safe_bounds": (np.array([np.nan, 0.0, -0.5]), _BOX_HIGH)}, ValueError, "NaN"),
    "box-empty": ("box", None, {"safe_bounds": (_BOX_HIGH, _BOX_LOW)}, EmptySupportError, "low > high"),
    "box-empty-in-a-batch": (
        "box",
        np.zeros((2, 7), np.float32),
        {"safe_bounds": (np.stack([_BOX_LOW, _BOX_HIGH]), np.stack([_BOX_HIGH, _BOX_LOW]))},
        EmptySupportError,
        "low > high",
    ),
    "box-one-box-for-a-batch": (
        "box",
        np.zeros((3, 7), np.float32),
        {"safe_bounds": (_BOX_LOW, _BOX_HIGH)},
        ValueError,
        r"safe_bounds holds parts of shapes \(3,\), \(3,\) for 3 observation",
    ),
    "box-action-masks": (
        "box",
        None,
        {"action_masks": np.ones(3, dtype=bool)},
        ValueError,
        "action_masks does not apply to the action space Box",
    ),
}


@pytest.mark.parametrize("name", list(BAD_SUPPORTS))
def test_predict_rejects_bad_supports(name: str) -> None:
    kind, observations, kwargs, error, match = BAD_SUPPORTS[name]
    if observations is None:  # one observation
        observations = predict_env(kind).reset(seed=0)[0] if kind == "mask" else np.zeros(7, dtype=np.float32)
    with pytest.raises(error, match=match):
        predict_model(kind).predict(observations, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_safe_policy_records_returns_and_costs(kind: str) -> None:
    # The random toy envs raise on any action outside the support: evaluation passes the supports to predict.
    model = predict_model(kind)
    result = evaluate_safe_policy(model, predict_env(kind, episode_length=5), n_eval_episodes=4)
    assert len(result.episode_returns) == 4 and result.episode_lengths == [5, 5, 5, 5]
    assert result.unsafe_visits == 0
    with pytest.raises(ValueError, match="n_eval_episodes"):
        evaluate_safe_policy(model, predict_env(kind), n_eval_episodes=0)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_without_the_support_warns_once_per_call_site(kind: str) -> None:
    # The head alone is not restricted to the safe set: say so at the call, unless the caller leaves it out on purpose.
    model = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **TINY)
    observation = model.observation_space.sample()
    with pytest.warns(
        PredictWithoutSupportWarning, match=rf"without {PREDICT_KEYWORD[kind]}: .* env\.{SUPPORT_METHOD[kind]}\(\)"
    ):
        model.predict(observation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with acting_without_support():
            model.predict(observation)
        supports = random_supports(kind, np.random.default_rng(0), 1, model.action_space)
        model.predict(observation[None], **predict_kwargs(kind, supports))  # with the support: no warning
