"""
Malformed supports, costs, observations and arguments: each either works correctly or fails with an error that names
the problem and the fix; none may lead to an action outside the safe support. Parametrised over one Discrete and one
Box environment where the concern applies to both kinds.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_safeq import SafeSupportQ, SafetyWrapper, UnsafeVisitError

TINY = {"learning_starts": 20, "batch_size": 8, "buffer_size": 500, "policy_kwargs": {"net_arch": [8]}}


class CostEnv(gym.Env):
    """
    Discrete (3 actions, action 2 unsafe) or Box (one axis in [-1, 1], positive actions unsafe) with a configurable
    cost and safe support: the fixture of the bad-input tests.

    :param kind: ``"discrete"`` or ``"box"``
    :param cost: the ``info["cost"]`` of an unsafe action (any value, to test the cost gate)
    :param support: what the support method returns (None: the correct support)
    :param start: the ``start`` of the Discrete action space
    """

    def __init__(self, kind: str = "discrete", cost: Any = 1.0, support: Any = None, start: int = 0) -> None:
        self.kind = kind
        self.cost = cost
        self.support = support
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        if kind == "discrete":
            self.action_space: spaces.Space = spaces.Discrete(3, start=start)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def _unsafe(self, action: Any) -> bool:
        return int(action) == 2 if self.kind == "discrete" else float(np.asarray(action).reshape(-1)[0]) > 0

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        cost = self.cost if self._unsafe(action) else 0.0
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {"cost": cost}

    def action_masks(self) -> Any:
        return np.array([True, True, False]) if self.support is None else self.support

    def safe_action_bounds(self) -> Any:
        return (np.array([-1.0]), np.array([0.0])) if self.support is None else self.support


# ------------------------------------------------------------------------------------------------- action spaces


def test_discrete_action_space_with_an_offset_is_refused() -> None:
    # Mask entry i is action i: with start=1 the mask's indices would be sent as action values (off by one).
    with pytest.raises(ValueError, match=r"starts at 1: action masks index the actions 0..n-1"):
        SafetyWrapper(CostEnv(start=1))
    with pytest.raises(ValueError, match="starts at 1"):
        SafeSupportQ("MlpPolicy", CostEnv(start=1))


# ---------------------------------------------------------------------------------------- supports from the env


@pytest.mark.parametrize(
    "bounds, message",
    [
        (np.array([[-1.0, 0.0]]), r"one row per axis, shape \(1, 2\)"),
        (np.array([-1.0, 0.0, 0.5]), r"expected \(low, high\)"),
        (np.zeros((2, 2)), r"expected \(low, high\)"),
    ],
)
def test_box_layouts_are_checked_not_reshaped(bounds: np.ndarray, message: str) -> None:
    env = SafetyWrapper(CostEnv("box", support=bounds))
    with pytest.raises(ValueError, match=message):
        env.reset(seed=0)


def test_box_of_two_axes_given_one_row_per_axis_is_refused() -> None:
    # (action_dim, 2) has the size of (2, action_dim): reshaping it silently gave wrong boxes.
    env = CostEnv("box")
    env.action_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    env.support = np.array([[-1.0, 0.0], [-1.0, 0.5], [0.0, 1.0]])  # one row (low, high) per axis
    with pytest.raises(ValueError, match=r"one row per axis, shape \(3, 2\): give `\(low, high\)`"):
        SafetyWrapper(env).reset(seed=0)


def test_one_axis_box_as_two_numbers_is_accepted() -> None:
    env = SafetyWrapper(CostEnv("box", support=(-0.5, 0.25)))
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["safe_action_bounds"], [[-0.5], [0.25]])


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.array([1.0, 0.3, 0.0]), "exactly 0/1"),
        (np.array([1.0, np.nan, 0.0]), "exactly 0/1"),
        (np.array([[True, True, False]]), r"shape \(1, 3\), expected \(3,\)"),
        (np.array(["yes", "no", "no"]), "booleans"),
    ],
)
def test_malformed_masks_from_the_env_are_refused(mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SafetyWrapper(CostEnv(support=mask)).reset(seed=0)


# ------------------------------------------------------------------------------------------- supports to predict


@pytest.fixture(scope="module")
def box_model() -> SafeSupportQ:
    env = CostEnv("box")
    env.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    env.support = (np.array([-1.0, -1.0]), np.array([0.0, 0.0]))
    return SafeSupportQ("MlpPolicy", env, seed=0, **TINY)


@pytest.fixture(scope="module")
def mask_model() -> SafeSupportQ:
    return SafeSupportQ("MlpPolicy", CostEnv(), seed=0, **TINY)


def _boxes(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    low = rng.uniform(-1.0, 0.5, size=(n, 2)).astype(np.float32)
    return low, np.minimum(low + rng.uniform(0.0, 0.3, size=(n, 2)).astype(np.float32), 1.0)


@pytest.mark.parametrize("container", [tuple, list])
def test_predict_takes_low_high_as_tuple_or_list(box_model: SafeSupportQ, container: type) -> None:
    low, high = _boxes(64)
    observations = np.zeros((64, 2), dtype=np.float32)
    for deterministic in (True, False):
        actions, _ = box_model.predict(observations, deterministic=deterministic, safe_bounds=container((low, high)))
        assert np.all(actions >= low) and np.all(actions <= high)
    stacked = np.stack([low, high], axis=1)  # the documented array layout: (n, 2, action_dim)
    actions, _ = box_model.predict(observations, safe_bounds=stacked)
    assert np.all(actions >= low) and np.all(actions <= high)


def test_predict_refuses_box_arrays_in_another_layout(box_model: SafeSupportQ) -> None:
    low, high = _boxes(5)
    observations = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"safe_bounds has shape \(2, 5, 2\) for 5 observation\(s\)"):
        box_model.predict(observations, safe_bounds=np.stack([low, high]))  # (2, n, d): same size, other meaning
    with pytest.raises(ValueError, match=r"safe_bounds holds parts of shapes \(2,\), \(2,\) for 5 observation"):
        box_model.predict(observations, safe_bounds=(low[0], high[0]))  # one box for a batch


def test_predict_refuses_transposed_and_non_boolean_masks(mask_model: SafeSupportQ) -> None:
    observations = np.zeros((4, 2), dtype=np.float32)
    masks = np.array([[True, False, True]] * 4)
    with pytest.raises(ValueError, match=r"action_masks has shape \(3, 4\), expected \(4, 3\)"):
        mask_model.predict(observations, action_masks=masks.T)
    with pytest.raises(ValueError, match="exactly 0/1"):
        mask_model.predict(observations, action_masks=np.where(masks, 1.0, 0.3))
    with pytest.raises(ValueError, match="exactly 0/1"):
        mask_model.predict(observations, action_masks=np.where(masks, 1.0, np.nan))
    actions, _ = mask_model.predict(observations, action_masks=masks.astype(int))  # 0/1 integers are booleans
    assert np.all(masks[np.arange(4), actions])


@pytest.mark.parametrize("kind", ["mask", "box"])
def test_predict_refuses_nan_observations(kind: str, mask_model: SafeSupportQ, box_model: SafeSupportQ) -> None:
    model = mask_model if kind == "mask" else box_model
    support = {"action_masks": [True, True, False]} if kind == "mask" else {"safe_bounds": ([-1.0, -1.0], [0.0, 0.0])}
    with pytest.raises(ValueError, match="NaN or infinite entries"):
        model.predict(np.array([np.nan, 0.0], dtype=np.float32), **support)
    with pytest.raises(ValueError, match="NaN or infinite entries"):
        model.induced_policy(np.array([[0.0, np.inf]], dtype=np.float32), **support)


# ------------------------------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("kind", ["discrete", "box"])
@pytest.mark.parametrize(
    "cost, message",
    [
        (float("nan"), "must be finite and >= 0"),
        (-1.0, "must be finite and >= 0"),
        (float("inf"), "must be finite and >= 0"),
        ("1", "is not a number"),
        (None, "is not a number"),
        (True, "is not a number"),
        (np.array([1.0, 0.0]), "must be one real number"),
    ],
)
def test_malformed_costs_are_errors(kind: str, cost: Any, message: str) -> None:
    env = SafetyWrapper(CostEnv(kind, cost=cost))
    env.reset(seed=0)
    unsafe_action = 2 if kind == "discrete" else np.array([0.5], dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        env.step(unsafe_action)


def test_numpy_scalar_and_one_element_costs_are_counted() -> None:
    for cost in (np.float32(2.0), np.int64(2), np.array([2.0])):
        env = SafetyWrapper(CostEnv(cost=cost))
        env.reset(seed=0)
        _, _, _, _, info = env.step(2)
        assert info["cost"] == 2.0 and env.counters.unsafe_visits == 1


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_strict_stop_is_counted_by_the_model_too(kind: str) -> None:
    # Every action is unsafe for this behavior: the support itself is wrong, and strict mode must stop at once.
    support = np.array([False, False, True]) if kind == "discrete" else (np.array([0.1]), np.array([0.9]))
    wrapper = SafetyWrapper(CostEnv(kind, support=support), strict=True)
    model = SafeSupportQ("MlpPolicy", wrapper, seed=0, **TINY)
    with pytest.raises(UnsafeVisitError, match="strict mode stops"):
        model.learn(50)
    assert wrapper.counters.unsafe_visits == 1
    assert model.safety_counters.unsafe_visits == 1 and model.safety_counters.steps == 1
    assert model.safety_counters.cumulative_cost == wrapper.counters.cumulative_cost == 1.0


# --------------------------------------------------------------------------------------------------- arguments


def test_numpy_hyperparameters_are_accepted() -> None:
    model = SafeSupportQ("MlpPolicy", CostEnv(), alpha=np.float32(0.05), gamma=np.float64(0.9), seed=0, **TINY)
    assert model.current_alpha() == pytest.approx(0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size=2.5 must be an integer >= 1"),
        ({"tau": "0.01"}, "tau='0.01' must be a number"),
        ({"gamma": 1.5}, r"gamma=1.5 must be a discount factor in \[0, 1\]"),
        ({"alpha": True}, "alpha=True is invalid"),
        ({"alpha": lambda progress: progress - 0.5}, "alpha schedule gives 0.0 at remaining progress 0.5"),
        ({"target_update_interval": 1.5}, "target_update_interval=1.5 must be an integer"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    arguments = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        SafeSupportQ("MlpPolicy", CostEnv(), **arguments)


# ----------------------------------------------------------------------------------------------- replay buffers


class CycleMaskEnv(gym.Env):
    """Discrete, 3 actions; the state is a counter shown one-hot, and action ``t % 3`` is the unsafe one."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self._t % 3]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = int(self.np_random.integers(3))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        cost = float(int(action) == self._t % 3)
        self._t += 1
        return self._obs(), 0.0, False, self._t % 7 == 0, {"cost": cost}

    def action_masks(self) -> np.ndarray:
        return np.arange(3) != self._t % 3


