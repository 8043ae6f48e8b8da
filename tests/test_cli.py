"""
The ``sb3-safeq`` dispatcher (:mod:`sb3_safeq.cli`) and the entry points' handling of a missing extra: a one-line
message naming the extra to install and a non-zero exit code, not a ``ModuleNotFoundError`` traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_safeq.cli import COMMANDS, USAGE, main
from sb3_safeq.commands import EXTRA_MODULES, MISSING_EXTRA_EXIT_CODE, Command, run_command
from sb3_safeq.zoo.cli import main as zoo_main

BENCH_HINT = 'pip install "sb3-safeq[bench]"'


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """:return: ``python -c code`` run in ``cwd``, output captured as text"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_help_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.strip() == USAGE
    assert set(COMMANDS) == {"train", "enjoy", "record_video", "plot-safety", "bench", "safety-record", "collect"}
    assert main([]) == 2
    assert "no command given" in capsys.readouterr().err
    assert main(["bnech"]) == 2
    choices = "choose one of train, enjoy, record_video, plot-safety, bench, safety-record, collect."
    assert f"unknown command 'bnech': {choices}" in capsys.readouterr().err


def test_the_zoo_entry_point_knows_only_its_own_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # The benchmark depends on the zoo, not the other way round (tests/test_import_graph.py checks the imports).
    assert zoo_main(["bench"]) == 2
    assert "choose one of train, enjoy, record_video, plot-safety." in capsys.readouterr().err


@pytest.mark.parametrize("module", EXTRA_MODULES["bench"])
def test_bench_without_its_extra_says_which_extra_to_install(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without the module looks like to imports
    assert main(["bench", "--quick", "--out", str(tmp_path / "out")]) == MISSING_EXTRA_EXIT_CODE != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sb3-safeq bench: error: missing optional module"), err
    assert repr(module) in err and BENCH_HINT in err
    assert not (tmp_path / "out").exists()  # checked before any run started


def test_a_missing_extra_module_found_on_import_is_reported_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A module of the extra that the upfront check does not list, imported by the command as it runs.
    (tmp_path / "sb3_safeq_test_needs_scipy.py").write_text("def main(argv):\n    import scipy.stats\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "scipy", None)
    command = Command("sb3_safeq_test_needs_scipy:main", extra="bench")
    assert run_command("sb3-safeq bench", command, []) == MISSING_EXTRA_EXIT_CODE
    expected = f"sb3-safeq bench: error: missing optional module 'scipy': install the 'bench' extra: {BENCH_HINT}\n"
    assert capsys.readouterr().err == expected
    # A module outside the command's extra is a broken install: its traceback is kept.
    with pytest.raises(ModuleNotFoundError):
        run_command("sb3-safeq train", Command("sb3_safeq_test_needs_scipy:main", extra="zoo"), [])


SB3_SAFEQ_BENCH = "from sb3_safeq.cli import main; sys.exit(main(['bench', '--quick']))"
PYTHON_M_BENCH = "import runpy; sys.argv = ['-m', '--quick']; runpy.run_module('sb3_safeq.bench', run_name='__main__')"


@pytest.mark.parametrize(
    ("entry_point", "blocked"),
    [(SB3_SAFEQ_BENCH, "scipy"), (PYTHON_M_BENCH, "pandas")],
    ids=["sb3-safeq bench", "python -m sb3_safeq.bench"],
)
def test_bench_entry_points_without_the_extra_print_one_line(entry_point: str, blocked: str, tmp_path: Path) -> None:
    # A fresh interpreter: bench.cli is not imported yet, as in a real run (scipy is imported by bench.cli's imports).
    result = run_python(f"import sys; sys.modules[{blocked!r}] = None\n{entry_point}", cwd=tmp_path)
    assert result.returncode == MISSING_EXTRA_EXIT_CODE, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line and line.strip()]
    assert len(lines) == 1 and repr(blocked) in lines[0] and BENCH_HINT in lines[0], result.stderr
    assert not (tmp_path / "bench_results").exists()


def test_train_does_not_import_the_benchmark(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import sb3_safeq\n"
        "from sb3_safeq.cli import main\n"
        "assert main(['--help']) == 0\n"
        "for name in ('pandas', 'scipy', 'matplotlib'):\n"
        "    assert name not in sys.modules, name\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'sb3_safeq.zoo.train' in sys.modules\n"
        "bench = sorted(name for name in sys.modules if name.startswith('sb3_safeq.bench.'))\n"
        "assert not bench, bench\n"
    )
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def run_train(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """:return: ``python -m sb3_safeq train`` of safeq on cliff walking for 100 steps, with more options"""
    command = ["train", "--algo", "safeq", "--env", "SafeCliffWalking-v0", "-n", "100", "-f", str(tmp_path / "logs")]
    return subprocess.run(
        [sys.executable, "-m", "sb3_safeq", *command, *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_an_argument_safeq_refuses_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # `-params alpha:-1` reaches SafeSupportQ's constructor inside rl-zoo3: its InvalidArgumentError is a usage error.
    result = run_train(tmp_path, "-params", "alpha:-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "sb3-safeq train: error: alpha=-1 is invalid" in result.stderr


def test_an_unreachable_optuna_storage_is_one_line(tmp_path: Path) -> None:
    # Port 1 on the loopback refuses connections at once: SQLAlchemy's traceback becomes one line naming the fix.
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    result = run_train(tmp_path, "-optimize", "--n-trials", "1", "--storage", url)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--storage {url!r}: cannot open the Optuna storage" in result.stderr
    assert "that the database server runs and accepts connections" in result.stderr
