"""
The report of a benchmark folder: ``time_to_90pct_s`` filled into ``runs.csv``, ``summary.md`` and the PNG plots.
"""

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sb3_safeq.bench.metrics import bootstrap_ci, target_return, time_to_target
from sb3_safeq.bench.provenance import read_invocations
from sb3_safeq.bench.runner import COLUMNS, rewrite_atomically

#: Curves of a run live in ``curves/<algo>__<env>__<seed>.json``.
CURVES_DIR = "curves"


#: The plots of each environment: file prefix and title.
PLOTS = {
    "learning_curves": "learning curves",
    "unsafe_visits": "cumulative training unsafe visits",
    "calibration": "calibration",
}


def load_curve(out_dir: Path, algo: str, env: str, seed: int) -> dict[str, Any] | None:
    """
    :param out_dir: the results folder
    :param algo: algorithm name
    :param env: environment id
    :param seed: seed
    :return: the run's JSON record (learning curve, calibration pairs), or None when missing
    """
    path = out_dir / CURVES_DIR / f"{algo}__{env}__{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def best_safe_returns(runs: pd.DataFrame) -> dict[str, float]:
    """
    :param runs: the rows of ``runs.csv``
    :return: per environment, the best mean final evaluation return (over seeds) of the algorithms that had no
        unsafe visit in any run (training and evaluation); NaN when none is safe. A mean, not the best single run,
        so that on a noisy environment the target is one an algorithm reaches, not the luckiest seed's.
    """
    unsafe = (runs["train_unsafe_visits"] > 0) | (runs["eval_unsafe_visits"] > 0)
    unsafe_algos = set(zip(runs.loc[unsafe, "env"], runs.loc[unsafe, "algo"], strict=True))
    means = runs.groupby(["env", "algo"])["eval_return_mean"].mean()
    best = dict.fromkeys(runs["env"].unique(), math.nan)
    for (env, algo), value in means.items():
        if (env, algo) not in unsafe_algos and (math.isnan(best[env]) or value > best[env]):
            best[env] = float(value)
    return best


def fill_time_to_target(runs: pd.DataFrame, out_dir: Path, fraction: float = 0.9) -> pd.DataFrame:
    """
    Fill ``time_to_90pct_s`` and ``steps_to_90pct``: the training wall time and the environment steps until the
    learning curve first reaches ``fraction`` of the environment's best safe return (see
    :func:`~sb3_safeq.bench.metrics.target_return`). Wall time is what a user waits; steps are the sample
    efficiency, independent of how often each algorithm trains.

    :param runs: the rows of ``runs.csv``
    :param out_dir: the results folder
    :param fraction: the fraction of the best safe return
    :return: the rows, with the columns filled
    """
    runs = runs.copy()
    best = best_safe_returns(runs)
    times, steps = [], []
    for row in runs.itertuples():
        record = load_curve(out_dir, row.algo, row.env, int(row.seed))
        if record is None or math.isnan(best[row.env]) or row.algo == "behavior":
            times.append(math.nan)
            steps.append(math.nan)
            continue
        curve, target = record["curve"], target_return(best[row.env], fraction)
        times.append(time_to_target(curve["time_s"], curve["eval_return"], target))
        steps.append(time_to_target(curve["steps"], curve["eval_return"], target))
    runs["time_to_90pct_s"] = times
    runs["steps_to_90pct"] = steps
    return runs