def _mask_of(observations: np.ndarray) -> np.ndarray:
    return np.arange(3)[None] != observations.argmax(axis=-1)[:, None]


def test_training_stopped_by_a_callback_keeps_supports_aligned() -> None:
    # A callback returning False between env.step and the storage leaves SB3's `_last_obs` one step behind the env.
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAfter(BaseCallback):
        def __init__(self, steps: int) -> None:
            super().__init__()
            self.steps = steps

        def _on_step(self) -> bool:
            return self.n_calls < self.steps

    model = SafeSupportQ("MlpPolicy", CycleMaskEnv(), seed=0, **TINY)
    for cycle in range(12):
        model.learn(1_000, callback=StopAfter(3 + cycle % 4), reset_num_timesteps=False)
    buffer = model.replay_buffer
    n = buffer.size()
    assert n > 30
    np.testing.assert_array_equal(buffer.supports[:n, 0], _mask_of(buffer.observations[:n, 0]))
    assert model.safety_counters.unsafe_visits == 0
    # Every step the environment took is counted by the model too, the interrupted ones included.
    (wrapper_counters,) = model.env.get_attr("counters")
    assert model.safety_counters.steps == wrapper_counters.steps == model.num_timesteps


def test_replay_buffer_filled_by_hand_with_supports() -> None:
    from sb3_safeq import SafeReplayBuffer

    env = SafetyWrapper(CycleMaskEnv())
    buffer = SafeReplayBuffer(50, env.observation_space, env.action_space)
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        mask = env.action_masks()
        action = int(np.flatnonzero(mask)[0])
        next_obs, reward, terminated, _, info = env.step(action)
        buffer.add(
            obs[None],
            next_obs[None],
            np.array([[action]]),
            np.array([reward]),
            np.array([terminated]),
            [info],
            supports=mask[None],
        )
        obs = next_obs
    np.testing.assert_array_equal(buffer.supports[:10, 0], _mask_of(buffer.observations[:10, 0]))
    np.testing.assert_array_equal(buffer.next_supports[:10, 0], _mask_of(buffer.next_observations[:10, 0]))
    with pytest.raises(RuntimeError, match=r"pass `add\(..., infos, supports=...\)`"):
        buffer.add(obs[None], obs[None], np.array([[0]]), np.array([0.0]), np.array([False]), [info])
    with pytest.raises(ValueError, match=r"supports has shape \(3, 1\), expected \(1, 3\)"):
        buffer.add(
            obs[None], obs[None], np.array([[0]]), np.array([0.0]), np.array([False]), [info], supports=mask[None].T
        )
    with pytest.raises(ValueError, match="exactly 0/1"):
        buffer.add(
            obs[None],
            obs[None],
            np.array([[0]]),
            np.array([0.0]),
            np.array([False]),
            [info],
            supports=np.array([[1.0, 0.5, 0.0]]),
        )


