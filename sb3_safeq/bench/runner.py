"""
One benchmark run (train, evaluate, calibrate) in its own process, and the driver that runs them all on an executor
(local processes or Ray) and records their results, resumably.
"""

import contextlib
import csv
import json
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import SafeSupportQ
from sb3_safeq.bench.algorithms import AlgoSpec, BehaviorAgent, get_algo
from sb3_safeq.bench.calibration import (
    complete_horizon,
    evaluate_calibration,
    evaluate_soft_calibration,
    q_value_fn,
    tabular_q_error,
)
from sb3_safeq.bench.executors import Executor, LocalExecutor, RunLostError
from sb3_safeq.bench.hyperparams import HyperparamSources, load_hyperparams, resolve_entry
from sb3_safeq.bench.imports import import_user_modules
from sb3_safeq.bench.induced import induced_predict_fn
from sb3_safeq.common.evaluation import evaluate_safe_policy
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper

#: The columns of ``runs.csv``, in order.
COLUMNS: tuple[str, ...] = (
    "algo",
    "env",
    "seed",
    "budget",
    "n_timesteps",
    "train_unsafe_visits",
    "train_cumulative_cost",
    "train_out_of_support",
    "train_empty_support",
    "eval_return_mean",
    "eval_return_std",
    "eval_cost_mean",
    "eval_unsafe_visits",
    "eval_return_unmasked",
    "eval_return_induced",
    "support_leakage",
    "calib_bias",
    "calib_norm_bias",
    "calib_spread",
    "calib_rank_corr",
    "calib_complete_bias",
    "calib_complete_norm_bias",
    "calib_complete_states",
    "calib_soft_bias",
    "calib_soft_norm_bias",
    "calib_soft_rank_corr",
    "calib_soft_states",
    "tabular_q_error",
    "tabular_q_error_occupancy",
    "fps",
    "wall_time_s",
    "time_to_90pct_s",
    "steps_to_90pct",
    "peak_memory_mb",
)
#: The largest weight of a missing return tail accepted by the ``calib_complete_*`` columns.
COMPLETE_TAIL_TOLERANCE = 0.05
#: The columns that identify a run: a run with another step budget is another run.
KEY_COLUMNS = ("algo", "env", "seed", "budget")


@dataclass(frozen=True)
class RunTask:
    """
    One run of the benchmark.

    :param algo: algorithm name (see :data:`~sb3_safeq.bench.algorithms.ALGORITHMS`)
    :param env: environment id
    :param seed: random seed
    :param out_dir: the results folder (the driver writes the run's ``curves/<algo>__<env>__<seed>.json`` there)
    :param steps: training steps (None: the hyperparameter file's ``n_timesteps``)
    :param eval_episodes: episodes of the final evaluation
    :param curve_points: number of evaluations along training (learning curve)
    :param curve_episodes: episodes per learning-curve evaluation
    :param calib_episodes: episodes of the calibration
    :param spec: the algorithm (default: the registered one named ``algo``); carried to the worker process, so that
        variants registered in the parent process only also run
    :param gym_packages: packages the run process imports first, for their environment registrations
        (``--gym-packages``)
    :param sources: the user's hyperparameter files (None: the packaged ones)
    """

    algo: str
    env: str
    seed: int
    out_dir: str
    steps: int | None = None
    eval_episodes: int = 10
    curve_points: int = 10
    curve_episodes: int = 3
    calib_episodes: int = 5
    spec: AlgoSpec | None = None
    gym_packages: tuple[str, ...] = ()
    sources: HyperparamSources | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """:return: ``(algo, env, seed, budget)`` as they appear in ``runs.csv`` (budget empty: the file's)"""
        return self.algo, self.env, str(self.seed), "" if self.steps is None else str(self.steps)

    @property
    def curve_path(self) -> Path:
        """:return: the JSON file of the run's learning curve and calibration pairs"""
        return Path(self.out_dir) / "curves" / f"{self.algo}__{self.env}__{self.seed}.json"


