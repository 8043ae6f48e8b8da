"""
``sb3-safeq bench`` (also ``python -m sb3_safeq.bench``): algorithms x environments x seeds in parallel processes,
with the packaged rl-zoo3 hyperparameters, resumable results and a report.

    sb3-safeq bench --quick
    sb3-safeq bench --envs SafeCliffWalking-v0 SafePointMass-v0 --seeds 5 --jobs 2 --out bench_results/full
"""

import argparse
import sys
import time
from pathlib import Path

from sb3_safeq.bench.algorithms import ALGORITHMS, BenchConfigError, env_action_space, get_algo
from sb3_safeq.bench.runner import RunTask, run_benchmark

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
    parser.add_argument("--algos", nargs="+", default=None, help=f"algorithms (default: all): {', '.join(ALGORITHMS)}")
    parser.add_argument("--envs", nargs="+", default=None, help="environment ids (default: the bundled safe ones)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default 5)")
    parser.add_argument("--seed-offset", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: n_timesteps of the files)")
    parser.add_argument("--max-steps", type=int, default=None, help="upper bound on the training steps")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one fresh process per run)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes of the final evaluation")
    parser.add_argument("--calib-episodes", type=int, default=5, help="episodes of the value calibration")
    parser.add_argument("--curve-points", type=int, default=10, help="evaluations along training")
    parser.add_argument("--curve-episodes", type=int, default=3, help="episodes per learning-curve evaluation")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench_results/<timestamp>)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: " + str(QUICK))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report of --out")
    return parser


def make_tasks(args: argparse.Namespace) -> list[RunTask]:
    """
    :param args: the parsed command line (after the ``--quick`` preset)
    :return: the runs (algorithm x environment x seed, where the algorithm fits the action space)
    """
    specs = [get_algo(name) for name in args.algos]
    for name, value in (("--seeds", args.seeds), ("--jobs", args.jobs), ("--eval-episodes", args.eval_episodes)):
        if value < 1:
            raise BenchConfigError(f"{name} must be >= 1, got {value}.")
    tasks = []
    for env_id in args.envs:
        action_space = env_action_space(env_id)
        for spec in specs:
            if not spec.runs_on(action_space):
                continue
            for seed in range(args.seed_offset, args.seed_offset + args.seeds):
                tasks.append(
                    RunTask(
                        algo=spec.name,
                        env=env_id,
                        seed=seed,
                        out_dir=str(args.out),
                        steps=args.steps,
                        max_steps=args.max_steps,
                        eval_episodes=args.eval_episodes,
                        curve_points=args.curve_points,
                        curve_episodes=args.curve_episodes,
                        calib_episodes=args.calib_episodes,
                        spec=spec,
                    )
                )
    if not tasks:
        raise BenchConfigError(f"No run: none of the algorithms {args.algos} fits the environments {args.envs}.")
    return tasks


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and write its report.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    :return: the exit code: 0 on success, 2 on a configuration error, 1 when runs failed
    """
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.algos = args.algos or list(ALGORITHMS)
    args.envs = args.envs or list(DEFAULT_ENVS)
    args.seeds = 5 if args.seeds is None else args.seeds
    args.out = args.out or Path("bench_results") / time.strftime("%Y%m%d-%H%M%S")
    start = time.perf_counter()
    try:
        if not args.report_only:
            tasks = make_tasks(args)
            run_benchmark(tasks, args.out, jobs=args.jobs, progress=not args.no_progress)
    except BenchConfigError as error:
        print(f"sb3-safeq bench: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"sb3-safeq bench: {error}", file=sys.stderr)
        return 1
    if not (args.out / "runs.csv").is_file():
        print(f"sb3-safeq bench: error: no {args.out / 'runs.csv'} to report on.", file=sys.stderr)
        return 2
    from sb3_safeq.bench.report import write_report

    summary, plots = write_report(args.out)
    print(f"Wrote {args.out / 'runs.csv'}, {summary} and {len(plots)} plots in {time.perf_counter() - start:.0f} s.")
    return 0
