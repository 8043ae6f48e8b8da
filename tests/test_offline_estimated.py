"""
Offline SafeSupportQ with an estimated behavior (``behavior="estimated"``, issue 15 point 3): ``beta`` and, for a
dataset without supports, the supports are cloned from the data.
"""

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.common.behaviors import (
    BehaviorNotFittedError,
    EstimatedBoxBehavior,
    EstimatedDiscreteBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.offline import InvalidDatasetError, collect_safe_dataset
from sb3_safeq.offline.minari_io import transitions_from_minari
from sb3_safeq.safeq.arguments import InvalidArgumentError
from tests.helpers import cliff_dataset_without_supports
from tests.polytope_toy_envs import RandomPolytopeEnv

CLIFF = "SafeCliffWalking-v0"
POINT_MASS = "SafePointMass-v0"
SMALL_BOX_NET = {"net_arch": [32, 32]}
SUPPORT_KEYS = ("supports", "next_supports")


@pytest.fixture(autouse=True)
def local_minari_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its datasets into its own folder: never the user's, never the hub."""
    folder = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(folder))
    return folder


def uniform_arrays(env_id: str, n_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """:return: a dataset of the uniform behavior inside the support, as plain arrays with supports"""
    dataset = collect_safe_dataset(env_id, "uniform", n_steps=n_steps, dataset_id=f"estimated/{seed}-v0", seed=seed)
    kind = SafetyWrapper(gym.make(env_id)).support_kind
    transitions = transitions_from_minari(dataset, kind, dataset.spec.observation_space)
    return {key: value for key, value in vars(transitions).items() if value is not None}


def without_supports(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: value for key, value in arrays.items() if key not in SUPPORT_KEYS}


def deploy_without_support(model: SafeSupportQ, env_id: str, n_episodes: int) -> tuple[float, Any]:
    """
    :return: the mean return of the deterministic policy given *no* support (an estimated behavior acts inside its
        estimated support), and the wrapper's counters, which check each action against the environment's support
    """
    env = SafetyWrapper(gym.make(env_id))
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=episode)
        done, episode_return = False, 0.0
        while not done:
            action, _ = model.predict(observation, deterministic=True)
            discrete = isinstance(env.action_space, gym.spaces.Discrete)
            observation, reward, terminated, truncated, _ = env.step(int(action) if discrete else action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return float(np.mean(returns)), env.counters


def test_cliff_walking_estimated_support_is_the_true_support_and_deploys_inside_it() -> None:
    arrays = uniform_arrays(CLIFF, 2000)
    # The head at every gradient step, as docs/offline.md advises for short offline budgets (with the Discrete default
    # of every fourth step, 1,200 gradient steps leave it at the logger's -100).
    model = SafeSupportQ(
        "MlpPolicy", CLIFF, behavior="estimated", tau=0.02, learning_rate=1e-3, seed=0, actor_update_interval=1
    )
    model.learn_offline(without_supports(arrays), gradient_steps=1200, log_interval=None, behavior_cloning_steps=1000)

    behavior = model.behavior_policy
    assert isinstance(behavior, EstimatedDiscreteBehavior) and behavior.fitted
    visited = np.unique(arrays["observations"])
    estimated = behavior.supports_for(th.as_tensor(visited))
    true_masks = gym.make(CLIFF).unwrapped.safe_action_table[visited]
    assert estimated is not None
    # Never an unsafe action in a visited state: the data never took one.
    assert not (estimated & ~true_masks).any()
    # Where the data took every safe action often (each >= 10% of >= 10 visits), the estimate is the true support. A
    # rarely visited state may lose an action the data took once or never: the estimate is "what the data took".
    counts = np.zeros_like(true_masks, dtype=np.int64)
    np.add.at(counts, (np.searchsorted(visited, arrays["observations"]), arrays["actions"]), 1)
    visits = counts.sum(axis=1, keepdims=True)
    covered = ((counts >= 0.1 * visits) == true_masks).all(axis=1) & (visits[:, 0] >= 10)
    assert covered.sum() >= 0.7 * len(visited)
    assert np.array_equal(estimated[covered], true_masks[covered])
    # The buffer holds the estimated supports, the same masks.
    stored = model.replay_buffer.supports[: len(arrays["rewards"]), 0]
    np.testing.assert_array_equal(stored, behavior.supports_for(th.as_tensor(arrays["observations"])))

    induced = model.induced_policy(visited, deterministic=True)  # inside the estimated supports, without any given
    assert estimated[np.arange(len(visited)), induced.actions].all()
    mean_return, counters = deploy_without_support(model, CLIFF, n_episodes=2)
    assert counters.out_of_support_actions == 0 and counters.unsafe_visits == 0
    assert mean_return == -13.0  # the optimal safe path, as with the known behavior
    # beta is the cloned probabilities on the estimated mask: near-uniform over the true safe actions.
    masks = th.as_tensor(true_masks[covered])
    with th.no_grad():
        probs = behavior.log_probs(th.as_tensor(visited[covered]), masks).exp()
    assert th.allclose(probs.sum(-1), th.ones(len(masks)))
    assert bool((probs[~masks] == 0).all()) and float((probs - masks / masks.sum(-1, keepdim=True)).abs().max()) < 0.25
    # beta="uniform": exactly uniform on the estimated mask (the clone only gives the support).
    behavior.beta = "uniform"
    with th.no_grad():
        probs = behavior.log_probs(th.as_tensor(visited[covered]), masks).exp()
    assert th.allclose(probs, masks / masks.sum(-1, keepdim=True))


def test_datasets_without_supports_need_the_estimated_behavior() -> None:
    arrays = uniform_arrays(CLIFF, 200)
    model = SafeSupportQ("MlpPolicy", CLIFF)
    with pytest.raises(InvalidDatasetError, match=r"no 'supports' / 'next_supports'.*behavior=\"estimated\""):
        model.learn_offline(without_supports(arrays), gradient_steps=1)
    with pytest.raises(InvalidDatasetError, match="give both arrays of supports"):
        model.learn_offline({k: v for k, v in arrays.items() if k != "next_supports"}, gradient_steps=1)
    with pytest.raises(ValueError, match='behavior_cloning_steps applies to behavior="estimated" only'):
        model.learn_offline(arrays, gradient_steps=1, behavior_cloning_steps=10)
    with pytest.raises(InvalidArgumentError, match='apply to behavior="estimated" only'):
        SafeSupportQ("MlpPolicy", CLIFF, behavior_kwargs={"support_threshold": 0.1})
    assert model.replay_buffer.size() == 0  # nothing was written

    cliff_dataset_without_supports()
    with pytest.raises(InvalidDatasetError, match=r"no infos\['action_mask'\].*behavior=\"estimated\""):
        model.learn_offline("cliff/nosupport-v0", gradient_steps=1)
    estimated = SafeSupportQ("MlpPolicy", CLIFF, behavior="estimated", seed=0)
    estimated.learn_offline("cliff/nosupport-v0", gradient_steps=1, behavior_cloning_steps=5, log_interval=None)
    assert estimated.replay_buffer.size() == 2 and estimated.replay_buffer.supports[:2, 0].any(axis=1).all()


def test_box_estimated_behavior_stays_in_the_stored_box_and_estimates_one_without() -> None:
    arrays = uniform_arrays(POINT_MASS, 400)
    observations = th.as_tensor(arrays["observations"][:64])
    boxes = th.as_tensor(arrays["supports"][:64])
    for data in (arrays, without_supports(arrays)):
        model = SafeSupportQ(
            "MlpPolicy", POINT_MASS, behavior="estimated", n_behavior_samples=4, policy_kwargs=SMALL_BOX_NET, seed=0
        )
        model.learn_offline(data, gradient_steps=20, log_interval=None, behavior_cloning_steps=200)
        behavior = model.behavior_policy
        assert isinstance(behavior, EstimatedBoxBehavior)
        # With the stored boxes: draws inside them, finite log-densities there, -inf outside.
        samples = behavior.sample(observations, boxes, 16)
        assert bool(((samples >= boxes[:, None, 0]) & (samples <= boxes[:, None, 1])).all())
        log_probs = behavior.log_prob(observations, boxes, samples)
        assert bool(th.isfinite(log_probs).all())
        outside = boxes[:, 1].unsqueeze(1) + 0.01
        assert bool(th.isneginf(behavior.log_prob(observations, boxes, outside)).all())

        behavior.beta = "uniform"  # uniform in the box: the uniform behavior's draws and density
        uniform_draws = behavior.sample(observations, boxes, 4)
        assert bool(((uniform_draws >= boxes[:, None, 0]) & (uniform_draws <= boxes[:, None, 1])).all())
        expected_log_probs = UniformBoxBehavior().log_prob(observations, boxes, samples)
        assert th.equal(behavior.log_prob(observations, boxes, samples), expected_log_probs)
        behavior.beta = "cloned"

        # The estimated boxes: non-empty, inside the action space, and the buffer stores them where the data had none.
        estimated = behavior.supports_for(observations)
        assert estimated is not None
        space = model.action_space
        assert np.all(estimated[:, 0] < estimated[:, 1]) and np.all(estimated[:, 0] >= space.low - 1e-6)
        assert np.all(estimated[:, 1] <= space.high + 1e-6)
        stored = model.replay_buffer.supports[:64, 0]
        expected = model.support_kind.to_agent(arrays["supports"][:64] if "supports" in data else estimated)
        np.testing.assert_allclose(stored, expected, atol=1e-5)
        # predict without a support acts inside the estimated box of each observation.
        actions, _ = model.predict(arrays["observations"][:64], deterministic=False)
        assert np.all((actions >= estimated[:, 0] - 1e-6) & (actions <= estimated[:, 1] + 1e-6))


@pytest.mark.parametrize("env_id", [CLIFF, POINT_MASS])
def test_save_load_restores_the_fitted_behavior(env_id: str, tmp_path: Path) -> None:
    arrays = uniform_arrays(env_id, 300)
    kwargs = {} if env_id == CLIFF else {"n_behavior_samples": 4, "policy_kwargs": SMALL_BOX_NET}
    model = SafeSupportQ("MlpPolicy", env_id, behavior="estimated", behavior_kwargs={"net_arch": [16]}, **kwargs)
    with pytest.raises(BehaviorNotFittedError, match="learn_offline"):
        model.predict(arrays["observations"][:4], deterministic=True)
    model.learn_offline(without_supports(arrays), gradient_steps=10, log_interval=None, behavior_cloning_steps=50)
    model.save(tmp_path / "model")

    loaded = SafeSupportQ.load(tmp_path / "model")
    assert loaded.behavior_policy.fitted and loaded.behavior_kwargs == {"net_arch": [16]}
    observations = arrays["observations"][:32]
    np.testing.assert_array_equal(
        loaded.behavior_policy.supports_for(th.as_tensor(observations)),
        model.behavior_policy.supports_for(th.as_tensor(observations)),
    )
    np.testing.assert_array_equal(
        loaded.predict(observations, deterministic=True)[0], model.predict(observations, deterministic=True)[0]
    )
    # A fitted behavior is kept by default: the next offline run clones nothing more.
    before = [parameter.clone() for parameter in loaded.behavior_policy.network.parameters()]
    loaded.learn_offline(without_supports(arrays), gradient_steps=2, log_interval=None)
    assert all(th.equal(a, b) for a, b in zip(before, loaded.behavior_policy.network.parameters(), strict=True))

    with pytest.raises(ValueError, match='behavior="estimated" is for offline learning only'):
        loaded.set_env(gym.make(env_id))
        loaded.learn(10)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.5, "0.05"])
