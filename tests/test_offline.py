"""Offline SafeSupportQ: datasets with supports (Minari, saved buffers, arrays), their validation, and learn_offline."""

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.cli import main as cli_main
from sb3_safeq.common.tabular import masked_uniform_behavior, reachable_states, soft_value_iteration
from sb3_safeq.offline import InvalidDatasetError, SafeTransitions, collect_safe_dataset
from tests.helpers import cliff_dataset_without_supports

minari = pytest.importorskip("minari")

CLIFF = "SafeCliffWalking-v0"
POINT_MASS = "SafePointMass-v0"
USER_ENVS = Path(__file__).resolve().parent / "user_envs"
SMALL_BOX_NET = {"net_arch": [32, 32]}


@pytest.fixture(autouse=True)
def local_minari_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its datasets into its own folder: never the user's, never the hub."""
    folder = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(folder))
    return folder


def deploy(model: SafeSupportQ, env_id: str, n_episodes: int = 2) -> tuple[float, Any]:
    """:return: the mean return of the deterministic policy given each state's support, and the wrapper's counters"""
    env = SafetyWrapper(gym.make(env_id))
    kind = env.support_kind
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=episode)
        done, episode_return = False, 0.0
        while not done:
            support = getattr(env, kind.method_name)()
            action, _ = model.predict(observation, deterministic=True, **{kind.predict_keyword: support})
            observation, reward, terminated, truncated, _ = env.step(int(action) if kind.name == "mask" else action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return float(np.mean(returns)), env.counters


def cliff_dataset() -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """
    :return: one transition for every safe action of every reachable state of the (deterministic) cliff walk, read
        from its model, as plain arrays; the states; the unwrapped environment
    """
    unwrapped = gym.make(CLIFF).unwrapped
    table = unwrapped.safe_action_table
    n_states, n_actions = table.shape
    start = int(np.flatnonzero(unwrapped.initial_state_distrib)[0])
    reachable = reachable_states(unwrapped.P, n_states, n_actions, [start], table)
    states = np.flatnonzero(reachable & table.any(axis=1) & (np.arange(n_states) != n_states - 1))  # goal excluded
    rows = []
    for state in states:
        for action in np.flatnonzero(table[state]):
            ((probability, next_state, reward, terminated),) = unwrapped.P[state][action]
            assert probability == 1.0
            rows.append((state, action, reward, next_state, terminated))
    observations, actions, rewards, next_observations, terminations = (
        np.array(column) for column in zip(*rows, strict=True)
    )
    arrays = {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "next_observations": next_observations,
        "terminations": terminations,
        "truncations": np.zeros_like(terminations),
        "supports": table[observations],
        "next_supports": table[next_observations],
    }
    return arrays, states, unwrapped


def test_offline_training_reaches_the_soft_optimal_q() -> None:
    # Every safe (state, action) pair once: the data's behavior is the masked-uniform beta, and the fixed point of the
    # sampled backup is the tabular one. alpha = 1 keeps the soft values far from the hard ones.
    alpha, gamma, tolerance = 1.0, 0.99, 0.1
    arrays, states, unwrapped = cliff_dataset()
    table = unwrapped.safe_action_table
    q_star, _ = soft_value_iteration(unwrapped.P, masked_uniform_behavior(table), gamma, alpha)
    q_hard, _ = soft_value_iteration(unwrapped.P, masked_uniform_behavior(table), gamma, 0.0)

    model = SafeSupportQ("MlpPolicy", CLIFF, alpha=alpha, gamma=gamma, tau=0.02, learning_rate=1e-3, seed=0)
    model.learn_offline(arrays, gradient_steps=3000, log_interval=None)

    with th.no_grad():
        q_hat = model.critic(th.as_tensor(states)).numpy()
    safe = table[states]
    error = np.abs(q_hat - q_star[states])[safe]
    print(f"|Q_hat - Q*_alpha| over {safe.sum()} safe pairs: max {error.max():.4f}, mean {error.mean():.4f}")
    assert error.max() < tolerance
    assert np.abs(q_hard[states] - q_star[states])[safe].max() > 10 * tolerance  # the test tells them apart
    assert model.num_timesteps == 3000 and model.safety_counters.steps == 0  # gradient steps, no environment step


def test_round_trip_discrete_reaches_the_optimal_safe_path() -> None:
    dataset = collect_safe_dataset(CLIFF, "uniform", n_steps=2000, dataset_id="cliff/uniform-v0", seed=0)
    assert dataset.total_steps == 2000
    episode = next(iter(dataset.iterate_episodes()))
    assert episode.infos["action_mask"].shape == (len(episode) + 1, 4) and "cost" in episode.infos

    model = SafeSupportQ("MlpPolicy", CLIFF, tau=0.02, learning_rate=1e-3, seed=0)
    # 2,400 gradient steps: the default head (actor_update_interval=4 for Discrete actions) gets 600 updates; with
    # 300 (1,200 steps) it still scored -100, like the uniform logger (measured with actor_update_interval 1, 2, 4:
    # -13 at 1,200 steps for 1 and 2, at 2,400 for all three).
    model.learn_offline("cliff/uniform-v0", gradient_steps=2400, log_interval=None)
    mean_return, counters = deploy(model, CLIFF)
    assert mean_return == -13.0  # up, 11 x right, down; the uniform behavior itself scores about -100
    assert counters.out_of_support_actions == 0 and counters.unsafe_visits == 0


def test_round_trip_box_stays_in_the_boxes() -> None:
    dataset = collect_safe_dataset(POINT_MASS, "uniform", n_steps=600, dataset_id="point/uniform-v0", seed=0)
    model = SafeSupportQ("MlpPolicy", POINT_MASS, n_behavior_samples=4, policy_kwargs=SMALL_BOX_NET, seed=0)
    model.learn_offline(dataset, gradient_steps=50, log_interval=None)

    buffer = model.replay_buffer
    assert buffer.size() == 600
    # Stored as online collection stores them: actions and boxes scaled to [-1, 1], every action inside its box.
    actions, boxes = buffer.actions[:600, 0], buffer.supports[:600, 0]
    assert np.all((boxes[:, 0] <= actions) & (actions <= boxes[:, 1])) and np.abs(boxes).max() <= 1.0
    _, counters = deploy(model, POINT_MASS, n_episodes=1)
    assert counters.out_of_support_actions == 0 and counters.unsafe_visits == 0


def test_collect_command_on_a_user_package(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(USER_ENVS))
    arguments = ["collect", "--env", "LavaGrid-v0", "--steps", "300", "--dataset-id", "lava/uniform-v0"]
    assert cli_main([*arguments, "--gym-packages", "lava_envs", "--seed", "1", "--no-progress"]) == 0
    assert "300 steps" in capsys.readouterr().out
    dataset = minari.load_dataset("lava/uniform-v0")
    costs = np.concatenate([episode.infos["cost"] for episode in dataset.iterate_episodes()])
    assert dataset.total_steps == 300 and costs.max() == 0.0

    model = SafeSupportQ("MlpPolicy", gym.make("LavaGrid-v0"), seed=0)
    model.learn_offline("lava/uniform-v0", gradient_steps=20, log_interval=None)
    assert model.replay_buffer.size() == 300

    # The same id again, an unknown behavior: one line, exit code 2.
    assert cli_main([*arguments, "--gym-packages", "lava_envs", "--no-progress"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert cli_main([*arguments[:-1], "lava/other-v0", "--behavior", "greedy", "--gym-packages", "lava_envs"]) == 2
    assert "--behavior 'greedy'" in capsys.readouterr().err


class IntoTheCliff:
    """A "model" whose every action steps right: from the start that is into the cliff, outside the mask."""

    def predict(self, observation: Any, deterministic: bool = False, action_masks: Any = None) -> tuple[int, None]:
        return 1, None


def test_collect_refuses_a_behavior_outside_the_support() -> None:
    with pytest.raises(ValueError, match="outside the safe support"):
        collect_safe_dataset(CLIFF, IntoTheCliff(), n_steps=50, dataset_id="cliff/right-v0", seed=0)
    assert "cliff/right-v0" not in minari.list_local_datasets()


class StepCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def _on_step(self) -> bool:
        self.seen.append(self.num_timesteps)
        return self.num_timesteps < 30  # stops after the 30th gradient step


def test_callbacks_checkpoints_save_load_and_online_fine_tuning(tmp_path: Path) -> None:
    collect_safe_dataset(CLIFF, "uniform", n_steps=400, dataset_id="cliff/small-v0", seed=0)
    model = SafeSupportQ("MlpPolicy", CLIFF, learning_starts=0, seed=0)
    counter = StepCounter()
    model.learn_offline("cliff/small-v0", gradient_steps=100, callback=counter, log_interval=10)
    assert counter.seen == list(range(1, 31)) and model.num_timesteps == 30 and model._n_updates == 30

    checkpoints = CheckpointCallback(save_freq=20, save_path=str(tmp_path), save_replay_buffer=True)
    model.learn_offline(None, gradient_steps=40, callback=checkpoints, reset_num_timesteps=False, progress_bar=True)
    assert model.num_timesteps == 70
    assert sorted(path.name for path in tmp_path.glob("rl_model_*_steps.zip")) == [
        "rl_model_50_steps.zip",  # every 20 calls of this learn_offline, named by num_timesteps
        "rl_model_70_steps.zip",
    ]

    model.save(tmp_path / "offline.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = SafeSupportQ.load(tmp_path / "offline.zip", env=gym.make(CLIFF))
    with th.no_grad():
        observations = th.arange(36)
        assert th.equal(loaded.critic(observations), model.critic(observations))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    loaded.learn(100, reset_num_timesteps=False)  # online fine-tuning from the offline buffer
    assert loaded.num_timesteps == 170 and loaded.replay_buffer.size() == 500
    assert loaded.safety_counters.steps == 100 and loaded.safety_counters.unsafe_visits == 0
    assert loaded._n_updates > 70

    # A saved buffer is a dataset too, for a model loaded without an environment.
    offline_only = SafeSupportQ.load(tmp_path / "offline.zip")
    offline_only.learn_offline(tmp_path / "buffer.pkl", gradient_steps=5, log_interval=None)
    assert offline_only.replay_buffer.size() == 400


# ------------------------------------------------------------------ bad datasets


def point_mass_arrays(n_transitions: int = 20) -> dict[str, np.ndarray]:
    """:return: a small valid dataset of the point mass as plain arrays (uniform actions inside the boxes)"""
    env = SafetyWrapper(gym.make(POINT_MASS))
    rng = np.random.default_rng(0)
    columns: dict[str, list] = {key: [] for key in SafeTransitions.__dataclass_fields__}
    observation, info = env.reset(seed=0)
    for _ in range(n_transitions):
        box = info["safe_action_bounds"]
        action = rng.uniform(box[0], box[1]).astype(np.float32)
        next_observation, reward, terminated, truncated, info = env.step(action)
        for key, value in zip(
            columns,
            (observation, action, reward, next_observation, terminated, truncated, box, info["safe_action_bounds"]),
            strict=False,
        ):
            columns[key].append(value)
        columns["costs"].append(info["cost"])
        observation = next_observation
    return {key: np.array(values) for key, values in columns.items()}


def cliff_arrays() -> dict[str, np.ndarray]:
    return cliff_dataset()[0]


def _set(arrays: dict[str, np.ndarray], key: str, index: Any, value: Any) -> dict[str, np.ndarray]:
    changed = {name: array.copy() for name, array in arrays.items()}
    target = changed[key].astype(float) if isinstance(value, float) and np.isnan(value) else changed[key]
    target[index] = value
    changed[key] = target
    return changed


def _unsafe_cliff_action(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    first_forbidden = int(np.flatnonzero(~arrays["supports"].all(axis=1))[0])
    action = int(np.flatnonzero(~arrays["supports"][first_forbidden])[0])
    return _set(arrays, "actions", first_forbidden, action)


BAD_DATASETS = {
    "missing rewards": (lambda a: {k: v for k, v in a.items() if k != "rewards"}, "no 'rewards'"),
    "no supports": (lambda a: {k: v for k, v in a.items() if "supports" not in k}, "estimated"),
    "unknown key": (lambda a: {**a, "dones": a["terminations"]}, "unknown"),
    "short actions": (lambda a: {**a, "actions": a["actions"][:-1]}, "actions has"),
    "observations of another space": (lambda a: {**a, "observations": np.ones((len(a["rewards"]), 7))}, "shape"),
    "NaN reward": (lambda a: _set(a, "rewards", 3, np.nan), r"rewards\[3\] is nan"),
    "negative cost": (lambda a: {**a, "costs": -np.ones(len(a["rewards"]))}, "cost is >= 0"),
}


@pytest.mark.parametrize("env_id", [CLIFF, POINT_MASS])
@pytest.mark.parametrize("problem", sorted(BAD_DATASETS))
def test_bad_datasets_fail_with_clear_messages(env_id: str, problem: str) -> None:
    arrays = cliff_arrays() if env_id == CLIFF else point_mass_arrays()
    breaker, message = BAD_DATASETS[problem]
    model = SafeSupportQ("MlpPolicy", env_id, policy_kwargs=None if env_id == CLIFF else SMALL_BOX_NET)
    with pytest.raises(InvalidDatasetError, match=message):
        model.learn_offline(breaker(arrays), gradient_steps=1)
    assert model.replay_buffer.size() == 0  # nothing was written


@pytest.mark.parametrize(
    "env_id, breaker, message",
    [
        (CLIFF, _unsafe_cliff_action, "1 of 137 actions lie outside"),
        (CLIFF, lambda a: {**a, "supports": a["supports"][:, :3]}, r"supports\[0\] gave an array of shape \(3,\)"),
        (CLIFF, lambda a: _set(a, "next_supports", 0, False), "empty support"),
        (CLIFF, lambda a: {**a, "actions": a["actions"] + 0.5}, "integer indices"),
        (POINT_MASS, lambda a: _set(a, "actions", 2, a["supports"][2, 1] + 0.05), "1 of 20 actions lie outside"),
        (POINT_MASS, lambda a: _set(a, "actions", 4, np.nan), r"actions\[4\] .* NaN"),
        (POINT_MASS, lambda a: _set(a, "observations", 5, np.nan), r"observations\[5\] holds NaN"),
        (POINT_MASS, lambda a: {**a, "supports": a["supports"][:, 0]}, r"supports\[0\] gave bounds of shape \(2,\)"),
        (POINT_MASS, lambda a: _set(a, "supports", 1, 5.0), "outside the action space"),
    ],
)
def test_supports_inconsistent_with_actions_or_the_space_are_refused(env_id: str, breaker: Any, message: str) -> None:
    arrays = cliff_arrays() if env_id == CLIFF else point_mass_arrays()
    model = SafeSupportQ("MlpPolicy", env_id, policy_kwargs=None if env_id == CLIFF else SMALL_BOX_NET)
    with pytest.raises(InvalidDatasetError, match=message):
        model.learn_offline(breaker(arrays), gradient_steps=1)


def test_minari_datasets_without_supports_or_of_another_env_are_refused(tmp_path: Path) -> None:
    cliff_dataset_without_supports()
    model = SafeSupportQ("MlpPolicy", CLIFF)
    with pytest.raises(InvalidDatasetError, match=r"no infos\['action_mask'\].*estimated"):
        model.learn_offline("cliff/nosupport-v0", gradient_steps=1)
    with pytest.raises(InvalidDatasetError, match="No local Minari dataset 'cliff/absent-v0'"):
        model.learn_offline("cliff/absent-v0", gradient_steps=1)
    with pytest.raises(InvalidDatasetError, match="spaces"):
        SafeSupportQ("MlpPolicy", "SafeFrozenLake8x8-v0").learn_offline("cliff/nosupport-v0", gradient_steps=1)

    dqn = DQN("MlpPolicy", CLIFF, buffer_size=100, learning_starts=10)
    dqn.learn(20)
    with pytest.raises(InvalidDatasetError, match="stores the safe support"):
        model.learn_offline(dqn.replay_buffer, gradient_steps=1)


def test_learn_offline_arguments_are_checked() -> None:
    model = SafeSupportQ("MlpPolicy", CLIFF, buffer_size=10)
    with pytest.raises(ValueError, match="gradient_steps"):
        model.learn_offline(cliff_arrays(), gradient_steps=0)
    with pytest.raises(InvalidDatasetError, match="buffer_size >= 137"):
        model.learn_offline(cliff_arrays(), gradient_steps=1)
    with pytest.raises(InvalidDatasetError, match="empty"):
        model.learn_offline(None, gradient_steps=1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