def test_foreign_replay_buffers_are_refused(tmp_path: Any) -> None:
    from stable_baselines3 import DQN

    dqn = DQN("MlpPolicy", CycleMaskEnv(), learning_starts=10, buffer_size=100, seed=0)
    dqn.learn(20)
    dqn.save_replay_buffer(tmp_path / "dqn.pkl")
    model = SafeSupportQ("MlpPolicy", CycleMaskEnv(), seed=0, **TINY)
    with pytest.raises(ValueError, match="stores no safe supports"):
        model.load_replay_buffer(tmp_path / "dqn.pkl")
    other = SafeSupportQ("MlpPolicy", CostEnv(), seed=0, **TINY)
    other.learn(30)
    other.save_replay_buffer(tmp_path / "other.pkl")
    with pytest.raises(ValueError, match="load a buffer saved from the same environment"):
        model.load_replay_buffer(tmp_path / "other.pkl")


# ----------------------------------------------------------------------------------------------- action wrappers


def test_safe_boxes_are_carried_through_rescale_action() -> None:
    from gymnasium.wrappers import RescaleAction

    import sb3_safeq  # noqa: F401  (registers the safe environments)

    env = RescaleAction(gym.make("SafeDoubleIntegrator-v0"), np.float32(-2.0), np.float32(2.0))
    inner = env.env.unwrapped
    wrapper = SafetyWrapper(env)
    wrapper.reset(seed=0)
    low, high = wrapper.safe_action_bounds()
    inner_low, inner_high = inner.safe_action_bounds()
    np.testing.assert_allclose(low, 2.0 * inner_low, rtol=1e-6)  # [-1, 1] -> [-2, 2]
    np.testing.assert_allclose(high, 2.0 * inner_high, rtol=1e-6)
    model = SafeSupportQ(
        "MlpPolicy",
        RescaleAction(gym.make("SafeDoubleIntegrator-v0"), np.float32(-2.0), np.float32(2.0)),
        seed=0,
        **TINY,
    )
    model.learn(600)
    counters = model.safety_counters
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0 and counters.empty_support_states == 0


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_unknown_action_wrappers_under_the_support_are_refused(kind: str) -> None:
    from gymnasium.wrappers import TransformAction

    env = CostEnv(kind)
    flipped = TransformAction(env, lambda action: action, env.action_space)  # could remap actions arbitrarily
    with pytest.raises(ValueError, match="TransformAction changes the actions between the agent and the environment"):
        SafetyWrapper(flipped)
    with pytest.raises(ValueError, match="TransformAction changes the actions between the agent"):
        SafeSupportQ("MlpPolicy", flipped, **TINY)


