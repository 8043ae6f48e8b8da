import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_safeq import (
    EmptySupportError,
    MissingSupportError,
    SafeDictReplayBuffer,
    SafeReplayBuffer,
    SafeSupportQ,
    SafetyWrapper,
)
from sb3_safeq.common.evaluation import evaluate_safe_policy
from sb3_safeq.safeq.policies import CnnPolicy, MultiInputPolicy
from tests.toy_envs import FixedMaskEnv, NoMaskEnv, RandomMaskEnv

SMALL = {"learning_starts": 50, "batch_size": 16, "buffer_size": 2000, "policy_kwargs": {"net_arch": [16]}}


@pytest.mark.parametrize("exploration", ["behavior", "induced", "mixture"])
def test_collection_never_takes_an_unsafe_action(exploration: str) -> None:
    # RandomMaskEnv raises on any action outside its mask, during warm-up and after it.
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), exploration=exploration, seed=0, **SMALL)
    model.learn(400)
    assert model.num_timesteps == 400
    assert model.safety_counters.out_of_support_actions == 0
    assert model.safety_counters.steps == 400


def test_callable_behavior_is_used_for_collection() -> None:
    calls = []

    def highest_safe_action(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
        calls.append(observations.shape)
        probs = np.zeros(masks.shape)
        probs[np.arange(len(masks)), [np.flatnonzero(m)[-1] for m in masks]] = 1.0
        return probs

    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), behavior=highest_safe_action, seed=0, **SMALL)
    model.learn(120)
    assert calls and calls[0] == (1, 6)  # batched observations, as in the replay buffer
    buffer = model.replay_buffer
    assert isinstance(buffer, SafeReplayBuffer)
    stored = buffer.actions[: buffer.pos, 0, 0]
    expected = [np.flatnonzero(mask)[-1] for mask in buffer.supports[: buffer.pos, 0]]
    np.testing.assert_array_equal(stored, expected)
    # Each step of RandomMaskEnv pays 1 for the highest safe action, so this behavior earns every step.
    assert buffer.rewards[: buffer.pos].min() == 1.0