def interquartile_mean(values: pd.Series) -> float:
    """
    :param values: one value per seed (NaN dropped)
    :return: the interquartile mean (mean of the middle 50%, robust to one outlying seed; Agarwal et al. 2021)
    """
    array = values.to_numpy(dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(stats.trim_mean(array, 0.25)) if array.size else math.nan


def _interval(values: pd.Series, digits: int = 1) -> str:
    mean, low, high = bootstrap_ci(values.to_numpy(dtype=np.float64))
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def provenance_lines(invocations: list[dict[str, Any]]) -> list[str]:
    """
    :param invocations: the folder's recorded invocations (:func:`~sb3_safeq.bench.provenance.read_invocations`)
    :return: Markdown lines: the commands that produced the runs, when, on which machine and how long they took
    """
    if not invocations:
        return ["Produced by `sb3-safeq bench` (no recorded invocation).", ""]
    lines = ["Produced by these invocations of `sb3-safeq bench` (resumable, into the same folder):", ""]
    for record in invocations:
        lines.append(
            f"- `{record.get('command', '?')}` — {record.get('date', '?')}, {record.get('new_runs', '?')} run(s), "
            f"{float(record.get('wall_time_s', math.nan)):.0f} s; machine: {record.get('machine', '?')}"
        )
    return [*lines, ""]


#: Baselines that cannot take an unsafe action in training: shielded or masked (the "zero-violation" ones).
ZERO_VIOLATION_BASELINES = ("dqn_shield", "sac_shield", "ppo_mask")
#: Unconstrained baselines whose value calibration SafeSupportQ is compared with.
CALIBRATION_BASELINES = ("dqn", "sac")


def _abs_calibration(env_runs: pd.DataFrame, algo: str, column: str) -> str:
    # Mean over seeds of |normalised bias|.
    runs = env_runs[env_runs["algo"] == algo]
    value = float(runs[column].abs().mean()) if column in runs and not runs.empty else math.nan
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def headline_lines(runs: pd.DataFrame) -> list[str]:
    """
    The claims in one table, per environment: SafeSupportQ's training unsafe visits, its final return against the
    best zero-violation baseline, and the normalised calibration bias of its critic against the unconstrained
    baselines'. Each critic is scored against the quantity it estimates, with complete returns: SafeSupportQ's Q
    against soft returns of ``pi_Q`` (``calib_soft_norm_bias``), DQN's and SAC's against the returns of their
    deployed policy (``calib_complete_norm_bias``); SafeSupportQ's critic against the hard returns of its deployed
    policy is shown too.

    :param runs: the rows of ``runs.csv``
    :return: Markdown lines (empty without ``safeq`` runs)
    """
    if "safeq" not in set(runs["algo"]):
        return []
    lines = [
        "## Headline: SafeSupportQ (`safeq`) against the baselines",
        "",
        "Means over seeds. Best zero-violation baseline: the highest mean final return among "
        f"{', '.join(ZERO_VIOLATION_BASELINES)} on that environment. Calibration: mean over seeds of the absolute "
        "normalised bias of the critic, with complete returns (a time limit long enough that the scored states miss "
        "at most 5% of their return), each critic against what it estimates: SafeSupportQ's soft Q against the soft "
        "returns of pi_Q (rewards minus alpha * KL(pi_Q || beta) of the later states), "
        f"{' and '.join(CALIBRATION_BASELINES)} against the returns of their deployed policy. SafeSupportQ's soft Q "
        "against the hard returns of its deployed policy is low by design (by the discounted KL penalties): shown "
        "for reference.",
        "",
        "| env | seeds | safeq train unsafe visits (sum) | safeq return | best zero-violation baseline | return "
        "difference | safeq abs(calib norm bias), soft | "
        + " | ".join(f"{name} abs(calib norm bias)" for name in CALIBRATION_BASELINES)
        + " | safeq against hard returns |",
        "|---|---|---|---|---|---|---|" + "---|" * len(CALIBRATION_BASELINES) + "---|",
    ]
    for env, env_runs in runs.groupby("env", sort=True):
        safeq = env_runs[env_runs["algo"] == "safeq"]
        if safeq.empty:
            continue
        means = env_runs.groupby("algo")["eval_return_mean"].mean()
        baselines = means[means.index.isin(ZERO_VIOLATION_BASELINES)]
        if baselines.empty:
            best_name, best_return, difference = "n/a", "n/a", "n/a"
        else:
            best_name = str(baselines.idxmax())
            best_return = f"{baselines.max():.2f}"
            difference = f"{means['safeq'] - baselines.max():+.2f}"
        comparisons = [_abs_calibration(env_runs, name, "calib_complete_norm_bias") for name in CALIBRATION_BASELINES]
        lines.append(
            f"| {env} | {len(safeq)} | {int(safeq['train_unsafe_visits'].sum())} | {means['safeq']:.2f} | "
            f"{best_name} {best_return} | {difference} | "
            f"{_abs_calibration(env_runs, 'safeq', 'calib_soft_norm_bias')} | "
            + " | ".join(comparisons)
            + f" | {_abs_calibration(env_runs, 'safeq', 'calib_complete_norm_bias')} |"
        )
    return [*lines, ""]


def summary_table(runs: pd.DataFrame, invocations: list[dict[str, Any]] | None = None) -> str:
    """
    :param runs: the rows of ``runs.csv``
    :param invocations: the invocations that produced them (listed at the top)
    :return: the Markdown summary: per environment and algorithm, the mean and 95% bootstrap interval over seeds,
        and the plots
    """
    lines = [
        "# Benchmark summary",
        "",
        *provenance_lines(invocations or []),
        *headline_lines(runs),
        "Mean [95% bootstrap interval over seeds, 2000 resamples]; IQM: interquartile mean over seeds; training unsafe "
        "visits: the maximum over seeds. Calibration, complete returns: the same policy under a longer time limit, "
        "scored only at states whose return misses at most 5% of its tail; soft: SafeSupportQ's critic against the "
        "soft returns of pi_Q, complete (what its Q estimates). Tabular error against exact soft value iteration: the "
        "largest over the reachable safe pairs, and the mean weighted by the soft-optimal policy's discounted "
        "occupancy.",
        "",
    ]
    best = best_safe_returns(runs)
    for env, env_runs in runs.groupby("env", sort=True):
        # Kept: pandas' to_markdown needs tabulate (another dependency) and pads cells, which would rewrite every
        # published table; the cells are preformatted strings, so a row is one f-string.
        lines += [
            f"## {env}",
            "",
            f"Best safe return: {best[env]:.2f}.",
            "",
            "| algo | seeds | steps | eval return | eval return IQM | pi_Q return | train unsafe visits (max) | "
            "eval unsafe visits (max) | calib norm bias | calib norm bias, complete returns | calib norm bias, soft | "
            "support leakage | max abs(Q - Q*) | occupancy-weighted abs(Q - Q*) | fps | time to 90% (s) | "
            "steps to 90% | peak MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for algo, group in env_runs.groupby("algo", sort=True):
            leakage = group["support_leakage"].mean()
            q_error = group["tabular_q_error"].mean()
            q_error_weighted = group["tabular_q_error_occupancy"].mean()
            lines.append(
                f"| {algo} | {len(group)} | {int(group['n_timesteps'].max())} | {_interval(group['eval_return_mean'])} "
                f"| {interquartile_mean(group['eval_return_mean']):.1f} "
                f"| {_interval(group['eval_return_induced'])} "
                f"| {int(group['train_unsafe_visits'].max())} | {int(group['eval_unsafe_visits'].max())} "
                f"| {_interval(group['calib_norm_bias'], 2)} | {_interval(group['calib_complete_norm_bias'], 2)} "
                f"| {_interval(group['calib_soft_norm_bias'], 2)} "
                f"| {'n/a' if math.isnan(leakage) else f'{leakage:.3f}'} "
                f"| {'n/a' if math.isnan(q_error) else f'{q_error:.2f}'} "
                f"| {'n/a' if math.isnan(q_error_weighted) else f'{q_error_weighted:.3f}'} "
                f"| {_interval(group['fps'], 0)} | {_interval(group['time_to_90pct_s'])} "
                f"| {_interval(group['steps_to_90pct'], 0)} "
                f"| {group['peak_memory_mb'].max():.0f} |"
            )
        lines.append("")
        for kind, title in PLOTS.items():
            lines.append(f"![{title}]({kind}_{env}.png)")
        lines.append("")
    return "\n".join(lines)


def _band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    length = min(len(curve) for curve in curves)
    stacked = np.stack([curve[:length] for curve in curves])
    bounds = np.array([bootstrap_ci(stacked[:, index]) for index in range(length)])
    return bounds[:, 0], bounds[:, 1], bounds[:, 2]


def plot_all(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """
    Learning curves (mean and 95% bootstrap band), cumulative training unsafe visits (symlog) and the calibration
    scatter (Q̂ vs Monte-Carlo return, lowest seed of each algorithm), one figure per environment and kind.

    :param runs: the rows of ``runs.csv``
    :param out_dir: the results folder
    :return: the PNG files written
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for env, env_runs in runs.groupby("env", sort=True):
        figures = {kind: plt.subplots(figsize=(7, 4.5)) for kind in PLOTS}
        for algo, group in env_runs.groupby("algo", sort=True):
            loaded = [load_curve(out_dir, algo, env, int(seed)) for seed in sorted(group["seed"].astype(int))]
            records = [record for record in loaded if record is not None]
            if not records:
                continue
            steps = np.asarray(min((record["curve"]["steps"] for record in records), key=len), dtype=np.float64)
            mean, low, high = _band([np.asarray(record["curve"]["eval_return"], dtype=float) for record in records])
            axis = figures["learning_curves"][1]
            if len(steps) == 1:  # the behavior policy: no training, a horizontal line
                axis.axhline(mean[0], linestyle="--", color="gray", label=algo)
            else:
                (line,) = axis.plot(steps[: len(mean)], mean, label=algo)
                axis.fill_between(steps[: len(mean)], low, high, color=line.get_color(), alpha=0.2)
            if len(steps) > 1:
                mean, low, high = _band(
                    [np.asarray(record["curve"]["unsafe_visits"], dtype=float) for record in records]
                )
                axis = figures["unsafe_visits"][1]
                (line,) = axis.plot(steps[: len(mean)], mean, label=algo)
                axis.fill_between(steps[: len(mean)], low, high, color=line.get_color(), alpha=0.2)
            pairs = records[0]["calibration"]
            if pairs["q_hat"]:
                figures["calibration"][1].scatter(pairs["mc_return"], pairs["q_hat"], s=8, alpha=0.6, label=algo)
        labels = {
            "learning_curves": ("environment steps", "evaluation return (deployed policy)"),
            "unsafe_visits": ("environment steps", "cumulative unsafe visits in training"),
            "calibration": ("Monte-Carlo discounted return", "Q̂(s, a)"),
        }
        for kind, (figure, axis) in figures.items():
            axis.set_xlabel(labels[kind][0])
            axis.set_ylabel(labels[kind][1])
            axis.set_title(f"{env}: {kind.replace('_', ' ')}")
            if kind == "unsafe_visits":
                axis.set_yscale("symlog", linthresh=1)
            if kind == "learning_curves":  # unshielded baselines can score far below the others
                axis.set_yscale("symlog", linthresh=10)
            if kind == "calibration":
                limits = [*axis.get_xlim(), *axis.get_ylim()]
                axis.plot([min(limits), max(limits)], [min(limits), max(limits)], color="black", linewidth=0.8)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=8)
            figure.tight_layout()
            path = out_dir / f"{kind}_{env}.png"
            figure.savefig(path, dpi=100)
            plt.close(figure)
            written.append(path)
    return written


def write_report(out_dir: Path) -> tuple[Path, list[Path]]:
    """
    Fill ``time_to_90pct_s`` in ``runs.csv``, write ``summary.md`` and the plots.

    :param out_dir: the results folder (with ``runs.csv``)
    :return: the summary file and the plot files
    """
    runs_csv = out_dir / "runs.csv"
    runs = pd.read_csv(runs_csv).reindex(columns=list(COLUMNS))
    runs = fill_time_to_target(runs, out_dir)
    runs = runs.sort_values(["env", "algo", "seed"])
    rewrite_atomically(runs_csv, lambda target: runs[list(COLUMNS)].to_csv(target, index=False))
    summary = out_dir / "summary.md"
    summary.write_text(summary_table(runs, read_invocations(out_dir)) + "\n")
    return summary, plot_all(runs, out_dir)


def publish_report(out_dir: Path, target_dir: Path) -> Path:
    """
    Copy the report of a folder (``summary.md`` as ``results.md``, and the plots it links) into ``target_dir``, e.g.
    ``docs/benchmarks``, where the links still work.

    :param out_dir: the results folder (after :func:`write_report`)
    :param target_dir: where to publish
    :return: the published ``results.md``
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    for plot in sorted(out_dir.glob("*.png")):
        shutil.copy2(plot, target_dir / plot.name)
    results = target_dir / "results.md"
    shutil.copy2(out_dir / "summary.md", results)
    return results