def test_action_wrappers_above_the_safety_wrapper_are_refused() -> None:
    from gymnasium.wrappers import RescaleAction

    env = RescaleAction(SafetyWrapper(CostEnv("box")), np.float32(-2.0), np.float32(2.0))
    with pytest.raises(ValueError, match=r"RescaleAction changes the actions above the SafetyWrapper"):
        SafeSupportQ("MlpPolicy", env, **TINY)


# ------------------------------------------------------------------------------- arguments DQN / SAC also take


def test_n_step_returns_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="n_steps=3: SafeSupportQ takes one-step targets only"):
        SafeSupportQ("MlpPolicy", CostEnv(), n_steps=3, **TINY)
    SafeSupportQ("MlpPolicy", CostEnv(), n_steps=1, **TINY)  # SB3's default is accepted


def test_share_features_extractor_is_accepted_false_and_refused_true() -> None:
    # SAC's policy_kwargs carry share_features_extractor; SafeSupportQ's critic must stay independent of the head.
    box_tiny = {**TINY, "policy_kwargs": {"net_arch": [8], "share_features_extractor": False}}
    model = SafeSupportQ("MlpPolicy", CostEnv("box"), **box_tiny)
    assert model.critic.features_extractor is not model.actor.features_extractor
    shared = {**TINY, "policy_kwargs": {"net_arch": [8], "share_features_extractor": True}}
    with pytest.raises(ValueError, match="share_features_extractor=True is not supported"):
        SafeSupportQ("MlpPolicy", CostEnv("box"), **shared)


