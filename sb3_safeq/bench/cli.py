"""
``sb3-safeq bench`` (also ``python -m sb3_safeq.bench``): algorithms x environments x seeds in parallel processes,
with the packaged rl-zoo3 hyperparameters (or yours: --conf-file, --hyperparams-dir), resumable results and a report.
Your own environments: --gym-packages; your own algorithms: --algo-module (docs/benchmarks.md).

    sb3-safeq bench --quick
    sb3-safeq bench --envs SafeCliffWalking-v0 SafePointMass-v0 --seeds 5 --jobs 2 --out bench_results/full
    sb3-safeq bench --gym-packages my_envs --envs MyEnv-v0 --algos safeq dqn_shield ppo_mask --hyperparams-dir my_hp
    sb3-safeq bench --executor ray --address auto --seeds 10 --out bench_results/cluster   # on a Ray cluster's head
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sb3_safeq.bench.algorithms import ALGORITHMS, DEFAULT_ALGOS, AlgoSpec, env_action_space, get_algo
from sb3_safeq.bench.errors import BenchConfigError
from sb3_safeq.bench.executors import EXECUTOR_NAMES, make_executor
from sb3_safeq.bench.hyperparams import (
    HyperparamSources,
    make_env_spaces,
    parse_conf_files,
    resolve_entry,
    step_budget,
)
from sb3_safeq.bench.imports import import_user_modules
from sb3_safeq.bench.provenance import record_invocation
from sb3_safeq.bench.runner import RunTask, importing_callers_script, read_rows, row_key, run_benchmark
from sb3_safeq.zoo.config import check_hyperparameter_names
from sb3_safeq.zoo.errors import ZooUsageError

#: The lock file of a results folder (see :func:`acquire_folder_lock`).
LOCK_FILE = ".bench.lock"
#: Default environments (every bundled safe environment).
DEFAULT_ENVS = (
    "SafeCliffWalking-v0",
    "SafeCliffWalkingSlippery-v0",
    "SafeFrozenLake8x8-v0",
    "SafeCartPole-v0",
    "SafePointMass-v0",
    "SafeDoubleIntegrator-v0",
)
#: ``--quick``: a few minutes on two cores.
QUICK = {
    "envs": ["SafeCliffWalking-v0"],
    "algos": ["safeq", "behavior", "dqn", "dqn_shield", "ppo_mask"],
    "seeds": 2,
    "max_steps": 4000,
}


def build_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser"""
    parser = argparse.ArgumentParser(
        prog="sb3-safeq bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--algos",
        nargs="+",
        default=None,
        help=f"algorithms (default: {' '.join(DEFAULT_ALGOS)}); all: {' '.join(ALGORITHMS)}",
    )
    parser.add_argument("--envs", nargs="+", default=None, help="environment ids (default: the bundled safe ones)")
    parser.add_argument(
        "--gym-packages",
        nargs="+",
        default=[],
        help="packages to import (here and in every run process) for their environment registrations, as rl-zoo3",
    )
    parser.add_argument(
        "--conf-file",
        nargs="+",
        default=[],
        metavar="ALGO=PATH",
        help="your hyperparameter file (rl-zoo3 format) for an algorithm, or the file it reads (dqn: dqn_shield too)",
    )
    parser.add_argument(
        "--hyperparams-dir",
        type=Path,
        default=None,
        help="a folder of <algo>.yml hyperparameter files (rl-zoo3 format) read before the packaged ones",
    )
    parser.add_argument(
        "--algo-module",
        nargs="+",
        default=[],
        help="modules to import for their register_algo calls (your algorithms and variants)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default 5)")
    parser.add_argument("--seed-offset", type=int, default=0, help="first seed")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps of every run (default: the budget of the environment; without any entry for it, 20000 "
        "for Discrete actions and 10000 for Box actions)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="upper bound on the training steps")
    parser.add_argument(
        "--own-budgets",
        action="store_true",
        help="train each algorithm for the n_timesteps of its own hyperparameter file (default: every algorithm gets "
        "the n_timesteps of the environment's entry in safeq.yml, so that all compare at equal steps)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="parallel runs, one fresh process each: local, the processes (default 1); ray, a cap on the runs at "
        "once (default: as many as the cluster's CPUs take)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        default="local",
        help="where the runs execute: processes of this machine, or Ray tasks (a cluster with --address, else a Ray "
        'instance started on this machine; pip install "sb3-safeq[ray]"); this process writes the results either way',
    )
    parser.add_argument(
        "--address",
        default=None,
        help="the Ray cluster to run on (--executor ray): auto (the one `ray start` joined on this machine), "
        "host:port of its head, or ray://host:10001",
    )
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes of the final evaluation")
    parser.add_argument("--calib-episodes", type=int, default=5, help="episodes of the value calibration")
    parser.add_argument("--curve-points", type=int, default=10, help="evaluations along training")
    parser.add_argument("--curve-episodes", type=int, default=3, help="episodes per learning-curve evaluation")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench_results/<timestamp>)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: " + str(QUICK))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report of --out")
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy summary.md (as results.md) and the plots into this folder (e.g. docs/benchmarks)",
    )
    return parser