def test_a_wrong_support_threshold_or_tail_is_refused_with_the_fix(threshold: Any) -> None:
    with pytest.raises(ValueError, match=r"support_threshold=.* strictly between 0 and 1.*behavior_kwargs=dict"):
        SafeSupportQ("MlpPolicy", CLIFF, behavior="estimated", behavior_kwargs={"support_threshold": threshold})
    with pytest.raises(ValueError, match=r"support_tail=.* strictly between 0 and 1"):
        SafeSupportQ("MlpPolicy", POINT_MASS, behavior="estimated", behavior_kwargs={"support_tail": threshold})
    with pytest.raises(ValueError, match="beta='empirical' is invalid: choose 'cloned'"):
        SafeSupportQ("MlpPolicy", POINT_MASS, behavior="estimated", behavior_kwargs={"beta": "empirical"})
    with pytest.raises(ValueError, match="does not take: its options are support_threshold, beta, net_arch"):
        SafeSupportQ("MlpPolicy", CLIFF, behavior="estimated", behavior_kwargs={"support_tail": 0.1})
    with pytest.raises(ValueError, match="behavior_cloning_steps=0, but the estimated behavior was never fitted"):
        model = SafeSupportQ("MlpPolicy", CLIFF, behavior="estimated")
        model.learn_offline(uniform_arrays(CLIFF, 50), gradient_steps=1, behavior_cloning_steps=0)


def test_linear_constraint_supports_offer_no_estimated_behavior() -> None:
    with pytest.raises(ValueError, match='behavior="estimated" is not offered'):
        SafeSupportQ("MlpPolicy", RandomPolytopeEnv(), behavior="estimated")
    with pytest.raises(ValueError, match="cannot act before that, nor collect data"):
        collect_safe_dataset(CLIFF, "estimated", n_steps=10, dataset_id="cliff/never-v0")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
