"""
``sb3-safeq bench`` on a user's own environments (``tests/user_envs/lava_envs``, a package outside ``sb3_safeq``),
with the user's hyperparameter files and algorithms: the commands of docs/benchmarks.md, run as subprocesses as
written there.
"""

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from gymnasium import spaces

from sb3_safeq.bench.algorithms import AlgoSpec, get_algo
from sb3_safeq.bench.cli import main
from sb3_safeq.bench.hyperparams import HyperparamSources, fallback_entry

ROOT = Path(__file__).resolve().parents[1]
USER_ENVS = ROOT / "tests" / "user_envs"
DOCS = (ROOT / "docs" / "benchmarks.md").read_text()
#: The section of docs/benchmarks.md these tests run the commands of.
SECTION = DOCS[DOCS.index("## Benchmarking your own environment") :].split("\n## ")[0]


def _environment() -> dict[str, str]:
    """:return: the environment of a user who set PYTHONPATH to the folder of their package (and this checkout)"""
    path = os.pathsep.join(filter(None, [str(ROOT), str(USER_ENVS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run_sb3_safeq(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """:return: ``sb3-safeq ARGUMENTS`` (as ``python -m sb3_safeq``) run in ``cwd``, output captured"""
    command = [sys.executable, "-m", "sb3_safeq", *arguments]
    return subprocess.run(command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=300)


def documented_command(*words: str) -> list[str]:
    """:return: the arguments of the documented ``sb3-safeq bench`` command that contains every one of ``words``"""
    commands = re.findall(r"^\s*sb3-safeq (bench --gym-packages .*)$", SECTION, re.MULTILINE)
    matching = [command for command in commands if all(word in command for word in words)]
    assert len(matching) == 1, (words, commands)
    return shlex.split(matching[0])


def rows_by_algo(out: Path, env: str | None = None) -> dict[str, dict[str, str]]:
    """:return: the rows of ``out/runs.csv`` (of one environment) by algorithm"""
    with (out / "runs.csv").open(newline="") as stream:
        return {row["algo"]: row for row in csv.DictReader(stream) if env in (None, row["env"])}


def run_record(out: Path, algo: str, env: str) -> dict:
    """:return: the JSON record of the run of ``algo`` on ``env``, seed 0"""
    return json.loads((out / "curves" / f"{algo}__{env}__0.json").read_text())


def check_report(out: Path, env: str, algos: set[str]) -> dict[str, dict[str, str]]:
    """:return: the rows, after checking the files of the report and the columns every environment gets"""
    for name in ("summary.md", f"learning_curves_{env}.png", f"unsafe_visits_{env}.png", f"calibration_{env}.png"):
        assert (out / name).is_file(), name
    assert f"## {env}" in (out / "summary.md").read_text()
    rows = rows_by_algo(out, env)
    assert set(rows) == algos
    for row in rows.values():
        assert row["env"] == env and row["n_timesteps"] and float(row["eval_return_mean"]) < 0
        for column in ("train_unsafe_visits", "train_out_of_support", "train_empty_support", "eval_unsafe_visits"):
            assert int(row[column]) >= 0, column
        assert float(row["train_cumulative_cost"]) >= 0 and float(row["eval_cost_mean"]) >= 0
        # The tabular error needs a bundled toy-text model: empty on a user's environment, not an error.
        assert row["tabular_q_error"] == row["tabular_q_error_occupancy"] == ""
    safeq = rows["safeq"]
    assert int(safeq["train_unsafe_visits"]) == int(safeq["train_out_of_support"]) == 0
    assert int(safeq["eval_unsafe_visits"]) == 0
    assert math.isfinite(float(safeq["calib_soft_norm_bias"]))  # the time limit is registered: complete returns
    return rows


def test_bench_on_a_users_discrete_and_box_environments(tmp_path: Path) -> None:
    result = run_sb3_safeq(documented_command("LavaGrid-v0 SafeReach-v0"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "bench_results" / "mine"
    lava = check_report(out, "LavaGrid-v0", {"safeq", "dqn_shield", "ppo_mask"})
    # The shield counted the lava moves DQN's uniform warm-up chose (the lava is next to the start) and replaced them.
    assert int(lava["dqn_shield"]["train_out_of_support"]) > 0
    assert int(lava["dqn_shield"]["train_unsafe_visits"]) == int(lava["ppo_mask"]["train_unsafe_visits"]) == 0
    record = run_record(out, "dqn_shield", "LavaGrid-v0")
    assert record["hyperparameters"]["origin"] == "defaults: dqn.yml entry SafeCliffWalking-v0 (LavaGrid-v0 has none)"
    assert record["hyperparameters"]["model"]["target_update_interval"] == 250  # not DQN's 10,000
    reach = check_report(out, "SafeReach-v0", {"safeq", "sac", "sac_shield"})
    # Unshielded SAC's uniform warm-up crosses the wall: the user's info["cost"] is counted.
    assert int(reach["sac"]["train_unsafe_visits"]) > 0 and float(reach["sac"]["train_cumulative_cost"]) > 0
    assert int(reach["sac_shield"]["train_unsafe_visits"]) == 0 < int(reach["sac_shield"]["train_out_of_support"])
    record = run_record(out, "safeq", "SafeReach-v0")
    assert record["hyperparameters"]["kwargs"]["extraction"] == "reverse_kl"  # the Box reference entry


def test_user_hyperparameters_and_algorithms_reach_the_model(tmp_path: Path) -> None:
    (tmp_path / "my_hyperparams").mkdir()
    (entry,) = re.findall(r"^\s*(LavaGrid-v0: \{n_timesteps: 200.*)$", SECTION, re.MULTILINE)  # the docs' file
    (tmp_path / "my_hyperparams" / "safeq.yml").write_text(entry + "\n")
    result = run_sb3_safeq(documented_command("--algo-module", "--hyperparams-dir"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "bench_results" / "own"
    rows = rows_by_algo(out)
    assert set(rows) == {"safeq_tau0.5", "dqn_shield_greedy"}
    assert all(row["n_timesteps"] == "200" for row in rows.values())  # the budget of the user's safeq entry
    safeq = run_record(out, "safeq_tau0.5", "LavaGrid-v0")["hyperparameters"]
    assert safeq["origin"] == f"{Path('my_hyperparams') / 'safeq.yml'} (entry LavaGrid-v0)"
    assert safeq["model"]["gamma"] == 0.9 and safeq["model"]["learning_starts"] == 50  # from the user's file
    assert safeq["model"]["tau"] == 0.5  # from the registered variant
    dqn = run_record(out, "dqn_shield_greedy", "LavaGrid-v0")["hyperparameters"]
    assert dqn["model"]["exploration_final_eps"] == 0.0 and dqn["model"]["gamma"] == 0.99  # the spec, on the defaults


def test_a_missing_entry_is_one_line_with_a_template(tmp_path: Path) -> None:
    (tmp_path / "my_safeq.yml").write_text("SafeCliffWalking-v0: {n_timesteps: 100, policy: MlpPolicy}\n")
    common = ["bench", "--envs", "LavaGrid-v0", "--algos", "safeq", "--out", "out"]
    result = run_sb3_safeq([*common, "--gym-packages", "lava_envs", "--conf-file", "safeq=my_safeq.yml"], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("sb3-safeq bench: error: my_safeq.yml has no entry for LavaGrid-v0")
    assert "the algorithm safeq reads it" in result.stderr
    assert "Add one, e.g. LavaGrid-v0: {n_timesteps: 20000, policy: MlpPolicy}" in result.stderr  # a template
    assert not (tmp_path / "out").exists()  # stopped before any run


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(["--conf-file", "safeq"], "--conf-file 'safeq': expected ALGO=PATH", id="conf-file-no-equals"),
        pytest.param(["--conf-file", "safeq=nowhere.yml"], "the file nowhere.yml does not exist", id="no-conf-file"),
        pytest.param(["--conf-file", "sac=HERE"], "no algorithm of this run is or reads 'sac'", id="conf-file-algo"),
        pytest.param(["--hyperparams-dir", "nowhere"], "--hyperparams-dir nowhere: no such folder", id="no-dir"),
        pytest.param(
            ["--gym-packages", "no_such_package"], "--gym-packages: cannot import 'no_such_package'", id="gym-package"
        ),
        pytest.param(["--algos", "sb3_safeq.bench.algorithms:ALGORITHMS"], "must be an AlgoSpec", id="not-a-spec"),
        pytest.param(["--algos", "no_such_module:SPEC"], "cannot import 'no_such_module'", id="spec-module"),
        pytest.param(["--algos", "nope"], "--algo-module MODULE", id="unknown-algo"),
        pytest.param(
            ["--envs", "MyLavaGrid-v0"],
            "Unknown environment 'MyLavaGrid-v0': if it is your own, pass the package that registers it with "
            "--gym-packages",
            id="unknown-env",
        ),
    ],
)
def test_bad_user_options_fail_clearly(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    here = tmp_path / "here.yml"
    here.write_text("SafeCliffWalking-v0: {n_timesteps: 100, policy: MlpPolicy}\n")
    options = [option.replace("HERE", str(here)) for option in options]
    algos = [] if "--algos" in options else ["--algos", "safeq"]
    envs = [] if "--envs" in options else ["--envs", "SafeCliffWalking-v0"]
    assert main([*envs, *algos, *options, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_a_misspelt_hyperparameter_is_caught_before_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dqn.yml").write_text("SafeCliffWalking-v0: {n_timesteps: 100, policy: MlpPolicy, gama: 0.9}\n")
    argv = ["--envs", "SafeCliffWalking-v0", "--algos", "dqn_shield", "--hyperparams-dir", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "unknown hyperparameter 'gama' for dqn_shield (DQN)" in error and "Did you mean 'gamma'?" in error


def _script_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS, re.DOTALL)
    (script,) = [block for block in blocks if "register_algo(" in block]
    return script


def test_the_script_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(_script_example())
    result = run_script(tmp_path, "example.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(rows_by_algo(tmp_path / "bench_results" / "alpha")) == {"safeq_alpha0.1"}
    record = run_record(tmp_path / "bench_results" / "alpha", "safeq_alpha0.1", "SafeCliffWalking-v0")
    assert record["hyperparameters"]["model"]["alpha"] == 0.1


def test_a_script_without_the_guard_runs_once(tmp_path: Path) -> None:
    # The run processes import the script again: its top-level call of main returns at once there (no second
    # benchmark, no complaint about the folder lock).
    script = _script_example().replace('if __name__ == "__main__":', "if True:")
    script = script.replace('"--seeds", "1"', '"--seeds", "1", "--no-progress"')
    (tmp_path / "unguarded.py").write_text(script)
    result = run_script(tmp_path, "unguarded.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error" not in result.stderr + result.stdout
    assert set(rows_by_algo(tmp_path / "bench_results" / "alpha")) == {"safeq_alpha0.1"}
    assert result.stdout.count(" to run on ") == 1  # one benchmark, not one per run process
    # sys.exit(main(...)) at the top level ends each run process while it imports the script: a failed run that
    # names the guard, not a BrokenProcessPool traceback.
    exiting = script.replace("    main(", "    import sys; sys.exit(main(").replace('"bench_results/alpha"])', '"x"]))')
    (tmp_path / "exiting.py").write_text(exiting)
    result = run_script(tmp_path, "exiting.py")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert 'needs `if __name__ == "__main__":` around it' in result.stdout + result.stderr


def run_script(cwd: Path, name: str) -> subprocess.CompletedProcess:
    """:return: ``python NAME`` run in ``cwd`` with the user's PYTHONPATH, output captured"""
    return subprocess.run(
        [sys.executable, name], cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=300
    )


def test_defaults_for_an_environment_without_entry() -> None:
    # The packaged entry of the bundled environment of the same action kind, not the library defaults.
    sources = HyperparamSources()
    discrete = (spaces.Discrete(5), spaces.Discrete(4))
    box = (spaces.Box(-1.0, 1.0, (2,)), spaces.Box(-1.0, 1.0, (1,)))
    dqn = fallback_entry(get_algo("dqn_shield"), sources, discrete)
    assert dqn.origin == "defaults: dqn.yml entry SafeCliffWalking-v0"
    assert dqn.entry["n_timesteps"] == 20_000 and dqn.entry["target_update_interval"] == 250
    safeq = fallback_entry(get_algo("safeq"), sources, box)
    assert safeq.entry["n_timesteps"] == 10_000 and safeq.entry["extraction"] == "reverse_kl"
    dict_observations = (spaces.Dict({"position": box[0]}), box[1])
    assert fallback_entry(get_algo("sac"), sources, dict_observations).entry["policy"] == "MultiInputPolicy"
    # An algorithm of the user's without a packaged file: its constructor's defaults, for SafeSupportQ's budget.
    mine = AlgoSpec("mine", "mine", "any", "sb3_safeq:SafeSupportQ")
    assert fallback_entry(mine, sources, discrete).entry == {"n_timesteps": 20_000, "policy": "MlpPolicy"}
