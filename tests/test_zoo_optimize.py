"""
Hyperparameter search through ``sb3-safeq train -optimize``: the embedded stores (Optuna journal file, SQLite) and a
real PostgreSQL server shared by concurrent workers, each worker a separate process.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sb3_safeq.zoo.hyperparams_opt import WORKER_ATTR
from tests.test_zoo import FAST, assert_ok, run_cli

#: Set (CI sets it) to make a missing PostgreSQL server a failure instead of a skip.
REQUIRE_POSTGRES_ENV = "SB3_SAFEQ_REQUIRE_POSTGRES"
# Two tiny trials per worker: 200 steps each, one evaluation episode at the end. No --seed: workers sharing a study
# need different sampler seeds (rl-zoo3 draws one), or they suggest the same parameters.
OPTIMIZE = ["train", "--algo", "safeq", "--env", "SafeCliffWalking-v0", "-optimize", "--n-trials", "2", "-n", "200",
            "--eval-episodes", "1", "--no-optim-plots", "-params", "learning_starts:100", "--num-threads", "1",
            "-f", "logs"]  # fmt: skip


def load_study(storage: str, study_name: str) -> optuna.Study:
    if storage.endswith(".log"):
        journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        return optuna.load_study(study_name=study_name, storage=journal)
    return optuna.load_study(study_name=study_name, storage=storage)


def start_worker(arguments: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sb3_safeq.zoo", *arguments],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def run_two_workers(arguments: list[str], cwd: Path) -> set[str]:
    """
    Run two optimize workers at the same time and wait for both.

    :return: the ``host:pid`` of each worker
    """
    workers = [start_worker(arguments, cwd, cwd / f"worker{index}.log") for index in range(2)]
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, (cwd / f"worker{index}.log").read_text()[-3000:]
    return {f"{socket.gethostname()}:{worker.pid}" for worker in workers}


def assert_trials_from(study: optuna.Study, workers: set[str], per_worker: int) -> None:
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == len(study.trials) == per_worker * len(workers)
    assert {trial.user_attrs[WORKER_ATTR] for trial in trials} == workers
    for trial in trials:
        assert {"alpha", "learning_rate", "batch_size_pow", "tau", "net_arch", "exploration"} <= set(trial.params)
        assert trial.value is not None


def test_optimize_on_sqlite_then_train_with_a_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trial_logs = ["--optimization-log-path", "trials"]
    assert_ok(run_cli(*OPTIMIZE, *trial_logs, "--storage", storage, "--study-name", "cliff", cwd=tmp_path))
    study = load_study(storage, "cliff")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    # The trials were evaluated by SafeTrialEvalCallback: inside the support, with the safety record.
    for evaluations in sorted((tmp_path / "trials").glob("trial_*/evaluations.npz")):
        assert list(np.load(evaluations)["unsafe_visits"]) == [0]
    assert len(list((tmp_path / "trials").glob("trial_*/evaluations.npz"))) == 2
    assert list((tmp_path / "logs" / "safeq").glob("report_SafeCliffWalking-v0_2-trials-200-*.csv"))

    # rl-zoo3 reloads a trial's hyperparameters through our converter (it ignores --trial-id 0: trial 1 it is).
    trial = study.trials[1]
    result = run_cli("train", "--algo", "safeq", "--env", "SafeCliffWalking-v0", "-n", "100", "--eval-freq", "-1",
                     "--storage", storage, "--study-name", "cliff", "--trial-id", "1", *FAST, cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    run_dirs = sorted((tmp_path / "logs" / "safeq").glob("SafeCliffWalking-v0_*/SafeCliffWalking-v0/config.yml"))
    config = yaml.load(run_dirs[-1].read_text(), Loader=yaml.UnsafeLoader)
    assert config["alpha"] == trial.params["alpha"]
    assert config["exploration"] == trial.params["exploration"]
    assert config["batch_size"] == 2 ** trial.params["batch_size_pow"]


def test_two_workers_share_the_default_embedded_study(tmp_path: Path) -> None:
    # No --storage: both workers use the same Optuna journal file under the log folder, and the same study name.
    workers = run_two_workers(OPTIMIZE, tmp_path)
    journal = tmp_path / "logs" / "safeq" / "SafeCliffWalking-v0_study.log"
    assert journal.is_file()
    assert_trials_from(load_study(str(journal), "safeq_SafeCliffWalking-v0"), workers, per_worker=2)


def _postgres_bin_dir() -> Path | None:
    candidates = [Path(found).resolve().parent for found in [shutil.which("pg_ctl")] if found]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian's layout, not on PATH
    return next((path for path in candidates if (path / "initdb").is_file() and (path / "pg_ctl").is_file()), None)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """
    A throw-away PostgreSQL server on 127.0.0.1 and a free port, with trust authentication: initdb and pg_ctl run as
    the ``postgres`` user when the tests run as root (initdb refuses root).
    """
    bin_dir = _postgres_bin_dir()
    is_root = os.geteuid() == 0
    problem = None
    if bin_dir is None:
        problem = "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's `postgresql` package"
    elif is_root and not _has_user("postgres"):
        problem = "initdb refuses root and there is no `postgres` user to run it (Debian's package creates one)"
    if problem is not None:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"{problem} ({REQUIRE_POSTGRES_ENV} is set, so this test must run).")
        pytest.skip(problem)
    assert bin_dir is not None
    base = Path(tempfile.mkdtemp(prefix="sb3_safeq_postgres_"))
    run_as: list[str] = []
    if is_root:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    pg_ctl = [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=base,
        )
        server_options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
        subprocess.run(
            [*pg_ctl, "-l", str(base / "server.log"), "-o", server_options, "-w", "start"],
            check=True,
            capture_output=True,
            cwd=base,
        )
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, capture_output=True, cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_a_study_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    # As docs/zoo.md says: create the study once, then start the workers (here two processes; on many machines, the
    # same command on each).
    optuna_cli = str(Path(sys.executable).parent / "optuna")
    create = ["create-study", "--storage", postgres_url, "--study-name", "cliff", "--direction", "maximize"]
    assert_ok(subprocess.run([optuna_cli, *create], capture_output=True, text=True, timeout=120))
    workers = run_two_workers([*OPTIMIZE, "--storage", postgres_url, "--study-name", "cliff"], tmp_path)
    assert_trials_from(load_study(postgres_url, "cliff"), workers, per_worker=2)
