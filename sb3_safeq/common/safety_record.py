"""
The safety record that survives a crash.

A checkpoint holds ``model.safety_counters`` up to the step it is taken at; the steps after it until a crash are in
no saved model. ``monitor.csv`` files hold them, one row per finished episode, when the ``Monitor`` records the
:class:`~sb3_safeq.SafetyWrapper`'s ``episode_cost`` and ``episode_unsafe_visits`` (``info_keywords``; the packaged
hyperparameter files do). :func:`recover_safety_record` adds the rows that end after the checkpoint to its counters,
less the part of each episode that was already in progress, and so already counted, at the checkpoint
(:class:`EpisodesInProgress`, saved with the model).
"""

import csv
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sb3_safeq.common.wrappers import EPISODE_COST_INFO_KEY, EPISODE_UNSAFE_INFO_KEY, SafetyCounters

#: ``make_vec_env(..., monitor_dir=...)`` and rl-zoo3 name the file of the environment of rank ``k`` ``k.monitor.csv``.
RANKED_MONITOR_FILE = re.compile(r"^(\d+)\.monitor\.csv$")
MONITOR_SUFFIX = "monitor.csv"


@dataclass
class EpisodesInProgress:
    """
    The safety record of each environment's episode in progress at the last counted step, and the wall-clock time of
    that step: what a checkpoint needs to be reconciled with the ``monitor.csv`` rows written after it.

    :param steps: steps of each environment's current episode, shape ``(n_envs,)``
    :param cost: their summed cost, shape ``(n_envs,)``
    :param unsafe_visits: their steps with a cost ``> 0``, shape ``(n_envs,)``
    :param updated_at: ``time.time()`` after the last counted step (seconds since the epoch; 0 before any step)
    """

    steps: np.ndarray
    cost: np.ndarray
    unsafe_visits: np.ndarray
    updated_at: float = 0.0

    @classmethod
    def new(cls, n_envs: int) -> "EpisodesInProgress":
        """
        :param n_envs: number of environments
        :return: the record of fresh episodes
        """
        return cls(np.zeros(n_envs, dtype=np.int64), np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64))

    def update(self, costs: np.ndarray, dones: np.ndarray) -> None:
        """
        Count one vectorised step.

        :param costs: the step's validated cost per environment, shape ``(n_envs,)``
        :param dones: whether each environment's episode ended with it, shape ``(n_envs,)``
        """
        self.steps += 1
        self.cost += costs
        if costs.any():
            self.unsafe_visits += costs > 0
        if dones.any():
            self.steps[dones] = 0
            self.cost[dones] = 0.0
            self.unsafe_visits[dones] = 0
        self.updated_at = time.time()


@dataclass(frozen=True)
class MonitorLog:
    """
    The episodes of one ``monitor.csv`` file.

    :param path: the file
    :param rank: the rank of its environment in the VecEnv (from a ``k.monitor.csv`` name), or None
    :param end_times: wall-clock time each episode ended (seconds since the epoch), shape ``(n_episodes,)``
    :param lengths: steps of each episode, shape ``(n_episodes,)``
    :param costs: summed cost of each episode, shape ``(n_episodes,)``
    :param unsafe_visits: unsafe steps of each episode, shape ``(n_episodes,)``
    """

    path: Path
    rank: int | None
    end_times: np.ndarray
    lengths: np.ndarray
    costs: np.ndarray
    unsafe_visits: np.ndarray


@dataclass(frozen=True)
class RecoveredSafetyRecord:
    """
    A checkpoint's safety counters completed with the episodes logged after it.

    :param checkpoint: the counters saved in the checkpoint (steps 1..N)
    :param since_checkpoint: the steps, cost and unsafe visits of the logged episodes after it (``monitor.csv`` does
        not record out-of-support, shielded or empty-support flags: those stay 0 here)
    :param episodes_after_checkpoint: number of logged episodes that ended after the checkpoint
    :param unfinished_ranks: environments whose episode in progress at the checkpoint had not ended at the crash:
        their steps after the checkpoint are on no disk (at most one episode each)
    :param files: the monitor files read
    """

    checkpoint: SafetyCounters
    since_checkpoint: SafetyCounters
    episodes_after_checkpoint: int
    unfinished_ranks: tuple[int, ...]
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def total(self) -> SafetyCounters:
        """:return: the checkpoint's counters plus the steps recovered after it"""
        return replace(
            self.checkpoint,
            steps=self.checkpoint.steps + self.since_checkpoint.steps,
            unsafe_visits=self.checkpoint.unsafe_visits + self.since_checkpoint.unsafe_visits,
            cumulative_cost=self.checkpoint.cumulative_cost + self.since_checkpoint.cumulative_cost,
        )


