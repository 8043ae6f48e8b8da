"""
``sb3-safeq plot-safety``: episode cost and cumulative unsafe visits against timesteps, from the ``monitor.csv`` files
of rl-zoo3-style log folders (``<folder>/<algo>/<env>_<run>/*monitor.csv``), beside rl-zoo3's reward plots
(``python -m rl_zoo3.cli plot_train``).

The cost columns are those ``sb3-safeq train`` writes by default (``monitor_kwargs`` with ``info_keywords=
("episode_cost", "episode_unsafe_visits")`` and the :class:`~sb3_safeq.SafetyWrapper` inside the ``Monitor``). Each
run is one line; runs of the same algorithm share a colour.
"""

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from stable_baselines3.common.monitor import load_results

from sb3_safeq.zoo.errors import ZooUsageError

#: The ``monitor.csv`` columns the plot needs (``info_keywords`` of the ``Monitor``).
COST_COLUMNS = ("episode_cost", "episode_unsafe_visits")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sb3-safeq plot-safety", description=__doc__)
    parser.add_argument("-f", "--folder", help="log folder (as given to train)", default="logs")
    parser.add_argument("--algos", help="algorithms", nargs="+", required=True)
    parser.add_argument("--envs", help="environment ids", nargs="+", required=True)
    parser.add_argument("-o", "--output", help="the PNG file to write", default="safety.png")
    parser.add_argument("--exp-ids", help="only these runs (the _<id> of the folders)", nargs="+", type=int, default=[])
    return parser


def read_runs(folder: Path, algo: str, env_id: str, exp_ids: list[int]) -> dict[str, pd.DataFrame]:
    """
    :param folder: the log folder
    :param algo: the algorithm
    :param env_id: the environment id
    :param exp_ids: only these runs (empty: all)
    :return: run folder name -> its episodes (``monitor.csv`` rows in time order, with ``timesteps``: the training
        steps at the end of each episode)
    :raises ZooUsageError: when there is no run, or a run's monitor files lack the cost columns
    """
    run_dirs = sorted(path for path in (folder / algo).glob(f"{env_id}_*") if path.is_dir())
    if exp_ids:
        run_dirs = [path for path in run_dirs if path.name.rsplit("_", 1)[-1] in {str(i) for i in exp_ids}]
    runs = {}
    for run_dir in run_dirs:
        if not list(run_dir.glob("*monitor.csv")):
            continue
        episodes = load_results(str(run_dir))
        missing = [column for column in COST_COLUMNS if column not in episodes.columns]
        if missing:
            raise ZooUsageError(
                f"{run_dir}: the monitor files have no {', '.join(missing)} column: train with the SafetyWrapper "
                f"inside the Monitor and monitor_kwargs: dict(info_keywords={COST_COLUMNS!r}) (sb3-safeq train does "
                "both for an entry without env_wrapper and monitor_kwargs)."
            )
        episodes = episodes.sort_values("t").reset_index(drop=True)
        episodes["timesteps"] = episodes["l"].cumsum()
        runs[run_dir.name] = episodes
    if not runs:
        raise ZooUsageError(
            f"no monitor files for {algo} on {env_id} under {folder} (looked for {folder}/{algo}/{env_id}_*/"
            "*monitor.csv): train with `sb3-safeq train` and -f pointing there."
        )
    return runs


def plot_safety(argv: list[str]) -> None:
    """
    Draw the cost and unsafe-visit curves of the runs into one PNG: one row per environment, episode cost on the
    left, cumulative unsafe visits on the right.

    :param argv: the arguments after ``plot-safety``
    """
    args = _parser().parse_args(argv)
    folder = Path(args.folder)
    runs = {
        (algo, env_id): read_runs(folder, algo, env_id, args.exp_ids) for env_id in args.envs for algo in args.algos
    }
    # A Figure of its own, not pyplot's: a file only, no window and no backend to choose.
    figure = Figure(figsize=(11, 3.5 * len(args.envs)))
    axes = figure.subplots(len(args.envs), 2, squeeze=False)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, env_id in enumerate(args.envs):
        cost_axis, visits_axis = axes[row]
        for index, algo in enumerate(args.algos):
            color = colors[index % len(colors)]
            for run_index, episodes in enumerate(runs[algo, env_id].values()):
                label = algo if run_index == 0 else None
                cost_axis.plot(episodes["timesteps"], episodes["episode_cost"], color=color, alpha=0.8, label=label)
                visits = np.cumsum(episodes["episode_unsafe_visits"].to_numpy())
                visits_axis.plot(episodes["timesteps"], visits, color=color, alpha=0.8, label=label)
        cost_axis.set(title=f"{env_id}: episode cost", xlabel="timesteps", ylabel="episode cost")
        visits_axis.set(title=f"{env_id}: unsafe visits", xlabel="timesteps", ylabel="cumulative unsafe visits")
        cost_axis.legend()
        visits_axis.legend()
    figure.tight_layout()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    print(f"Saved {output}")