def make_tasks(args: argparse.Namespace) -> list[RunTask]:
    """
    :param args: the parsed command line (after the ``--quick`` preset)
    :return: the runs (algorithm x environment x seed, where the algorithm fits the action space)
    """
    import_user_modules(args.gym_packages, "--gym-packages")
    import_user_modules(args.algo_module, "--algo-module")
    specs = [get_algo(name) for name in args.algos]
    sources = HyperparamSources(
        conf_files=parse_conf_files(args.conf_file),
        hyperparams_dir=None if args.hyperparams_dir is None else str(args.hyperparams_dir),
    )
    _check_sources(sources, specs)
    numbers = [("--seeds", args.seeds), ("--eval-episodes", args.eval_episodes)]
    numbers += [
        (name, value)
        for name, value in (("--steps", args.steps), ("--max-steps", args.max_steps), ("--jobs", args.jobs))
        if value is not None
    ]
    for name, value in numbers:
        if value < 1:
            raise BenchConfigError(f"{name} must be >= 1, got {value}.")
    tasks = []
    for env_id in args.envs:
        action_space = env_action_space(env_id)
        env_spaces = make_env_spaces(env_id)
        for spec in specs:
            if not spec.runs_on(action_space):
                continue
            _check_hyperparameters(spec, env_id, sources, env_spaces)  # here, not in a run process after minutes
            budget = (
                args.steps
                if args.steps is not None
                else step_budget(spec, env_id, not args.own_budgets, sources, env_spaces)
            )
            if args.max_steps is not None:
                budget = min(budget, args.max_steps)
            for seed in range(args.seed_offset, args.seed_offset + args.seeds):
                tasks.append(
                    RunTask(
                        algo=spec.name,
                        env=env_id,
                        seed=seed,
                        out_dir=str(args.out),
                        steps=budget,
                        eval_episodes=args.eval_episodes,
                        curve_points=args.curve_points,
                        curve_episodes=args.curve_episodes,
                        calib_episodes=args.calib_episodes,
                        spec=spec,
                        gym_packages=tuple(args.gym_packages),
                        sources=sources,
                    )
                )
    if not tasks:
        raise BenchConfigError(f"No run: none of the algorithms {args.algos} fits the environments {args.envs}.")
    return tasks


def _check_sources(sources: HyperparamSources, specs: list[AlgoSpec]) -> None:
    """
    :param sources: the user's hyperparameter files
    :param specs: the algorithms to run
    :raises BenchConfigError: a ``--conf-file`` for no algorithm of the run, or a ``--hyperparams-dir`` that is not a
        folder
    """
    if sources.hyperparams_dir is not None and not Path(sources.hyperparams_dir).is_dir():
        raise BenchConfigError(f"--hyperparams-dir {sources.hyperparams_dir}: no such folder.")
    known = {spec.name for spec in specs} | {spec.hyperparams for spec in specs if spec.hyperparams is not None}
    for algo in sources.conf_files:
        if algo not in known:
            raise BenchConfigError(
                f"--conf-file {algo}=...: no algorithm of this run is or reads {algo!r}; the files they read: "
                f"{', '.join(sorted(known))}."
            )


