"""
The safety record after a crash: a checkpoint's counters completed with the episodes that ``monitor.csv`` logged
after it (:func:`sb3_safeq.recover_safety_record`, ``sb3-safeq safety-record``).
"""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import SafeSupportQ, SafetyWrapper, recover_safety_record
from sb3_safeq.cli import main as cli_main
from tests.helpers import SMALL

SAFETY_COLUMNS = ("episode_cost", "episode_unsafe_visits")


class CostlyEnv(gym.Env):
    """Three actions, all in the support; action 0 costs 1.5 (so unsafe visits happen); episodes of 3 to 9 steps."""

    observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._left = int(self.np_random.integers(3, 10))
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._left -= 1
        return np.zeros(1, dtype=np.float32), 0.0, self._left == 0, False, {"cost": 1.5 * float(int(action) == 0)}

    def action_masks(self) -> np.ndarray:
        return np.ones(3, dtype=bool)


def _monitored_envs(folder: Path, n_envs: int) -> DummyVecEnv:
    # The Monitor outside the SafetyWrapper records its episode totals; files named 0.monitor.csv, 1.monitor.csv, ...
    def make(rank: int) -> Any:
        return lambda: Monitor(SafetyWrapper(CostlyEnv()), str(folder / str(rank)), info_keywords=SAFETY_COLUMNS)

    return DummyVecEnv([make(rank) for rank in range(n_envs)])


@pytest.mark.parametrize("n_envs, save_freq", [(1, 40), (2, 45), (3, 28), (1, 37)])
def test_a_checkpoint_plus_the_logged_episodes_is_the_record_up_to_the_crash(
    tmp_path: Path, n_envs: int, save_freq: int
) -> None:
    # The run goes on after its last checkpoint and then "crashes": the truth is the running model's counters, less
    # the steps of the episodes still in progress at the crash that came after the checkpoint (no file holds them).
    model = SafeSupportQ("MlpPolicy", _monitored_envs(tmp_path, n_envs), seed=0, **SMALL)
    model.learn(150 * n_envs, callback=CheckpointCallback(save_freq, str(tmp_path / "checkpoints")))
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.zip"), key=lambda path: int(path.stem.split("_")[2]))
    last_checkpoint = checkpoints[-1]
    calls_after = (model.num_timesteps - int(last_checkpoint.stem.split("_")[2])) // n_envs
    assert calls_after > 0

    record = recover_safety_record(last_checkpoint, tmp_path)
    truth, at_crash = model.safety_counters, model.episodes_in_progress
    at_checkpoint = SafeSupportQ.load(last_checkpoint).episodes_in_progress
    # An episode longer than the steps after the checkpoint began before it: only its part after it is lost.
    began_before = at_crash.steps > calls_after
    lost_steps = np.where(began_before, calls_after, at_crash.steps)
    lost_unsafe = np.where(began_before, at_crash.unsafe_visits - at_checkpoint.unsafe_visits, at_crash.unsafe_visits)
    lost_cost = np.where(began_before, at_crash.cost - at_checkpoint.cost, at_crash.cost)
    assert truth.unsafe_visits > 0
    assert record.total.steps == truth.steps - lost_steps.sum()
    assert record.total.unsafe_visits == truth.unsafe_visits - lost_unsafe.sum()
    assert record.total.cumulative_cost == pytest.approx(truth.cumulative_cost - lost_cost.sum())
    # Episodes are at most 9 steps long: with 10 steps after the checkpoint, every episode it cut has ended.
    assert record.unfinished_ranks == tuple(np.flatnonzero(began_before))
    assert (calls_after < 10) == bool(record.unfinished_ranks)
    assert record.checkpoint.steps == int(last_checkpoint.stem.split("_")[2])
    assert (record.episodes_after_checkpoint > 0) == (len(record.unfinished_ranks) < n_envs)
    assert len(record.files) == n_envs

    # The same from the model object and from the command line.
    loaded = SafeSupportQ.load(last_checkpoint)
    assert recover_safety_record(loaded, [tmp_path / f"{rank}.monitor.csv" for rank in range(n_envs)]) == record


def test_the_command_prints_the_record(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = SafeSupportQ("MlpPolicy", _monitored_envs(tmp_path, 1), seed=0, **SMALL)
    model.learn(120)
    model.save(tmp_path / "model.zip")
    record = recover_safety_record(tmp_path / "model.zip", tmp_path / "0.monitor.csv")
    assert cli_main(["safety-record", str(tmp_path / "model.zip"), str(tmp_path)]) == 0
    total_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    assert total_line.split()[1:3] == [str(record.total.steps), str(record.total.unsafe_visits)]
    # Saved at the end of `learn`: nothing was logged after it.
    assert record.since_checkpoint.steps == 0 and record.total == record.checkpoint


def test_files_that_cannot_be_matched_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = SafeSupportQ("MlpPolicy", _monitored_envs(tmp_path, 2), seed=0, **SMALL)
    model.learn(60)
    with pytest.raises(ValueError, match=r"one file per environment, named 0.monitor.csv .. 1.monitor.csv"):
        recover_safety_record(model, tmp_path / "0.monitor.csv")
    # A Monitor without the SafetyWrapper's columns.
    plain = tmp_path / "plain"
    plain.mkdir()
    env = Monitor(SafetyWrapper(CostlyEnv()), str(plain / "0"))
    env.reset(seed=0)
    while not env.step(1)[2]:
        pass
    env.close()
    single = SafeSupportQ("MlpPolicy", _monitored_envs(tmp_path / "single", 1), seed=0, **SMALL)
    single.learn(30)
    with pytest.raises(ValueError, match=r"info_keywords=\('episode_cost', 'episode_unsafe_visits'\)"):
        recover_safety_record(single, plain)
    # A model that never learned has no record of episodes in progress; the command says so in one line.
    SafeSupportQ("MlpPolicy", _monitored_envs(tmp_path / "fresh", 1), seed=0, **SMALL).save(tmp_path / "fresh.zip")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["safety-record", str(tmp_path / "fresh.zip"), str(tmp_path / "single")])
    assert exit_info.value.code == 2
    assert "holds no record of its episodes in progress" in capsys.readouterr().err