def read_monitor_log(path: str | Path) -> MonitorLog:
    """
    :param path: a ``monitor.csv`` file written by SB3's ``Monitor`` with
        ``info_keywords=("episode_cost", "episode_unsafe_visits")``
    :return: its episodes
    :raises ValueError: if the file lacks the header line, the columns or the safety columns
    """
    path = Path(path)
    with path.open() as file_handler:
        first_line = file_handler.readline()
        if not first_line.startswith("#"):
            raise ValueError(
                f"{path} does not start with the JSON header line SB3's Monitor writes: not a monitor file."
            )
        t_start = float(json.loads(first_line[1:])["t_start"])
        rows = list(csv.DictReader(file_handler))
    names = set(rows[0]) if rows else set()
    missing = {"l", "t", EPISODE_COST_INFO_KEY, EPISODE_UNSAFE_INFO_KEY} - names
    if rows and missing:
        raise ValueError(
            f"{path} has no column {', '.join(sorted(missing))}: the Monitor did not record the SafetyWrapper's "
            "episode totals. Build it with `Monitor(SafetyWrapper(env), ..., info_keywords="
            f"({EPISODE_COST_INFO_KEY!r}, {EPISODE_UNSAFE_INFO_KEY!r}))` (rl-zoo3: `monitor_kwargs` in the "
            "hyperparameter file)."
        )
    match = RANKED_MONITOR_FILE.match(path.name)

    def column(name: str, dtype: type) -> np.ndarray:
        return np.array([dtype(float(row[name])) for row in rows], dtype=dtype)

    return MonitorLog(
        path=path,
        rank=int(match.group(1)) if match else None,
        end_times=t_start + column("t", float),
        lengths=column("l", int),
        costs=column(EPISODE_COST_INFO_KEY, float),
        unsafe_visits=column(EPISODE_UNSAFE_INFO_KEY, int),
    )


def monitor_files(paths: list[str | Path]) -> list[Path]:
    """
    :param paths: monitor files, or folders searched (recursively) for ``*monitor.csv``
    :return: the files, sorted
    :raises FileNotFoundError: when a path does not exist or a folder holds no monitor file
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.rglob(f"*{MONITOR_SUFFIX}"))
            if not found:
                raise FileNotFoundError(f"{path} holds no *{MONITOR_SUFFIX} file.")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist.")
    return sorted(set(files))


def _checkpoint_data(checkpoint: Any) -> tuple[SafetyCounters, EpisodesInProgress]:
    """:return: the counters and episodes in progress of a model, or of the model file at a path"""
    if isinstance(checkpoint, (str, Path)):
        from stable_baselines3.common.save_util import load_from_zip_file

        data, _, _ = load_from_zip_file(checkpoint, device="cpu", load_data=True)
        assert data is not None
        counters, in_progress = data.get("safety_counters"), data.get("episodes_in_progress")
        source = str(checkpoint)
    else:
        counters = getattr(checkpoint, "safety_counters", None)
        in_progress = getattr(checkpoint, "episodes_in_progress", None)
        source = type(checkpoint).__name__
    if not isinstance(counters, SafetyCounters) or not isinstance(in_progress, EpisodesInProgress):
        raise ValueError(
            f"{source} holds no record of its episodes in progress (`episodes_in_progress`): only a SafeSupportQ "
            "model saved during or after `learn` (e.g. by a CheckpointCallback) can be reconciled with monitor files."
        )
    return counters, in_progress


def recover_safety_record(checkpoint: Any, monitors: str | Path | list[str | Path]) -> RecoveredSafetyRecord:
    """
    Complete a checkpoint's safety counters with the episodes that its run logged after it, e.g. after a crash.
    Read the crashed run's monitor files *before* resuming into the same folder (a new ``Monitor`` overwrites them).

    :param checkpoint: a SafeSupportQ model, or the path of its saved ``.zip`` (unpickled: trusted files only)
    :param monitors: the run's ``monitor.csv`` files, or folders holding them (one file per environment, named
        ``k.monitor.csv`` by rank as ``make_vec_env`` and rl-zoo3 write them; a single file for a single environment)
    :return: the checkpoint's counters, the steps recovered after it and what no file holds
    :raises ValueError: when the files cannot be matched to the checkpoint's environments
    """
    counters, in_progress = _checkpoint_data(checkpoint)
    logs = [read_monitor_log(path) for path in monitor_files(monitors if isinstance(monitors, list) else [monitors])]
    n_envs = len(in_progress.steps)
    ranks = [log.rank for log in logs]
    if n_envs == 1 and len(logs) == 1:
        ranks = [0]
    if len(logs) != n_envs or sorted(rank for rank in ranks if rank is not None) != list(range(n_envs)):
        raise ValueError(
            f"The checkpoint ran {n_envs} environment(s), but the monitor files are {[str(log.path) for log in logs]}: "
            f"pass exactly one file per environment, named 0.monitor.csv .. {n_envs - 1}.monitor.csv by rank (as "
            "make_vec_env(..., monitor_dir=...) writes them), so that each episode in progress at the checkpoint is "
            "matched with its environment."
        )
    steps, cost, unsafe, episodes, unfinished = 0, 0.0, 0, 0, []
    for rank, log in zip(ranks, logs, strict=True):
        assert rank is not None
        after = log.end_times > in_progress.updated_at
        if not after.any():
            unfinished.append(rank)
            continue
        # The first episode to end after the checkpoint began before it, unless the checkpoint was at an episode end
        # (its in-progress record is then 0): its first part is already in the checkpoint's counters.
        steps += int(log.lengths[after].sum()) - int(in_progress.steps[rank])
        cost += float(log.costs[after].sum()) - float(in_progress.cost[rank])
        unsafe += int(log.unsafe_visits[after].sum()) - int(in_progress.unsafe_visits[rank])
        episodes += int(after.sum())
    since = SafetyCounters(steps=steps, unsafe_visits=unsafe, cumulative_cost=max(cost, 0.0))
    return RecoveredSafetyRecord(counters, since, episodes, tuple(sorted(unfinished)), tuple(log.path for log in logs))
