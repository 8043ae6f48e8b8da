"""
Issue 16: a user's own environments (tests/user_envs/lava_envs, outside sb3_safeq) through ``sb3-safeq train``,
``record_video`` and ``plot-safety``, as subprocesses: TensorBoard has ``safety/*`` for every algorithm, evaluation
during training records cost and unsafe visits, a video and a cost plot are written.
"""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from sb3_safeq.envs import SAFE_CONSTRAINED_ENV_IDS, SAFE_CONTINUOUS_ENV_IDS, SAFE_DISCRETE_ENV_IDS

ROOT = Path(__file__).resolve().parents[1]
USER_ENVS = ROOT / "tests" / "user_envs"

#: One small entry per environment; the packaged files have none for a user's environment.
CONF = """
LavaGrid-v0:
  n_timesteps: 300
  policy: MlpPolicy
  {extra}
SafeReach-v0:
  n_timesteps: 300
  policy: MlpPolicy
  {extra}
"""
#: Hyperparameters that make 300 steps learn something at all, per algorithm kind.
OFF_POLICY = "learning_starts: 50\n  batch_size: 32"
ON_POLICY = "n_steps: 64\n  batch_size: 32"


def run_sb3_safeq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """:return: ``python -m sb3_safeq <args>`` run in ``cwd`` with the user's environment package importable"""
    path = os.pathsep.join(filter(None, [str(USER_ENVS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "sb3_safeq", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def train(algo: str, env_id: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    conf = cwd / "conf.yml"
    conf.write_text(CONF.format(extra=ON_POLICY if algo == "ppo_mask" else OFF_POLICY))
    return run_sb3_safeq(
        "train",
        *("--algo", algo, "--env", env_id, "--gym-packages", "lava_envs", "--conf-file", str(conf)),
        *("-n", "300", "--seed", "0", "-f", "logs", "-tb", "tb", "--eval-freq", "150", "--eval-episodes", "2"),
        *extra,
        cwd=cwd,
    )


def safety_scalars(tb_dir: Path) -> dict[str, float]:
    """:return: the last value of every ``safety/*`` scalar of the single TensorBoard run under ``tb_dir``"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = tb_dir.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(event_file))
    accumulator.Reload()
    return {
        tag: accumulator.Scalars(tag)[-1].value for tag in accumulator.Tags()["scalars"] if tag.startswith("safety/")
    }


@pytest.mark.parametrize(
    ("algo", "env_id"),
    [
        ("safeq", "LavaGrid-v0"),
        ("dqn", "LavaGrid-v0"),
        ("ppo_mask", "LavaGrid-v0"),
        ("safeq", "SafeReach-v0"),
        ("sac", "SafeReach-v0"),
    ],
)
def test_train_logs_safety_and_evaluates_cost_for_every_algorithm(algo: str, env_id: str, tmp_path: Path) -> None:
    assert_ok(train(algo, env_id, tmp_path))
    scalars = safety_scalars(tmp_path / "tb")
    expected = {"safety/unsafe_visits", "safety/cumulative_cost", "safety/out_of_support_actions"}
    assert expected <= set(scalars), sorted(scalars)
    run_dir = tmp_path / "logs" / algo / f"{env_id}_1"
    evaluations = np.load(run_dir / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [150, 300]
    assert evaluations["costs"].shape == (2, 2) and evaluations["unsafe_visits"].shape == (2,)
    if algo in ("safeq", "ppo_mask"):
        # Trained from the support and evaluated with it: nothing unsafe, in training or evaluation.
        assert scalars["safety/unsafe_visits"] == 0 and scalars["safety/out_of_support_actions"] == 0
        assert evaluations["unsafe_visits"].sum() == 0
    if algo in ("dqn", "sac"):
        # Unshielded baselines explore outside the support, and the logger counts it (the monitor agrees).
        assert scalars["safety/out_of_support_actions"] > 0
    header = next(line for line in (run_dir / "0.monitor.csv").read_text().splitlines()[1:2])
    assert header.split(",")[-2:] == ["episode_cost", "episode_unsafe_visits"]


def test_no_safety_logger_switch_enjoy_window_error_video_and_cost_plot(tmp_path: Path) -> None:
    assert_ok(train("dqn", "LavaGrid-v0", tmp_path, "--no-safety-logger"))
    assert not safety_scalars(tmp_path / "tb")
    # enjoy with a window on an environment that renders rgb_array only: one line naming --no-render.
    result = run_sb3_safeq(
        "enjoy", "--algo", "dqn", "--env", "LavaGrid-v0", "--gym-packages", "lava_envs", "-f", "logs", cwd=tmp_path
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--no-render" in result.stderr and "record_video" in result.stderr

    # record_video: a model acting in the support, then a baseline.
    assert_ok(train("safeq", "LavaGrid-v0", tmp_path))
    videos = tmp_path / "videos"
    result = run_sb3_safeq(
        "record_video",
        "--algo",
        "safeq",
        "--env",
        "LavaGrid-v0",
        "--gym-packages",
        "lava_envs",
        "-f",
        "logs",
        "-n",
        "40",
        "-o",
        str(videos),
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "safe support passed to predict" in result.stdout and "Unsafe visits: 0" in result.stdout
    (video,) = videos.glob("*.mp4")
    assert video.name.startswith("final-model-safeq-LavaGrid-v0") and video.stat().st_size > 1000
    # A registered baseline goes through the same flow (dqn acts on the whole action space, no support to pass).
    baseline_videos = tmp_path / "baseline_videos"
    result = run_sb3_safeq(
        "record_video",
        *("--algo", "dqn", "--env", "LavaGrid-v0", "--gym-packages", "lava_envs", "-f", "logs"),
        *("-n", "40", "-o", str(baseline_videos)),
        cwd=tmp_path,
    )
    assert_ok(result)
    (video,) = baseline_videos.glob("*.mp4")
    assert video.name.startswith("final-model-dqn-LavaGrid-v0") and video.stat().st_size > 1000

    png = tmp_path / "plots" / "cost.png"
    result = run_sb3_safeq(
        "plot-safety", "-f", "logs", "--algos", "safeq", "dqn", "--envs", "LavaGrid-v0", "-o", str(png), cwd=tmp_path
    )
    assert_ok(result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # A folder without a run, or monitor files without the cost columns: one line naming the fix, exit code 2.
    result = run_sb3_safeq("plot-safety", "-f", "logs", "--algos", "sac", "--envs", "LavaGrid-v0", cwd=tmp_path)
    assert result.returncode == 2 and "no monitor files for sac on LavaGrid-v0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    plain = tmp_path / "plain" / "dqn" / "LavaGrid-v0_1"
    plain.mkdir(parents=True)
    (plain / "0.monitor.csv").write_text('#{"t_start": 0, "env_id": "LavaGrid-v0"}\nr,l,t\n-5.0,5,0.1\n')
    result = run_sb3_safeq("plot-safety", "-f", "plain", "--algos", "dqn", "--envs", "LavaGrid-v0", cwd=tmp_path)
    assert result.returncode == 2 and "info_keywords" in result.stderr and "episode_cost" in result.stderr


def test_tensorboard_log_without_tensorboard_is_one_line(tmp_path: Path) -> None:
    # A stand-in package that hides tensorboard: find_spec("tensorboard") answers None.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'tensorboard' else _find(name, *a)\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), str(USER_ENVS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "sb3_safeq", "train", "--algo", "dqn", "--env", "SafeCliffWalking-v0", "-tb", "tb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "sb3-safeq train: error: -tb/--tensorboard-log needs TensorBoard, which is not installed: install the 'zoo' "
        'extra (pip install "sb3-safeq[zoo]") or pip install tensorboard.'
    ]


@pytest.mark.parametrize("env_id", [*SAFE_DISCRETE_ENV_IDS, *SAFE_CONTINUOUS_ENV_IDS, *SAFE_CONSTRAINED_ENV_IDS])
def test_every_bundled_environment_renders_rgb_array_frames(env_id: str) -> None:
    # record_video needs frames; without pygame the toy-text and CartPole environments draw their own.
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    for _ in range(3):
        env.step(env.action_space.sample())
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape == first.shape and frame.min() < frame.max()  # a picture, not a blank canvas


def test_an_environment_without_a_support_trains_as_in_rl_zoo3(tmp_path: Path) -> None:
    # No action_masks(): no default safety wrapper nor cost columns (they would fail), the logger still runs.
    # A fixed seed and 300 steps: the logs are printed when episodes end (every 4th), which a random seed could delay
    # past a shorter run.
    (tmp_path / "conf.yml").write_text("CartPole-v1:\n  n_timesteps: 300\n  policy: MlpPolicy\n")
    result = run_sb3_safeq(
        "train", "--algo", "dqn", "--env", "CartPole-v1", "--conf-file", "conf.yml", "-n", "300", "-f", "logs",
        "--seed", "0", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    assert "safety/" in result.stdout
    header = (tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "0.monitor.csv").read_text().splitlines()[1]
    assert header == "r,l,t"
