"""
Data collection inside the safe support, for both kinds: behavior, induced and mixture exploration never take an
action outside the support (the random toy envs raise on one), the induced policy ``pi_Q ∝ beta * exp(Q / alpha)``
follows its temperature and answers through the public ``induced_policy`` API, and an empty support met while
collecting fails clearly unless the episode ends there.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.wrappers import TimeLimit

from sb3_safeq import EmptySupportError, SafeSupportQ
from sb3_safeq.common.supports.box_utils import BoxScaler
from tests.helpers import (
    EMPTY_SUPPORT_MESSAGE,
    KINDS,
    PREDICT_KEYWORD,
    SMALL,
    TINY,
    IndexQ,
    LinearQ,
    assert_in_supports,
    fixed_env,
    predict_kwargs,
    random_env,
    random_supports,
    stored_polytope,
)

# name: (kind, environment, steps). The random toy envs raise on any action outside their support (degenerate box
# axes included); the point mass reports costs.
COLLECTION_ENVS: dict[str, tuple[str, Any, int]] = {
    "mask": ("mask", lambda: random_env("mask"), 400),
    "box": ("box", lambda: random_env("box"), 150),
    "box-point-mass": ("box", lambda: gym.make("SafePointMass-v0"), 150),
}


@pytest.mark.parametrize("exploration", ["behavior", "induced", "mixture"])
@pytest.mark.parametrize("env_name", list(COLLECTION_ENVS))
def test_collection_never_takes_an_action_outside_the_support(env_name: str, exploration: str) -> None:
    kind, make_env, steps = COLLECTION_ENVS[env_name]
    model = SafeSupportQ("MlpPolicy", make_env(), exploration=exploration, seed=0, **SMALL)
    induced_calls = []
    induced = model.support_kind.induced_step

    def counting_induced(
        learner: Any, observations: Any, supports: th.Tensor, alpha: float, deterministic: bool
    ) -> Any:
        induced_calls.append(len(supports))
        return induced(learner, observations, supports, alpha, deterministic)

    model.support_kind.induced_step = counting_induced  # type: ignore[method-assign]
    model.learn(steps)
    assert model.num_timesteps == steps
    counters = model.safety_counters
    assert counters.steps == steps and counters.unsafe_visits == 0 and counters.out_of_support_actions == 0
    after_warm_up = steps - SMALL["learning_starts"]
    if exploration == "behavior":
        assert not induced_calls
    elif exploration == "induced":
        assert len(induced_calls) == after_warm_up  # every step after learning_starts
    else:
        assert 0.25 * after_warm_up < len(induced_calls) < 0.75 * after_warm_up  # about mixture_weight = 0.5
    buffer = model.replay_buffer
    actions, supports = buffer.actions[: buffer.pos, 0], buffer.supports[: buffer.pos, 0]
    assert_in_supports(actions[:, 0] if kind == "mask" else actions, supports)


@pytest.mark.parametrize("kind", KINDS)
def test_induced_policy_follows_the_temperature(kind: str) -> None:
    # pi_Q ∝ beta * exp(Q / alpha) with a stand-in critic Q = a (the action index, or the action in agent units): a
    # cold alpha picks the best safe action (the highest safe index, the top of the box), a hot one stays uniform.
    n = 2000
    if kind == "mask":
        model = SafeSupportQ("MlpPolicy", random_env("mask"), alpha=0.01, seed=0, **TINY)
        model.policy.critic = IndexQ(5)
        supports = np.tile(np.array([True, False, True, True, False]), (n, 1))
        observations = np.zeros((n, 6), dtype=np.float32)
    else:
        env = random_env(kind, action_low=(-3.0,), action_high=(5.0,))
        model = SafeSupportQ("MlpPolicy", env, alpha=0.01, seed=0, **{**TINY, "n_behavior_samples": 64})
        model.critic.q_networks = [LinearQ(1.0), LinearQ(1.0)]
        low, high = BoxScaler(model.action_space).to_env(np.array([-0.6, 0.9]))
        if kind == "polytope":  # the same interval as two rows, -a <= -low and a <= high
            support = stored_polytope(model.action_space, [[-1.0], [1.0]], [-low, high])
            supports, observations = np.tile(support, (n, 1, 1)), np.zeros((n, 7), dtype=np.float32)
        else:
            supports = np.tile(np.array([[[low], [high]]], dtype=np.float32), (n, 1, 1))
            observations = np.zeros((n, 3), dtype=np.float32)
    th.manual_seed(0)
    cold = model.induced_policy(observations, **predict_kwargs(kind, supports)).actions
    assert_in_supports(cold, supports)
    model.alpha_schedule = lambda _: 100.0
    hot = model.induced_policy(observations, **predict_kwargs(kind, supports)).actions
    assert_in_supports(hot, supports)
    if kind == "mask":
        assert np.all(cold == 3)
        frequencies = np.bincount(hot, minlength=5) / n
        np.testing.assert_allclose(frequencies[[0, 2, 3]], 1 / 3, atol=0.05)
    else:  # in agent units, where Q = a: the interval [-0.6, 0.9]
        cold_agent, hot_agent = (BoxScaler(model.action_space).to_agent(actions) for actions in (cold, hot))
        assert cold_agent.mean() > 0.9 - 0.1
        assert hot_agent.mean() == pytest.approx((-0.6 + 0.9) / 2, abs=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_induced_policy_api(kind: str) -> None:
    model = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **SMALL)
    model.learn(100)
    rng = np.random.default_rng(0)
    supports = random_supports(kind, rng, 32, model.action_space)
    observations = rng.uniform(0.0, 1.0, (32, model.observation_space.shape[0])).astype(np.float32)
    for deterministic in (True, False):
        induced = model.induced_policy(observations, deterministic=deterministic, **predict_kwargs(kind, supports))
        assert induced.actions.shape == (32, *model.action_space.shape)
        assert induced.actions.dtype == model.action_space.dtype
        assert_in_supports(induced.actions, supports)
        assert induced.q_values.shape == induced.kl.shape == (32,)
        assert np.all(np.isfinite(induced.q_values)) and np.all(induced.kl >= -1e-6)
        critic = model.critic_values(observations, induced.actions)
        if kind == "mask":  # the exact masked softmax: its log-probabilities, and the critic's Q of its actions
            assert induced.log_probs is not None and induced.log_probs.shape == (32, 5)
            assert np.all(np.isneginf(induced.log_probs[~supports]))
            np.testing.assert_allclose(np.exp(induced.log_probs).sum(axis=-1), 1.0, rtol=1e-5)
            np.testing.assert_allclose(induced.q_values, critic, rtol=1e-6)
        else:  # importance resampling: no table; Q of the twin minimum, at most the first critic's
            assert induced.log_probs is None
            assert np.all(induced.q_values <= critic + 1e-4)
    with pytest.raises(ValueError, match=f"needs the safe supports of the observations \\({PREDICT_KEYWORD[kind]}="):
        model.induced_policy(observations)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_support_reached_during_training_fails_clearly(kind: str) -> None:
    match = EMPTY_SUPPORT_MESSAGE[kind]
    model = SafeSupportQ("MlpPolicy", random_env(kind, empty_at=3, episode_length=10), learning_starts=100, **TINY)
    with pytest.raises(EmptySupportError, match=match):
        model.learn(50)
    assert model.num_timesteps == 3
    # The same empty support at a terminal state is fine (no action is taken there).
    terminal_env = random_env(kind, episode_length=3, terminal_support="empty")
    terminal = SafeSupportQ("MlpPolicy", terminal_env, learning_starts=10, **TINY)
    terminal.learn(40)
    # ... but not at a truncated one, which the target bootstraps from.
    truncated = SafeSupportQ("MlpPolicy", TimeLimit(random_env(kind, empty_at=3, terminate=False), 3), **TINY)
    with pytest.raises(EmptySupportError, match=match):
        truncated.learn(10)
    # An empty support at reset cannot be acted in either.
    start = SafeSupportQ("MlpPolicy", fixed_env(kind, empty=True), seed=0, **TINY)
    with pytest.raises(EmptySupportError, match=match):
        start.learn(10)
