"""SafeEvalCallback: SB3's EvalCallback evaluating inside the safe support, choosing the best model among safe runs."""

import inspect
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import EvalCallback

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeEvalCallback, SafeSupportQ, SafetyWrapper

TINY = {"learning_starts": 50, "batch_size": 16, "buffer_size": 2000, "policy_kwargs": {"net_arch": [16]}}


@pytest.mark.parametrize("env_id", ["SafeCliffWalking-v0", "SafePointMass-v0"])
def test_safeq_is_evaluated_inside_the_support(env_id: str, tmp_path: Path) -> None:
    model = SafeSupportQ("MlpPolicy", env_id, seed=0, **TINY)
    callback = SafeEvalCallback(
        gym.make(env_id), n_eval_episodes=2, eval_freq=100, log_path=str(tmp_path), best_model_save_path=str(tmp_path)
    )
    model.learn(300, callback=callback)
    log = np.load(tmp_path / "evaluations.npz")
    assert list(log["timesteps"]) == [100, 200, 300]
    assert list(log["unsafe_visits"]) == [0, 0, 0]
    assert log["costs"].shape == (3, 2) and np.all(log["costs"] == 0)
    assert (tmp_path / "best_model.zip").exists() and callback.best_mean_reward > -np.inf


def test_plain_eval_callback_acts_without_the_support() -> None:
    # The contrast the docs state: SB3's EvalCallback calls predict() with no support at all.
    model = SafeSupportQ("MlpPolicy", "SafeCliffWalking-v0", seed=0, **TINY)
    calls: list[dict[str, Any]] = []
    predict = model.predict

    def recording_predict(
        observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False, **supports: Any
    ) -> Any:
        calls.append(supports)
        return predict(observation, state, episode_start, deterministic, **supports)

    # The signature SafeEvalCallback inspects to know that the model takes masks.
    recording_predict.__signature__ = inspect.signature(predict)  # type: ignore[attr-defined]
    model.predict = recording_predict  # type: ignore[method-assign]
    env = SafetyWrapper(gym.make("SafeCliffWalking-v0"))
    model.learn(60, callback=EvalCallback(env, n_eval_episodes=1, eval_freq=60, warn=False))
    assert calls and all(call.get("action_masks") is None for call in calls)
    calls.clear()
    model.learn(60, callback=SafeEvalCallback(gym.make("SafeCliffWalking-v0"), n_eval_episodes=1, eval_freq=60))
    assert calls and all(call.get("action_masks") is not None for call in calls)


class OneUnsafeActionEnv(gym.Env):
    """Two actions; action 1 pays reward 1 and cost 1 (unsafe), action 0 pays nothing. Episodes of 5 steps."""

    observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        unsafe = int(action) == 1
        return np.zeros(1, dtype=np.float32), float(unsafe), self._t >= 5, False, {"cost": float(unsafe)}

    def action_masks(self) -> np.ndarray:
        return np.array([True, False])


def test_unsafe_evaluations_never_give_the_best_model(tmp_path: Path) -> None:
    # A DQN that prefers the rewarding unsafe action scores 5 per episode: a plain EvalCallback would save it.
    model = DQN("MlpPolicy", SafetyWrapper(OneUnsafeActionEnv()), learning_starts=1000, seed=0)
    with th.no_grad():
        model.q_net.q_net[-1].bias.copy_(th.tensor([0.0, 100.0]))
    callback = SafeEvalCallback(
        OneUnsafeActionEnv(),
        n_eval_episodes=2,
        eval_freq=10,
        log_path=str(tmp_path),
        best_model_save_path=str(tmp_path),
    )
    model.learn(20, callback=callback)
    log = np.load(tmp_path / "evaluations.npz")
    assert list(log["unsafe_visits"]) == [10, 10] and callback.last_mean_reward == 5.0
    assert callback.best_mean_reward == -np.inf and not (tmp_path / "best_model.zip").exists()
