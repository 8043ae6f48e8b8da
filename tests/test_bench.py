"""The benchmark runner (``sb3-safeq bench``): outputs, sane numbers, resuming and clear errors."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from filelock import FileLock

from sb3_safeq.bench.algorithms import (
    ALGORITHMS,
    DEFAULT_ALGOS,
    AlgoSpec,
    BehaviorAgent,
    HyperparamSources,
    get_algo,
    load_hyperparams,
    step_budget,
)
from sb3_safeq.bench.calibration import complete_horizon, discounted_returns, evaluate_calibration
from sb3_safeq.bench.cli import main
from sb3_safeq.bench.induced import induced_predict_fn
from sb3_safeq.bench.metrics import bootstrap_ci, target_return, time_to_target
from sb3_safeq.bench.provenance import read_invocations
from sb3_safeq.bench.report import fill_time_to_target, headline_lines, interquartile_mean
from sb3_safeq.bench.runner import COLUMNS, RunTask, run_benchmark
from sb3_safeq.cli import main as sb3_safeq_main

ENV = "SafeCliffWalking-v0"
SMALL = ["--envs", ENV, "--algos", "safeq", "behavior", "dqn", "--seeds", "1", "--steps", "1500"]
FAST = ["--eval-episodes", "3", "--calib-episodes", "2", "--curve-points", "3", "--curve-episodes", "1"]


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "runs.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def _run_bench(out: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sb3_safeq.bench", *SMALL, *FAST, "--jobs", "2", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def _check_outputs(out: Path) -> None:
    for name in ("runs.csv", "summary.md", f"learning_curves_{ENV}.png", f"unsafe_visits_{ENV}.png"):
        assert (out / name).is_file(), name
    assert (out / f"calibration_{ENV}.png").is_file()
    rows = _rows(out)
    assert list(rows[0]) == list(COLUMNS)
    assert sorted(row["algo"] for row in rows) == ["behavior", "dqn", "safeq"]
    curve = json.loads((out / "curves" / f"safeq__{ENV}__0.json").read_text())
    assert len(curve["curve"]["steps"]) == len(curve["curve"]["eval_return"]) == len(curve["curve"]["unsafe_visits"])
    assert len(curve["calibration"]["q_hat"]) == len(curve["calibration"]["mc_return"]) > 0
    summary = (out / "summary.md").read_text()
    assert f"## {ENV}" in summary and "| safeq |" in summary
    assert f"| {ENV} | 1 | 0 |" in summary  # the headline row: safeq's seeds and its training unsafe visits


def _check_numbers(out: Path) -> None:
    rows = {row["algo"]: row for row in _rows(out)}
    # Unshielded DQN explores over all actions (uniform warm-up, then epsilon-greedy) and walks off the cliff;
    # SafeSupportQ never does.
    assert int(rows["dqn"]["train_unsafe_visits"]) > 0
    assert int(rows["safeq"]["train_unsafe_visits"]) == 0
    assert int(rows["safeq"]["train_out_of_support"]) == 0
    assert int(rows["behavior"]["train_unsafe_visits"]) == 0
    assert int(rows["safeq"]["n_timesteps"]) == 1500
    assert int(rows["safeq"]["eval_unsafe_visits"]) == 0
    assert 0.0 <= float(rows["safeq"]["support_leakage"]) <= 1.0
    assert math.isfinite(float(rows["safeq"]["tabular_q_error"]))  # exact soft value iteration on the cliff
    assert 0.0 <= float(rows["safeq"]["tabular_q_error_occupancy"]) <= float(rows["safeq"]["tabular_q_error"])
    assert math.isfinite(float(rows["safeq"]["calib_soft_norm_bias"]))  # SafeSupportQ's critic against soft returns
    assert float(rows["safeq"]["calib_soft_states"]) > 0
    assert rows["dqn"]["calib_soft_norm_bias"] in ("", "nan")  # a hard critic: no soft calibration
    assert -100.0 <= float(rows["safeq"]["eval_return_induced"]) <= 0.0  # pi_Q, inside the masks
    assert -100.0 <= float(rows["safeq"]["eval_return_mean"]) <= 0.0
    for algo in ("safeq", "dqn"):
        assert float(rows[algo]["fps"]) > 0
        assert math.isfinite(float(rows[algo]["calib_norm_bias"]))
        assert math.isfinite(float(rows[algo]["calib_complete_norm_bias"]))
        assert float(rows[algo]["calib_complete_states"]) > 0
    assert rows["behavior"]["calib_norm_bias"] in ("", "nan")  # no critic
    assert float(rows["safeq"]["peak_memory_mb"]) > 10
    assert float(rows["safeq"]["wall_time_s"]) > 0


def test_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One test (not a fixture shared by several) so that pytest-xdist runs the benchmark once, not once per worker.
    out = tmp_path / "bench"
    _run_bench(out)
    _check_outputs(out)
    _check_numbers(out)
    # Resuming: the finished runs are skipped, runs.csv keeps its rows.
    before = (out / "runs.csv").read_text().count("\n")
    assert main([*SMALL, *FAST, "--no-progress", "--out", str(out)]) == 0
    assert "3 run(s) already finished (skipped), 0 to run" in capsys.readouterr().out
    assert (out / "runs.csv").read_text().count("\n") == before
    # Provenance: the invocation that ran them (not the one that skipped them), in the summary too.
    invocations = read_invocations(out)
    assert [record["new_runs"] for record in invocations] == [3]
    assert "--steps 1500" in invocations[0]["command"] and "cores available" in invocations[0]["machine"]
    assert invocations[0]["command"] in (out / "summary.md").read_text()
    # Publishing copies the summary and the plots it links.
    assert main(["--out", str(out), "--report-only", "--publish", str(tmp_path / "docs")]) == 0
    published = (tmp_path / "docs" / "results.md").read_text()
    assert published == (out / "summary.md").read_text()
    assert f"](learning_curves_{ENV}.png)" in published and (tmp_path / "docs" / f"learning_curves_{ENV}.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algos", "nope"], "Unknown algorithm 'nope'"),
        (["--envs", "NoSuchEnv-v0"], "Unknown environment 'NoSuchEnv-v0'"),
        (["--envs", ENV, "--algos", "sac"], "No run"),
        (["--envs", "CartPole-v1"], "CartPole-v1 cannot be benchmarked"),
        (["--seeds", "0", "--envs", ENV], "--seeds must be >= 1"),
    ],
)
def test_bad_options_fail_clearly(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_entry_point_unknown_algo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sb3_safeq_main(["bench", "--algos", "nope", "--out", str(tmp_path)]) == 2
    assert "Unknown algorithm 'nope'" in capsys.readouterr().err


def test_hyperparams_are_read_like_rl_zoo() -> None:
    n_timesteps, n_envs, kwargs = load_hyperparams(get_algo("dqn"), ENV)
    assert n_timesteps == 20000 and n_envs == 1
    assert kwargs["policy_kwargs"] == {"net_arch": [64, 64]}  # the YAML string, evaluated
    assert "env_wrapper" not in kwargs and "monitor_kwargs" not in kwargs
    _, n_envs, _ = load_hyperparams(get_algo("ppo_mask"), ENV)
    assert n_envs == 4
    variant = AlgoSpec("safeq_alpha", "safeq", "any", "sb3_safeq:SafeSupportQ", extra_kwargs={"alpha": 0.5})
    assert load_hyperparams(variant, ENV)[2]["alpha"] == 0.5


def test_metrics() -> None:
    assert bootstrap_ci([1.0]) == (1.0, 1.0, 1.0)
    mean, low, high = bootstrap_ci([0.0, 1.0, 2.0, 3.0])
    assert low <= mean == 1.5 <= high
    assert bootstrap_ci([1.0, 2.0]) == bootstrap_ci([1.0, 2.0])  # fixed seed
    assert all(math.isnan(value) for value in bootstrap_ci([]))
    assert target_return(-10.0) == pytest.approx(-11.0) and target_return(20.0) == pytest.approx(18.0)
    assert time_to_target([0.0, 1.0, 2.0], [-100.0, -12.0, -10.0], -11.0) == 2.0
    assert math.isnan(time_to_target([0.0], [-100.0], -11.0))
    np.testing.assert_allclose(discounted_returns([1.0, 1.0, 1.0], 0.5), [1.75, 1.5, 1.0])


def test_calibration_without_critic_is_nan() -> None:
    import gymnasium as gym

    env = gym.make(ENV)
    result = evaluate_calibration(BehaviorAgent(env.action_space), env, n_episodes=1, gamma=0.99)
    assert math.isnan(result["norm_bias"]) and result["n_states"] == 0


def test_unregistered_variant_runs_in_worker(tmp_path: Path) -> None:
    # The task carries its spec to the fresh worker process, so a variant defined only here runs too.
    spec = AlgoSpec("behavior_variant", None, "any", use_support=True)
    task = RunTask(spec.name, ENV, 0, str(tmp_path), eval_episodes=1, calib_episodes=1, curve_episodes=1, spec=spec)
    rows = run_benchmark([task], tmp_path, jobs=1, progress=False, log=lambda message: None)
    assert [(row["algo"], row["train_unsafe_visits"]) for row in rows] == [("behavior_variant", "0")]


def test_every_algorithm_gets_the_same_step_budget(tmp_path: Path) -> None:
    # Two files with different n_timesteps for one environment: by default both get safeq.yml's budget.
    entry = "{env}:\n  n_timesteps: {steps}\n  policy: MlpPolicy\n"
    (tmp_path / "safeq.yml").write_text(entry.format(env=ENV, steps=1234))
    (tmp_path / "dqn.yml").write_text(entry.format(env=ENV, steps=999) + entry.format(env="Other-v0", steps=7))
    packaged = HyperparamSources(packaged_dir=str(tmp_path))
    dqn = get_algo("dqn")
    assert step_budget(dqn, ENV, sources=packaged) == step_budget(get_algo("safeq"), ENV, sources=packaged) == 1234
    assert step_budget(get_algo("behavior"), ENV, sources=packaged) == 1234  # the run key of the behavior too
    assert step_budget(dqn, ENV, common=False, sources=packaged) == 999
    assert step_budget(dqn, "Other-v0", sources=packaged) == 7  # no safeq entry: the algorithm's own


def test_a_new_budget_replaces_the_stale_row(tmp_path: Path) -> None:
    def run(steps: int) -> list[dict[str, str]]:
        task = RunTask("behavior", ENV, 0, str(tmp_path), steps=steps, eval_episodes=1, calib_episodes=1)
        return run_benchmark([task], tmp_path, jobs=1, progress=False, log=lambda message: None)

    assert [row["budget"] for row in run(300)] == ["300"]
    assert [row["budget"] for row in run(300)] == ["300"]  # resumed: not rerun
    assert [row["budget"] for row in run(400)] == ["400"]  # another budget: rerun, the old row dropped


def test_safeq_variants_are_registered_but_not_default() -> None:
    variants = {"safeq_forward_kl", "safeq_reverse_kl", "safeq_explore_behavior", "safeq_alpha0.01"}
    assert variants <= set(ALGORITHMS) and not variants & set(DEFAULT_ALGOS)
    assert load_hyperparams(get_algo("safeq_reverse_kl"), ENV)[2]["extraction"] == "reverse_kl"
    # safeq.yml extracts the Box heads with the reverse KL; the forward-KL variant overrides it.
    assert load_hyperparams(get_algo("safeq"), "SafePointMass-v0")[2]["extraction"] == "reverse_kl"
    assert load_hyperparams(get_algo("safeq_forward_kl"), "SafePointMass-v0")[2]["extraction"] == "forward_kl"
    # The variant's argument overrides the file's (safeq.yml sets alpha 0.2 for cart-pole).
    assert load_hyperparams(get_algo("safeq_alpha1"), "SafeCartPole-v0")[2]["alpha"] == 1.0


def test_baseline_variants_keep_their_base_and_override_the_file() -> None:
    shielded = get_algo("sac_shield_tau0.02")
    assert shielded.shield and shielded.class_path == get_algo("sac").class_path
    assert "sac_shield_tau0.02" not in DEFAULT_ALGOS
    # sac.yml sets tau 0.005 on the point mass; the variant (and the matching SafeSupportQ one) run at 0.02.
    assert load_hyperparams(get_algo("sac"), "SafePointMass-v0")[2]["tau"] == 0.005
    assert load_hyperparams(shielded, "SafePointMass-v0")[2]["tau"] == 0.02
    assert load_hyperparams(get_algo("safeq_tau0.02"), "SafePointMass-v0")[2]["tau"] == 0.02
    # The double integrator's files give every algorithm the same budget and tau.
    for name in ("safeq", "sac", "tqc"):
        n_timesteps, _, kwargs = load_hyperparams(get_algo(name), "SafeDoubleIntegrator-v0")
        assert (n_timesteps, kwargs["tau"]) == (30_000, 0.02)


def test_interquartile_mean_ignores_the_outer_quartiles() -> None:
    import pandas as pd

    assert interquartile_mean(pd.Series([1.0, 2.0, 3.0, 4.0, 1000.0])) == pytest.approx(3.0)
    assert interquartile_mean(pd.Series([2.0, np.nan])) == 2.0
    assert math.isnan(interquartile_mean(pd.Series([], dtype=float)))


def test_induced_policy_of_a_box_model_stays_in_the_box() -> None:
    import gymnasium as gym

    from sb3_safeq import SafeSupportQ
    from sb3_safeq.common.wrappers import SafetyWrapper

    env = SafetyWrapper(gym.make("SafePointMass-v0"))
    model = SafeSupportQ("MlpPolicy", env, learning_starts=50, n_behavior_samples=8, seed=0)
    model.learn(100)
    predict = induced_predict_fn(model)
    assert predict is not None
    rng = np.random.default_rng(0)
    low = rng.uniform(-1.0, 0.0, size=(64, 2)).astype(np.float32)
    high = np.minimum(low + rng.uniform(0.0, 0.3, size=(64, 2)).astype(np.float32), 1.0)
    high[0] = low[0]  # a point box
    observations = np.repeat(env.reset(seed=0)[0][None], 64, axis=0)
    for deterministic in (True, False):
        actions, _ = predict(observations, deterministic=deterministic, safe_bounds=(low, high))
        assert actions.shape == (64, 2) and actions.dtype == np.float32
        assert np.all(actions >= low) and np.all(actions <= high)
    with pytest.raises(ValueError, match="needs the safe supports of the observations"):
        predict(observations)


def test_time_and_steps_to_90_percent_of_the_best_safe_return(tmp_path: Path) -> None:
    import pandas as pd

    curves = {
        "fast": {"steps": [0, 100, 200], "eval_return": [-100.0, -13.0, -13.0], "time_s": [0.0, 5.0, 9.0]},
        "slow": {"steps": [0, 100, 200], "eval_return": [-100.0, -50.0, -14.0], "time_s": [0.0, 1.0, 2.0]},
        "unsafe": {"steps": [0, 100, 200], "eval_return": [-100.0, 0.0, 0.0], "time_s": [0.0, 1.0, 2.0]},
    }
    (tmp_path / "curves").mkdir()
    for algo, curve in curves.items():
        (tmp_path / "curves" / f"{algo}__{ENV}__0.json").write_text(json.dumps({"curve": curve}))
    runs = pd.DataFrame(
        {
            "algo": list(curves),
            "env": ENV,
            "seed": 0,
            "eval_return_mean": [-13.0, -14.0, 0.0],
            "train_unsafe_visits": [0, 0, 7],  # the unsafe run's 0 is not the best *safe* return
            "eval_unsafe_visits": [0, 0, 0],
        }
    )
    filled = fill_time_to_target(runs, tmp_path).set_index("algo")
    # Best safe return -13, target -14.3: reached at 100 steps (5 s) and at 200 steps (2 s).
    assert filled.loc["fast", "steps_to_90pct"] == 100 and filled.loc["fast", "time_to_90pct_s"] == 5.0
    assert filled.loc["slow", "steps_to_90pct"] == 200 and filled.loc["slow", "time_to_90pct_s"] == 2.0


def test_behavior_baseline_acts_out_the_configured_behavior(tmp_path: Path) -> None:
    # A behavior given as an import path in safeq.yml (the form rl-zoo3 files can carry) is what "behavior" plays.
    (tmp_path / "safeq.yml").write_text(
        f"{ENV}:\n  n_timesteps: 100\n  policy: MlpPolicy\n  behavior: tests.test_bench:always_up_behavior\n"
    )
    packaged = HyperparamSources(packaged_dir=str(tmp_path))
    _, _, kwargs = load_hyperparams(get_algo("behavior"), ENV, packaged)
    agent = BehaviorAgent(gym_space_of(ENV), seed=0, behavior=kwargs["behavior"])
    masks = np.ones((5, 4), dtype=bool)
    actions, _ = agent.predict(np.arange(5), action_masks=masks)
    np.testing.assert_array_equal(actions, 0)  # "up" only
    masks[:, 0] = False  # up unsafe: the function's mass outside the mask is refused, not silently moved
    with pytest.raises(ValueError, match="outside the safe mask"):
        agent.predict(np.arange(5), action_masks=masks)
    # Without an entry for the environment the behavior baseline still runs (uniform).
    assert load_hyperparams(get_algo("behavior"), "SafePointMass-v0", packaged) == (0, 1, {})


def always_up_behavior(observations: np.ndarray, masks: np.ndarray) -> np.ndarray:
    probabilities = np.zeros(masks.shape)
    probabilities[:, 0] = 1.0
    return probabilities


def gym_space_of(env_id: str) -> "gym.spaces.Space":
    import gymnasium as gym

    return gym.make(env_id).action_space


def test_headline_compares_with_the_best_zero_violation_baseline() -> None:
    import pandas as pd

    runs = pd.DataFrame(
        {
            "algo": ["safeq", "safeq", "ppo_mask", "dqn_shield", "dqn", "behavior"],
            "env": ENV,
            "seed": [0, 1, 0, 0, 0, 0],
            "eval_return_mean": [-13.0, -15.0, -20.0, -15.0, -13.0, -90.0],  # unshielded dqn is not a candidate
            "train_unsafe_visits": [0, 0, 0, 0, 12, 0],
            "calib_norm_bias": [-0.05, 0.03, np.nan, -0.01, -0.25, np.nan],
            "calib_complete_norm_bias": [-0.2, -0.4, np.nan, np.nan, 0.25, np.nan],
            "calib_soft_norm_bias": [-0.02, 0.04, np.nan, np.nan, np.nan, np.nan],  # SafeSupportQ's critic only
        }
    )
    (row,) = [line for line in headline_lines(runs) if line.startswith(f"| {ENV}")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # safeq's soft calibration against dqn's complete one (sac: no run here); safeq against hard returns last.
    assert cells == [ENV, "2", "0", "-14.00", "dqn_shield -15.00", "+1.00", "0.030", "0.250", "n/a", "0.300"]
    assert headline_lines(runs[runs["algo"] != "safeq"]) == []


@pytest.mark.parametrize(
    "episode_length, terminate, kept_per_episode",
    [(5, False, 6), (5, True, 5), (8, True, 6), (12, True, 6)],  # episodes of 10 (cut), 5, 8 and 10 (cut) steps
)
def test_calibration_keeps_only_states_with_a_complete_enough_return(
    episode_length: int, terminate: bool, kept_per_episode: int
) -> None:
    from gymnasium.wrappers import TimeLimit

    from sb3_safeq import SafeSupportQ
    from tests.toy_envs import RandomMaskEnv

    # gamma 0.5, time limit 10: the state at step t may miss a tail of weight 0.5 ** (10 - t), <= 0.05 for t <= 5,
    # so the states at t = 0..5 count, whether the episode terminated or was cut: a rule on t alone (keeping the
    # whole of the episodes that happened to terminate would select on the future and bias the returns).
    time_limited = TimeLimit(RandomMaskEnv(episode_length=episode_length, terminate=terminate), max_episode_steps=10)
    model = SafeSupportQ("MlpPolicy", time_limited, gamma=0.5, seed=0)
    length = min(episode_length if terminate else 10, 10)
    everything = evaluate_calibration(model, time_limited, n_episodes=3)
    complete = evaluate_calibration(model, time_limited, n_episodes=3, tail_tolerance=0.05, return_pairs=True)
    assert everything["n_states"] == 3 * length
    assert complete["n_states"] == 3 * kept_per_episode == len(complete["mc_return"])
    assert complete_horizon(10, 0.5, 0.05) == 15  # 10 states with >= 5 steps left each
    with pytest.raises(ValueError, match="must lie in"):
        complete_horizon(10, 1.0, 0.05)


def test_a_folder_in_use_by_another_invocation_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["--envs", ENV, "--algos", "behavior", "--seeds", "1", "--eval-episodes", "1", "--calib-episodes", "1"]
    with FileLock(out / ".bench.lock"):  # another invocation holds it
        assert main([*args, "--no-progress", "--out", str(out)]) == 2
    assert f"Another sb3-safeq bench is writing to {out}" in capsys.readouterr().err
    assert not (out / "runs.csv").exists()
    # A lock file whose holder is gone (here: released; a killed process releases it too) is no obstacle.
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    assert len(_rows(out)) == 1
    assert FileLock(out / ".bench.lock", blocking=False).acquire()  # released at the end


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="needs /proc to find the worker processes")
def test_sigterm_stops_the_workers_and_keeps_the_folder_resumable(tmp_path: Path) -> None:
    import os
    import signal
    import time
    import uuid

    marker = f"SB3_SAFEQ_TEST_{uuid.uuid4().hex}"

    def marked_processes() -> list[int]:
        pids = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker.encode() in environ.read_bytes():
                    pids.append(int(environ.parent.name))
            except OSError:  # gone, or another user's
                continue
        return pids

    out = tmp_path / "out"
    command = [sys.executable, "-m", "sb3_safeq.bench", "--envs", ENV, "--algos", "safeq", "--seeds", "2"]
    command += ["--steps", "200000", "--jobs", "2", "--no-progress", "--out", str(out)]
    bench = subprocess.Popen(command, env={**os.environ, marker: "1"}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(marked_processes()) < 4 and time.monotonic() < deadline:  # bench, forkserver, 2 workers
            time.sleep(0.5)
        assert len(marked_processes()) >= 4, "the workers did not start"
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130 and "interrupted" in stderr and "resumes" in stderr
    deadline = time.monotonic() + 30
    while marked_processes() and time.monotonic() < deadline:  # the forkserver exits once its pipe closes
        time.sleep(0.5)
    assert marked_processes() == []
    assert FileLock(out / ".bench.lock", blocking=False).acquire()  # released


def test_runs_csv_is_replaced_atomically(tmp_path: Path) -> None:
    # A rewrite interrupted half-way (here: an error after part of the rows) leaves the previous file whole.
    from sb3_safeq.bench.runner import rewrite_atomically

    runs_csv = tmp_path / "runs.csv"
    runs_csv.write_text("algo,env\nsafeq,SafeCliffWalking-v0\n")

    def torn_write(target: Path) -> None:
        target.write_text("algo,env\nsafeq,")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rewrite_atomically(runs_csv, torn_write)
    assert runs_csv.read_text() == "algo,env\nsafeq,SafeCliffWalking-v0\n"
    assert [path.name for path in tmp_path.iterdir()] == ["runs.csv"]
    rewrite_atomically(runs_csv, lambda target: target.write_text("algo,env\n"))
    assert runs_csv.read_text() == "algo,env\n"