def make_env(
    env_id: str,
    seed: int,
    shield: bool,
    n_envs: int = 1,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[DummyVecEnv, list[SafetyWrapper]]:
    """
    :param env_id: environment id
    :param seed: seed of the first sub-environment (the others get ``seed + i``)
    :param shield: shield the actions (:class:`SafetyWrapper` ``shield=True``)
    :param n_envs: number of sub-environments
    :param max_episode_steps: another time limit than the registered one (None: the registered one)
    :param env_kwargs: keyword arguments of ``gym.make`` (the algorithm's ``AlgoSpec.env_kwargs``)
    :return: a VecEnv of ``Monitor(SafetyWrapper(env))`` and the safety wrappers (their counters)
    """
    wrappers: list[SafetyWrapper] = []

    def factory() -> gym.Env:
        wrapper = SafetyWrapper(
            gym.make(env_id, max_episode_steps=max_episode_steps, **(env_kwargs or {})), shield=shield
        )
        wrappers.append(wrapper)
        return Monitor(wrapper)

    vec_env = DummyVecEnv([factory for _ in range(n_envs)])
    vec_env.seed(seed)
    vec_env.action_space.seed(seed)
    return vec_env, wrappers


def total_counters(wrappers: Iterable[SafetyWrapper]) -> SafetyCounters:
    """
    :param wrappers: safety wrappers
    :return: the sum of their counters
    """
    total = SafetyCounters()
    for wrapper in wrappers:
        for name, value in wrapper.counters.as_dict().items():
            setattr(total, name, getattr(total, name) + value)
    return total


class LearningCurveCallback(BaseCallback):
    """
    Evaluate the deployed policy every ``eval_freq`` steps and record the cumulative unsafe training visits.

    :param eval_fn: ``() -> mean return`` of the current policy
    :param wrappers: the training environments' safety wrappers
    :param eval_freq: evaluation period, in environment steps (all environments together)
    """

    def __init__(self, eval_fn: Callable[[], float], wrappers: list[SafetyWrapper], eval_freq: int) -> None:
        super().__init__()
        self.eval_fn = eval_fn
        self.wrappers = wrappers
        self.eval_freq = max(1, eval_freq)
        self.curve: dict[str, list[float]] = {"steps": [], "eval_return": [], "unsafe_visits": [], "time_s": []}
        self.eval_time = 0.0
        self._start = 0.0
        self._next = 0

    def record(self) -> None:
        """Evaluate now and append a point (its time excludes the evaluations)."""
        start = time.perf_counter()
        value = self.eval_fn()
        self.eval_time += time.perf_counter() - start
        self.curve["steps"].append(int(self.num_timesteps))
        self.curve["eval_return"].append(float(value))
        self.curve["unsafe_visits"].append(int(total_counters(self.wrappers).unsafe_visits))
        self.curve["time_s"].append(time.perf_counter() - self._start - self.eval_time)

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._next = self.eval_freq
        self.record()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            self.record()
        return True


@dataclass(frozen=True)
class RunOutput:
    """
    What a run hands back to the driver, which alone writes the results folder (the run may be on another machine).

    :param row: its row of ``runs.csv``
    :param record: the JSON text of its learning curve, calibration pairs and hyperparameters
        (``curves/<algo>__<env>__<seed>.json``)
    """

    row: dict[str, Any]
    record: str


def run_one(task: RunTask) -> RunOutput:
    """
    Train, evaluate and calibrate one algorithm on one environment with one seed (meant for a fresh process).

    :param task: the run
    :return: its row and its record, for the driver to write
    """
    import torch as th

    th.set_num_threads(1)
    start = time.perf_counter()
    import_user_modules(task.gym_packages, "--gym-packages")  # a fresh process: the registrations are not here yet
    spec = task.spec if task.spec is not None else get_algo(task.algo)
    n_timesteps, n_envs, kwargs = load_hyperparams(spec, task.env, task.sources)
    if task.steps is not None:
        n_timesteps = task.steps
    train_env, wrappers = make_env(task.env, task.seed, spec.shield, n_envs, env_kwargs=spec.env_kwargs)
    eval_env, _ = make_env(task.env, task.seed + 10_000, spec.shield, env_kwargs=spec.env_kwargs)

    def evaluate(model: Any, episodes: int, use_support: bool = spec.use_support, predict_fn: Any = None) -> Any:
        return evaluate_safe_policy(
            model, eval_env, n_eval_episodes=episodes, use_masks=use_support, predict_fn=predict_fn
        )

    curve_callback: LearningCurveCallback | None = None
    learn_time = 0.0
    if spec.class_path is None:
        model: Any = BehaviorAgent(train_env.action_space, seed=task.seed, behavior=kwargs.get("behavior", "uniform"))
        n_timesteps = 0
        curve = {"steps": [0], "eval_return": [evaluate(model, task.curve_episodes).mean_return], "unsafe_visits": [0]}
        curve["time_s"] = [0.0]
    else:
        algo_class = spec.load_class()
        model = algo_class(env=train_env, seed=task.seed, verbose=0, device="cpu", **kwargs)
        curve_callback = LearningCurveCallback(
            lambda: evaluate(model, task.curve_episodes).mean_return,
            wrappers,
            n_timesteps // max(1, task.curve_points),
        )
        learn_start = time.perf_counter()
        model.learn(n_timesteps, callback=curve_callback)
        learn_time = time.perf_counter() - learn_start - curve_callback.eval_time
        n_timesteps = int(model.num_timesteps)  # on-policy algorithms round up to whole rollouts
        curve_callback.record()
        curve = curve_callback.curve

    counters = total_counters(wrappers)
    final = evaluate(model, task.eval_episodes)
    row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
    row.update(
        algo=task.algo,
        env=task.env,
        seed=task.seed,
        budget="" if task.steps is None else task.steps,
        n_timesteps=n_timesteps,
        train_unsafe_visits=counters.unsafe_visits,
        train_cumulative_cost=counters.cumulative_cost,
        train_out_of_support=counters.out_of_support_actions,
        train_empty_support=counters.empty_support_states,
        eval_return_mean=final.mean_return,
        eval_return_std=final.std_return,
        eval_cost_mean=float(np.mean(final.episode_costs)),
        eval_unsafe_visits=final.unsafe_visits,
        fps=n_timesteps / learn_time if learn_time > 0 else np.nan,
    )
    if isinstance(model, SafeSupportQ):  # safeq and its variants
        leak_env, leak_wrappers = make_env(task.env, task.seed + 20_000, shield=False, env_kwargs=spec.env_kwargs)
        unmasked = evaluate_safe_policy(model, leak_env, n_eval_episodes=task.eval_episodes, use_masks=False)
        leak = total_counters(leak_wrappers)
        row["eval_return_unmasked"] = unmasked.mean_return
        row["support_leakage"] = leak.out_of_support_actions / max(1, leak.steps)
        row["tabular_q_error"] = tabular_q_error(model, leak_env.envs[0])
        row["tabular_q_error_occupancy"] = tabular_q_error(model, leak_env.envs[0], reduction="occupancy")
        induced = induced_predict_fn(model)
        if induced is not None:
            row["eval_return_induced"] = evaluate(
                model, task.eval_episodes, use_support=True, predict_fn=induced
            ).mean_return
    calib_env, _ = make_env(task.env, task.seed + 30_000, spec.shield, env_kwargs=spec.env_kwargs)
    calibration = evaluate_calibration(
        model, calib_env, task.calib_episodes, use_support=spec.use_support, return_pairs=True
    )
    row.update({f"calib_{name}": calibration[name] for name in ("bias", "norm_bias", "spread", "rank_corr")})
    horizon = gym.spec(task.env).max_episode_steps
    if q_value_fn(model) is not None and horizon is not None:
        # The same policy under a longer time limit, scored only where the missing tail weighs <= 5%: the critic
        # estimates untruncated values (SB3 bootstraps at time limits), which truncated returns would miss the tail of.
        long_env_steps = complete_horizon(horizon, float(model.gamma), COMPLETE_TAIL_TOLERANCE)
        long_env, _ = make_env(
            task.env, task.seed + 40_000, spec.shield, max_episode_steps=long_env_steps, env_kwargs=spec.env_kwargs
        )
        complete = evaluate_calibration(
            model, long_env, task.calib_episodes, use_support=spec.use_support, tail_tolerance=COMPLETE_TAIL_TOLERANCE
        )
        row.update(
            calib_complete_bias=complete["bias"],
            calib_complete_norm_bias=complete["norm_bias"],
            calib_complete_states=complete["n_states"],
        )
        if isinstance(model, SafeSupportQ):
            # Its critic estimates the soft value of pi_Q: scored against soft returns of pi_Q, complete as above.
            soft_env, _ = make_env(
                task.env,
                task.seed + 50_000,
                spec.shield,
                max_episode_steps=long_env_steps,
                env_kwargs=spec.env_kwargs,
            )
            soft = evaluate_soft_calibration(
                model, soft_env, task.calib_episodes, tail_tolerance=COMPLETE_TAIL_TOLERANCE
            )
            row.update({f"calib_soft_{name}": soft[name] for name in ("bias", "norm_bias", "rank_corr")})
            row["calib_soft_states"] = soft["n_states"]
    row["wall_time_s"] = time.perf_counter() - start
    row["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    payload = {
        "task": asdict(task),
        "hyperparameters": hyperparameter_record(spec, task, kwargs, model),
        "curve": curve,
        "calibration": {"q_hat": calibration["q_hat"], "mc_return": calibration["mc_return"]},
    }
    return RunOutput(row=row, record=json.dumps(payload, default=repr))


def hyperparameter_record(spec: AlgoSpec, task: RunTask, kwargs: dict[str, Any], model: Any) -> dict[str, Any]:
    """
    What a run was configured with, for its JSON record: where the entry came from, the constructor arguments, and
    the value the model holds for each plain one (so that a user's file can be checked to have reached the model).

    :param spec: the algorithm
    :param task: the run
    :param kwargs: the constructor arguments it got
    :param model: the trained model (or the behavior agent)
    :return: ``{"origin", "kwargs", "model"}``
    """
    resolved = None if spec.hyperparams is None else resolve_entry(spec, task.env, task.sources or HyperparamSources())
    plain = (bool, int, float, str)
    return {
        "origin": "none (not trained)" if resolved is None else resolved.origin,
        "kwargs": {key: value if isinstance(value, plain) else repr(value) for key, value in kwargs.items()},
        "model": {
            key: getattr(model, key)
            for key, value in kwargs.items()
            if isinstance(value, plain) and isinstance(getattr(model, key, None), plain)
        },
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    """
    :param path: a ``runs.csv``
    :return: its rows (empty when the file does not exist)
    """
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    """
    :param row: a row of ``runs.csv``
    :return: its key (:data:`KEY_COLUMNS`), as strings
    """
    return tuple(row.get(column, "") for column in KEY_COLUMNS)


def rewrite_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """
    Write a new version of a file next to it and swap it in with one rename: an interruption leaves the old file or
    the new one, never a torn one (a "finished" row with blank metrics).

    :param path: the file to replace
    :param write: writes the new content into the path it is given
    """
    temporary = path.with_name(f".{path.name}.partial")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """
    Append a row to ``runs.csv``, writing the header first when the file is new.

    :param path: the CSV file
    :param row: the row
    """
    new = not path.is_file()
    with path.open("a", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """
    Turn SIGTERM (from ``kill`` or a job scheduler, which reaches only this process) into ``KeyboardInterrupt``, as
    Ctrl-C: the executor then stops the runs still going, and the finished rows are already in ``runs.csv``.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def record_output(task: RunTask, output: RunOutput, runs_csv: Path) -> None:
    """
    Write a finished run into the results folder: its record first, then its row (a row means the run is done).

    :param task: the run
    :param output: what it handed back
    :param runs_csv: the folder's ``runs.csv``
    """
    task.curve_path.parent.mkdir(parents=True, exist_ok=True)
    task.curve_path.write_text(output.record)
    append_row(runs_csv, output.row)


def importing_callers_script() -> bool:
    """
    :return: whether this process is a run process still importing the script that started the benchmark. The run
        processes start fresh (``forkserver``, like ``spawn``) and import the caller's main script again before their
        run, as every such ``multiprocessing`` pool does: a script that calls the benchmark at its top level, without
        ``if __name__ == "__main__":``, calls it again there, where it must do nothing.
    """
    # The flag multiprocessing itself reads to refuse starting processes from a child that is still being prepared.
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def run_benchmark(
    tasks: list[RunTask],
    out_dir: Path,
    jobs: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> list[dict[str, str]]:
    """
    Run the tasks not yet in ``out_dir/runs.csv``, each in a fresh process, on an executor, and write each result as
    it comes back (so an interrupted benchmark resumes where it stopped). This process is the only writer of the
    folder, whichever executor runs the tasks.

    :param tasks: the runs
    :param out_dir: the results folder
    :param jobs: parallel processes of the default executor
    :param progress: show a progress bar
    :param log: where to write progress messages
    :param executor: where the runs execute (default: ``LocalExecutor(jobs)``); entered and closed here
    :return: all the rows of ``runs.csv`` (finished before or now); nothing in a run process importing the caller's
        script (see :func:`importing_callers_script`)
    """
    if importing_callers_script():
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_csv = out_dir / "runs.csv"
    previous = read_rows(runs_csv)
    # A row of the same algorithm, environment and seed with another step budget (or written by a version without
    # budgets) is stale: it is replaced by the new run, so a folder never mixes budgets.
    wanted = {task.key for task in tasks}
    wanted_runs = {key[:3] for key in wanted}
    kept = [row for row in previous if row_key(row) in wanted or row_key(row)[:3] not in wanted_runs]
    if previous and (len(kept) < len(previous) or list(previous[0]) != list(COLUMNS)):

        def write_kept(target: Path) -> None:
            with target.open("w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in kept)

        rewrite_atomically(runs_csv, write_kept)
    done = {row_key(row) for row in kept}
    todo = [task for task in tasks if task.key not in done]
    failures: list[str] = []
    if todo:
        from tqdm.auto import tqdm

        executor = executor if executor is not None else LocalExecutor(jobs)
        bar = tqdm(total=len(todo), disable=not progress, desc="bench", unit="run")
        with executor, _sigterm_interrupts():
            skipped = len(tasks) - len(todo)
            log(f"{skipped} run(s) already finished (skipped), {len(todo)} to run on {executor.describe()}.")
            for task, outcome in executor.run(run_one, todo):
                if isinstance(outcome, RunOutput):
                    record_output(task, outcome, runs_csv)
                else:
                    reason = str(outcome) if isinstance(outcome, RunLostError) else repr(outcome)
                    failures.append(f"{task.algo} on {task.env} (seed {task.seed}): {reason}")
                bar.update(1)
                bar.set_postfix_str(f"last: {task.algo}/{task.env}/{task.seed}")
        bar.close()
    else:
        log(f"{len(tasks)} run(s) already finished (skipped), 0 to run.")
    for failure in failures:
        log(f"FAILED: {failure}")
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed (the others are in {runs_csv}).")
    return read_rows(runs_csv)


__all__ = [
    "COLUMNS",
    "LearningCurveCallback",
    "RunOutput",
    "RunTask",
    "hyperparameter_record",
    "importing_callers_script",
    "make_env",
    "record_output",
    "run_benchmark",
    "run_one",
]