def _check_hyperparameters(
    spec: AlgoSpec, env_id: str, sources: HyperparamSources, env_spaces: tuple[Any, Any]
) -> None:
    """
    Find the algorithm's entry for the environment and check its names against the constructor, so that a missing
    entry or a misspelt hyperparameter is one line now.

    :param spec: the algorithm
    :param env_id: the environment id
    :param sources: the user's hyperparameter files
    :param env_spaces: the environment's observation and action spaces
    """
    if spec.hyperparams is None or spec.class_path is None:
        return
    resolved = resolve_entry(spec, env_id, sources, env_spaces)
    assert resolved is not None  # a trained algorithm always gets an entry (its file's, or the defaults)
    try:
        algo_class = spec.load_class()
    except (ImportError, AttributeError) as error:
        raise BenchConfigError(f"The algorithm {spec.name}: cannot load {spec.class_path} ({error}).") from error
    names = [*resolved.entry, *spec.extra_kwargs]
    try:
        check_hyperparameter_names(names, spec.name, algo_class, f"{resolved.origin} for {spec.name}")
    except ZooUsageError as error:
        raise BenchConfigError(str(error)) from error


def acquire_folder_lock(out_dir: Path) -> FileLock:
    """
    Take the results folder for this invocation: two invocations appending to one ``runs.csv`` while one of them
    rewrites it in its report could lose rows. The lock (``.bench.lock``, an OS file lock) ends with its process, so a
    killed invocation leaves no stale lock behind.

    :param out_dir: the results folder
    :return: the held lock (release it when done)
    :raises BenchConfigError: another invocation holds it
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / LOCK_FILE, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise BenchConfigError(
            f"Another sb3-safeq bench is writing to {out_dir}: wait for it, or use another --out."
        ) from None
    return lock


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and write its report.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    :return: the exit code: 0 on success, 2 on a configuration error, 1 when runs failed; 0 at once in a run process
        that imports the calling script again (a script without ``if __name__ == "__main__":``)
    """
    if importing_callers_script():
        return 0
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw_argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.algos = args.algos or list(DEFAULT_ALGOS)
    args.envs = args.envs or list(DEFAULT_ENVS)
    args.seeds = 5 if args.seeds is None else args.seeds
    args.out = args.out or Path("bench_results") / time.strftime("%Y%m%d-%H%M%S")
    start = time.perf_counter()
    try:
        if not args.report_only:
            tasks = make_tasks(args)
            executor = make_executor(args.executor, jobs=args.jobs, address=args.address)
            lock = acquire_folder_lock(args.out)
            keys_before = {row_key(row) for row in read_rows(args.out / "runs.csv")}
            try:
                run_benchmark(tasks, args.out, progress=not args.no_progress, executor=executor)
            finally:  # also after failed runs: the others are in runs.csv
                new_runs = sum(row_key(row) not in keys_before for row in read_rows(args.out / "runs.csv"))
                if new_runs > 0:
                    record_invocation(args.out, raw_argv, new_runs, time.perf_counter() - start)
                lock.release()
    except BenchConfigError as error:
        print(f"sb3-safeq bench: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"sb3-safeq bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"sb3-safeq bench: interrupted; the finished runs are in {args.out / 'runs.csv'} and the same command "
            "resumes from there.",
            file=sys.stderr,
        )
        return 130
    if not (args.out / "runs.csv").is_file():
        print(f"sb3-safeq bench: error: no {args.out / 'runs.csv'} to report on.", file=sys.stderr)
        return 2
    from sb3_safeq.bench.report import publish_report, write_report

    summary, plots = write_report(args.out)
    if args.publish is not None:
        published = publish_report(args.out, args.publish)
        print(f"Published {published} and {len(plots)} plots.")
    print(f"Wrote {args.out / 'runs.csv'}, {summary} and {len(plots)} plots in {time.perf_counter() - start:.0f} s.")
    return 0