def test_tau_zero_keeps_the_target_network_fixed() -> None:
    import torch as th

    model = SafeSupportQ("MlpPolicy", CostEnv(), tau=0.0, seed=0, **TINY)
    target = [parameter.detach().clone() for parameter in model.critic_target.parameters()]
    model.learn(60)
    assert all(th.equal(a, b) for a, b in zip(target, model.critic_target.parameters(), strict=True))
    assert not all(th.equal(a, b) for a, b in zip(target, model.critic.parameters(), strict=True))


def _always_unsafe_env() -> gym.Env:
    # Module-level (picklable) factory: the only "safe" action of this mask is the unsafe one.
    return SafetyWrapper(CostEnv(support=np.array([False, False, True])), strict=True)


def test_strict_stop_in_a_subprocess_worker_is_named() -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env = SubprocVecEnv([_always_unsafe_env], start_method="spawn")
    model = SafeSupportQ("MlpPolicy", env, seed=0, **TINY)
    with pytest.raises(RuntimeError, match=r"worker process of the SubprocVecEnv ended .* UnsafeVisitError"):
        model.learn(50)


def test_a_checkpoint_includes_the_step_it_is_taken_at(tmp_path: Any) -> None:
    # CheckpointCallback runs at step N: its counters and its replay buffer must both hold step N (SB3 itself stores
    # the transition after the callbacks, so a resumed run would miss it, and an unsafe visit at that step with it).
    from stable_baselines3.common.callbacks import CheckpointCallback

    model = SafeSupportQ("MlpPolicy", CycleMaskEnv(), seed=0, **TINY)
    model.learn(100, callback=CheckpointCallback(save_freq=25, save_path=str(tmp_path), save_replay_buffer=True))
    for steps in (25, 50, 75, 100):
        loaded = SafeSupportQ.load(tmp_path / f"rl_model_{steps}_steps.zip")
        assert loaded.num_timesteps == loaded.safety_counters.steps == steps
        loaded.load_replay_buffer(tmp_path / f"rl_model_replay_buffer_{steps}_steps.pkl")
        assert loaded.replay_buffer.size() == steps
        # The checkpoint's own step is the last row, identical to the one the running model holds.
        np.testing.assert_array_equal(
            loaded.replay_buffer.next_observations[steps - 1], model.replay_buffer.next_observations[steps - 1]
        )
    assert model.safety_counters.steps == 100
