"""
The Ray executor of the benchmark (``sb3-safeq bench --executor ray``): the same rows as local processes, one
resumable folder written by the driver only, and an interruption that keeps the finished rows (exit code 130).
"""

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sb3_safeq.bench.executors import LocalExecutor, RayExecutor
from sb3_safeq.bench.runner import RunTask, run_benchmark

#: Set (as CI does) to make the test fail, not skip, when Ray is missing.
REQUIRE_RAY_ENV = "SB3_SAFEQ_REQUIRE_RAY"
ENV = "SafeCliffWalking-v0"
#: Columns that measure the machine, not the run: they differ between two executions of the same run.
MACHINE_COLUMNS = {"fps", "wall_time_s", "peak_memory_mb", "time_to_90pct_s"}


@pytest.fixture(scope="module")
def ray_module() -> Iterator[Any]:
    try:
        import ray
    except ImportError as error:
        if os.environ.get(REQUIRE_RAY_ENV):
            pytest.fail(f"Ray is not importable ({error}) and {REQUIRE_RAY_ENV} is set, so this test must run.")
        pytest.skip(f"Ray is not installed ({error}): pip install 'sb3-safeq[ray]'")
    # A local instance of two CPUs, as on a small machine; the worker processes see this checkout (PYTHONPATH).
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield ray
    finally:
        ray.shutdown()


def _tasks(out: Path, algos: tuple[str, ...] = ("safeq", "behavior"), steps: int = 300) -> list[RunTask]:
    return [
        RunTask(
            algo, ENV, seed, str(out), steps=steps, eval_episodes=2, curve_points=2, curve_episodes=1, calib_episodes=1
        )
        for algo in algos
        for seed in (0, 1)
    ]


def _rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "runs.csv").open(newline="") as stream:
        return {(row["algo"], row["seed"]): row for row in csv.DictReader(stream)}


def test_without_ray_the_executor_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sb3_safeq.bench.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    argv = ["--envs", ENV, "--algos", "behavior", "--seeds", "1", "--no-progress", "--out", str(tmp_path / "out")]
    assert main([*argv, "--executor", "ray"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and 'pip install "sb3-safeq[ray]"' in error
    assert main([*argv, "--address", "auto"]) == 2  # an address is the Ray cluster's
    assert "--address is the Ray cluster's: it needs --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_ray_runs_the_same_rows_as_local_processes(ray_module: Any, tmp_path: Path) -> None:
    quiet: dict[str, Any] = {"progress": False, "log": lambda message: None}
    run_benchmark(_tasks(tmp_path / "local"), tmp_path / "local", executor=LocalExecutor(jobs=2), **quiet)
    run_benchmark(_tasks(tmp_path / "ray"), tmp_path / "ray", executor=RayExecutor(), **quiet)
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert sorted(local) == sorted(remote) == [("behavior", "0"), ("behavior", "1"), ("safeq", "0"), ("safeq", "1")]
    for key, row in local.items():
        same = {column: value for column, value in row.items() if column not in MACHINE_COLUMNS}
        assert same == {column: remote[key][column] for column in same}, key
        assert float(remote[key]["wall_time_s"]) > 0
    # The driver wrote every run's record, the one file a worker wrote before (its curve and calibration pairs).
    assert len(list((tmp_path / "ray" / "curves").glob("*.json"))) == 4
    # Resuming on Ray skips the finished runs (one at a time here); a failed run is reported, the rows stay.
    broken = RunTask("behavior", "NoSuchEnv-v0", 0, str(tmp_path / "ray"), steps=300, eval_episodes=1)
    messages: list[str] = []
    with pytest.raises(RuntimeError, match="1 run\\(s\\) failed"):
        run_benchmark(
            [*_tasks(tmp_path / "ray"), broken],
            tmp_path / "ray",
            progress=False,
            log=messages.append,
            executor=RayExecutor(jobs=1),
        )
    assert messages[0].startswith("4 run(s) already finished (skipped), 1 to run on Ray")
    assert "FAILED: behavior on NoSuchEnv-v0 (seed 0)" in messages[-1] and "NoSuchEnv-v0" in messages[-1]
    assert _rows(tmp_path / "ray") == remote
    # The Ray instance of the test is used, not shut down by the executor.
    assert ray_module.is_initialized()


def test_sigterm_of_a_ray_bench_exits_130_keeping_the_finished_rows(ray_module: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A run of a few seconds and one of minutes, one at a time: the first finishes, the second is interrupted.
    command = [sys.executable, "-m", "sb3_safeq.bench", "--executor", "ray"]
    command += ["--address", ray_module.get_runtime_context().gcs_address, "--jobs", "1", "--no-progress"]
    command += ["--envs", ENV, "--algos", "behavior", "safeq", "--seeds", "1", "--steps", "200000", "--out", str(out)]
    command += ["--eval-episodes", "1", "--calib-episodes", "1", "--curve-points", "1", "--curve-episodes", "1"]
    bench = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "runs.csv").is_file() and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.5)
        assert (out / "runs.csv").is_file(), "the first run did not finish"
        time.sleep(1.0)  # the second run is training now
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, stderr
    assert "interrupted" in stderr and "resumes" in stderr
    assert list(_rows(out)) == [("behavior", "0")]
    # The interrupted run's worker was stopped: the cluster gets its CPU back.
    deadline = time.monotonic() + 30
    while ray_module.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_module.available_resources().get("CPU", 0) == 2