def highest_safe_action(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A deterministic safe behavior, importable by path (``tests.test_safeq:highest_safe_action``)."""
    probs = np.zeros(masks.shape)
    probs[np.arange(len(masks)), [np.flatnonzero(m)[-1] for m in masks]] = 1.0
    return probs


def test_behavior_given_by_import_path_survives_save_and_load(tmp_path) -> None:
    # The form a hyperparameter file can carry; a saved model keeps the string and rebuilds the policy from it.
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), behavior="tests.test_safeq:highest_safe_action", **SMALL)
    model.learn(60)
    buffer = model.replay_buffer
    expected = [np.flatnonzero(mask)[-1] for mask in buffer.supports[: buffer.pos, 0]]
    np.testing.assert_array_equal(buffer.actions[: buffer.pos, 0, 0], expected)
    model.save(tmp_path / "model")
    loaded = SafeSupportQ.load(tmp_path / "model", env=RandomMaskEnv())
    assert loaded.behavior == "tests.test_safeq:highest_safe_action"
    # (pytest may import this file under another module name, so compare names, not objects)
    assert loaded.behavior_policy.probability_fn.__qualname__ == "highest_safe_action"


def test_behavior_function_with_mass_outside_the_mask_is_rejected() -> None:
    def unsafe(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return np.ones(masks.shape) / masks.shape[1]

    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), behavior=unsafe, seed=0, **SMALL)
    with pytest.raises(ValueError, match="outside the safe mask"):
        model.learn(100)


@settings(max_examples=40, deadline=None)
@given(masks=arrays(np.bool_, st.tuples(st.integers(1, 6), st.just(5))), deterministic=st.booleans())
def test_predict_never_leaves_the_masks(masks: np.ndarray, deterministic: bool) -> None:
    masks[:, 0] |= ~masks.any(axis=1)
    observations = np.random.default_rng(0).random((len(masks), 6)).astype(np.float32)
    model = _predict_model()
    actions, _ = model.predict(observations, deterministic=deterministic, action_masks=masks)
    assert actions.shape == (len(masks),)
    assert masks[np.arange(len(masks)), actions].all()
    with th.no_grad():
        logits = model.policy.action_logits(th.as_tensor(observations), th.as_tensor(masks))
    probs = th.softmax(logits, dim=-1).numpy()
    assert np.all(probs[~masks] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


_MODEL_CACHE: dict[str, SafeSupportQ] = {}


def _predict_model() -> SafeSupportQ:
    if "model" not in _MODEL_CACHE:
        _MODEL_CACHE["model"] = SafeSupportQ("MlpPolicy", RandomMaskEnv(), seed=1, **SMALL)
    return _MODEL_CACHE["model"]


def test_predict_without_masks_and_single_observations() -> None:
    model = _predict_model()
    obs, _ = RandomMaskEnv().reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert np.asarray(action).shape == () and state is None
    action, _ = model.predict(obs, deterministic=True, action_masks=np.array([0, 0, 1, 0, 0]))
    assert int(action) == 2
    with pytest.raises(EmptySupportError, match="all-False"):
        model.predict(obs, action_masks=np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="expected 1 x 5"):
        model.predict(obs, action_masks=np.ones(4, dtype=bool))


def test_extraction_head_learns_the_support() -> None:
    # After training, the *unmasked* head must put almost no mass outside the mask: it matched pi_Q, which has none.
    model = SafeSupportQ(
        "MlpPolicy",
        RandomMaskEnv(),
        seed=0,
        learning_starts=200,
        batch_size=64,
        policy_kwargs={"net_arch": [64, 64]},
        learning_rate=3e-3,
    )
    model.learn(3000)
    env = RandomMaskEnv()
    obs, _ = env.reset(seed=5)
    leaks = []
    for _ in range(200):
        logits = model.actor(th.as_tensor(obs[None]))
        probs = th.softmax(logits, -1)[0].detach().numpy()
        leaks.append(probs[~env.action_masks()].sum())
        obs, _, terminated, _, _ = env.step(int(np.flatnonzero(env.action_masks())[0]))
        if terminated:
            obs, _ = env.reset()
    assert np.mean(leaks) < 0.05


def test_save_load_round_trip(tmp_path) -> None:
    def prefer_last(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
        probs = masks.astype(float)
        probs[np.arange(len(masks)), [np.flatnonzero(m)[-1] for m in masks]] += 3.0
        return probs * masks

    model = SafeSupportQ(
        "MlpPolicy",
        RandomMaskEnv(),
        behavior=prefer_last,
        alpha=0.3,
        exploration="mixture",
        mixture_weight=0.25,
        seed=0,
        **SMALL,
    )
    model.learn(200)
    model.save(tmp_path / "model.zip")
    loaded = SafeSupportQ.load(tmp_path / "model.zip", env=RandomMaskEnv())
    observations = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    masks = np.random.default_rng(1).random((64, 5)) < 0.5
    masks[:, 1] = True
    np.testing.assert_array_equal(
        model.predict(observations, deterministic=True, action_masks=masks)[0],
        loaded.predict(observations, deterministic=True, action_masks=masks)[0],
    )
    for name in ("critic", "critic_target", "actor"):
        for p1, p2 in zip(getattr(model, name).parameters(), getattr(loaded, name).parameters(), strict=True):
            assert th.equal(p1, p2)
    for opt in ("critic_optimizer", "actor_optimizer"):
        s1, s2 = getattr(model.policy, opt).state_dict(), getattr(loaded.policy, opt).state_dict()
        assert s1["state"].keys() == s2["state"].keys() and len(s1["state"]) > 0
        assert all(th.equal(s1["state"][k]["exp_avg"], s2["state"][k]["exp_avg"]) for k in s1["state"])
    assert (loaded.alpha, loaded.exploration, loaded.mixture_weight) == (0.3, "mixture", 0.25)
    masks_t = th.as_tensor(masks)
    obs_t = th.as_tensor(observations)
    assert th.equal(model.behavior_policy.log_probs(obs_t, masks_t), loaded.behavior_policy.log_probs(obs_t, masks_t))
    loaded.learn(100, reset_num_timesteps=False)  # training goes on after loading
    assert loaded.num_timesteps == 300


@pytest.mark.parametrize("vec_env_cls", [None, SubprocVecEnv])
def test_multi_env(vec_env_cls) -> None:
    vec_env = make_vec_env(
        lambda: TimeLimit(RandomMaskEnv(terminate=False), 7),
        n_envs=3,
        seed=0,
        wrapper_class=SafetyWrapper,
        vec_env_cls=vec_env_cls,
    )
    model = SafeSupportQ("MlpPolicy", vec_env, exploration="mixture", seed=0, **SMALL)
    model.learn(300)
    assert model.num_timesteps == 300 and model.safety_counters.out_of_support_actions == 0
    buffer = model.replay_buffer
    n = buffer.pos
    # Supports stored for all 3 environments match the observations they belong to (time-limit resets included).
    np.testing.assert_array_equal(buffer.supports[:n], buffer.observations[:n, :, :-1].astype(bool))
    np.testing.assert_array_equal(buffer.next_supports[:n], buffer.next_observations[:n, :, :-1].astype(bool))
    assert buffer.timeouts[:n].sum() > 0
    vec_env.close()


def test_vec_env_without_safety_wrapper_is_refused() -> None:
    with pytest.raises(MissingSupportError, match="wrapper_class=SafetyWrapper"):
        SafeSupportQ("MlpPolicy", make_vec_env(RandomMaskEnv, n_envs=2))


def test_dict_observations_and_policy_aliases() -> None:
    model = SafeSupportQ("MultiInputPolicy", RandomMaskEnv(dict_obs=True), exploration="induced", seed=0, **SMALL)
    model.learn(200)
    assert isinstance(model.policy, MultiInputPolicy)
    assert isinstance(model.replay_buffer, SafeDictReplayBuffer)
    obs, _ = RandomMaskEnv(dict_obs=True).reset(seed=0)
    action, _ = model.predict(obs, deterministic=True, action_masks=np.array([0, 0, 0, 1, 0]))
    assert int(action) == 3
    assert SafeSupportQ.policy_aliases["CnnPolicy"] is CnnPolicy


def test_cnn_policy_on_image_observations() -> None:
    class ImageEnv(FixedMaskEnv):
        observation_space = spaces.Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 1.0, False, False, {"cost": 0.0}

    model = SafeSupportQ(
        "CnnPolicy", ImageEnv(np.array([True, False, True])), seed=0, learning_starts=20, batch_size=8, buffer_size=200
    )
    model.learn(60)
    assert model.safety_counters.out_of_support_actions == 0


def test_action_masker_env_gets_the_safety_wrapper_automatically() -> None:
    env = ActionMasker(NoMaskEnv(), lambda env: np.array([False, True, False]))
    model = SafeSupportQ("MlpPolicy", env, seed=0, **SMALL)
    assert model.get_env().env_is_wrapped(SafetyWrapper)[0]
    model.learn(100)
    assert (model.replay_buffer.actions[:100] == 1).all()


def test_logger_keys_and_progress_bar(tmp_path) -> None:
    model = SafeSupportQ("MlpPolicy", TimeLimit(RandomMaskEnv(terminate=False), 10), seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(300, log_interval=1, progress_bar=True)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train/critic_loss",
        "train/actor_loss",
        "train/actor_kl",
        "train/alpha",
        "train/q_values",
        "safety/unsafe_visits",
        "safety/cumulative_cost",
        "safety/out_of_support_actions",
        "safety/empty_support_states",
        "safety/shielded_actions",
    ):
        assert key in header


def test_alpha_schedule_is_followed(tmp_path) -> None:
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), alpha=lambda progress: 0.01 + progress, seed=0, **SMALL)
    model.learn(200)
    assert model.current_alpha() == pytest.approx(0.01 + model._current_progress_remaining)
    bad = SafeSupportQ("MlpPolicy", RandomMaskEnv(), alpha=lambda progress: progress - 1.0, seed=0, **SMALL)
    with pytest.raises(ValueError, match="alpha schedule returned"):
        bad.learn(200)


@pytest.mark.parametrize(
    ("env", "error", "match"),
    [
        (lambda: gym.make("Pendulum-v1"), MissingSupportError, "has no `safe_action_bounds\\(\\)` method"),
        (lambda: FixedMaskEnv(np.ones(4, bool), spaces.MultiDiscrete([2, 2])), ValueError, "MultiDiscrete"),
        (NoMaskEnv, MissingSupportError, "has no `action_masks\\(\\)` method"),
    ],
)
def test_unsupported_environments_fail_clearly(env, error, match) -> None:
    with pytest.raises(error, match=match):
        SafeSupportQ("MlpPolicy", env())


def test_all_false_mask_fails_clearly() -> None:
    model = SafeSupportQ("MlpPolicy", FixedMaskEnv(np.zeros(3, dtype=bool)), seed=0, **SMALL)
    with pytest.raises(EmptySupportError, match="maximal_invariant_safe_set"):
        model.learn(10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha=0.0 is invalid"),
        ({"alpha": -1.0}, "alpha=-1.0 is invalid"),
        ({"alpha": float("nan")}, "alpha=nan is invalid"),
        ({"exploration": "greedy"}, "exploration='greedy' is invalid"),
        ({"mixture_weight": 1.5}, "mixture_weight"),
        ({"loss": "l1"}, "loss='l1' is invalid"),
        ({"tau": 0.0}, "tau=0.0"),
        ({"target_update_interval": 0}, "target_update_interval"),
        ({"behavior": "greedy"}, "Unknown behavior policy 'greedy'"),
        ({"replay_buffer_class": __import__("stable_baselines3").common.buffers.ReplayBuffer}, "does not store"),
        ({"policy_kwargs": {"net_arch": {"qf": [8]}}}, "net_arch as a dict"),
    ],
)
def test_bad_hyperparameters_fail_clearly(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SafeSupportQ("MlpPolicy", RandomMaskEnv(), **kwargs)


def test_evaluate_safe_policy_records_returns_and_costs() -> None:
    model = _predict_model()
    result = evaluate_safe_policy(model, RandomMaskEnv(episode_length=5), n_eval_episodes=4)
    assert len(result.episode_returns) == 4 and result.episode_lengths == [5, 5, 5, 5]
    assert result.unsafe_visits == 0
    with pytest.raises(ValueError, match="n_eval_episodes"):
        evaluate_safe_policy(model, RandomMaskEnv(), n_eval_episodes=0)


def test_target_network_follows_polyak_updates() -> None:
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), tau=0.25, target_update_interval=2, seed=0, **SMALL)
    model.learn(60)
    online_before = [p.detach().clone() for p in model.critic.parameters()]
    target_before = [p.detach().clone() for p in model.critic_target.parameters()]
    model._n_updates = 0
    model.train(gradient_steps=1, batch_size=8)  # update 1: no target update (interval 2)
    for target, before in zip(model.critic_target.parameters(), target_before, strict=True):
        assert th.equal(target, before)
    online_mid = [p.detach().clone() for p in model.critic.parameters()]
    model._n_updates = 1
    model.train(gradient_steps=1, batch_size=8)  # update 2: target <- 0.75 target + 0.25 online
    for target, before, online in zip(
        model.critic_target.parameters(), target_before, model.critic.parameters(), strict=True
    ):
        th.testing.assert_close(target, 0.75 * before + 0.25 * online.detach())
    assert not all(th.equal(a, b) for a, b in zip(online_before, online_mid, strict=True))


def test_actor_update_interval_delays_the_extraction_head() -> None:
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), actor_update_interval=3, seed=0, **SMALL)
    model.learn(60)
    model._n_updates = 0
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    model.train(gradient_steps=2, batch_size=8)  # updates 1 and 2: critic only
    assert all(th.equal(p, b) for p, b in zip(model.actor.parameters(), actor_before, strict=True))
    assert not all(th.equal(p, b) for p, b in zip(model.critic.parameters(), critic_before, strict=True))
    model.train(gradient_steps=1, batch_size=8)  # update 3: the head too
    assert not all(th.equal(p, b) for p, b in zip(model.actor.parameters(), actor_before, strict=True))
    with pytest.raises(ValueError, match="actor_update_interval=0"):
        SafeSupportQ("MlpPolicy", RandomMaskEnv(), actor_update_interval=0)


@pytest.mark.parametrize("loss", [None, "huber"])
def test_critic_estimates_the_expected_target_not_its_median(loss: str | None) -> None:
    from tests.toy_envs import LotteryEnv

    # The soft target is an expectation: the default MSE regresses to the mean 10 of the sampled targets
    # {0 (90%), 100 (10%)}; a Huber loss drifts toward their median 0, which is why it is not the default.
    kwargs = {} if loss is None else {"loss": loss}
    model = SafeSupportQ("MlpPolicy", LotteryEnv(), learning_starts=100, learning_rate=3e-3, seed=0, **kwargs)
    model.learn(3000)
    with th.no_grad():
        q_values = model.critic(th.zeros(1, 1)).numpy()[0]
    if loss is None:
        assert model.loss == "mse"
        np.testing.assert_allclose(q_values, 10.0, atol=2.5)
    else:
        assert np.all(q_values < 5.0)
