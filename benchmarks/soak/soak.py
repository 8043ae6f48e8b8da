"""
Soak benchmark of the safety guarantee (not a test): SafeSupportQ trained on every bundled environment with the
three exploration modes, behind ``SafetyWrapper(strict=True)``, for many steps. Every ``--record-every`` steps each
run records its counters (unsafe visits must stay 0), the actions outside the support, the empty-support states and
the process's resident memory, so that a leak or a late unsafe visit shows in the timeline. A
:class:`~sb3_safeq.SafeEvalCallback` evaluates the deployed policy inside the support four times per run; its
unsafe visits are recorded too (they must be 0 as well).

    python benchmarks/soak/soak.py --steps 56000 --jobs 2 --out benchmarks/soak

Writes ``timeline.csv`` (one row per run and record) and ``summary.md`` into ``--out``. Each run is a fresh process
with one torch thread; the hyperparameters are the packaged ``safeq.yml`` entry of the environment (its
``exploration`` replaced by the run's).
"""

import argparse
import csv
import multiprocessing
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import sb3_safeq
from sb3_safeq import SafeEvalCallback, SafeSupportQ, SafetyWrapper, UnsafeVisitError
from sb3_safeq.bench.algorithms import get_algo, load_hyperparams
from sb3_safeq.envs import SAFE_CONTINUOUS_ENV_IDS, SAFE_DISCRETE_ENV_IDS

ENVS = SAFE_DISCRETE_ENV_IDS + SAFE_CONTINUOUS_ENV_IDS  # every bundled environment
EXPLORATIONS = ("behavior", "induced", "mixture")
FIELDS = (
    "env",
    "exploration",
    "steps",
    "unsafe_visits",
    "cumulative_cost",
    "out_of_support_actions",
    "empty_support_states",
    "eval_episodes",
    "eval_unsafe_visits",
    "rss_mb",
    "elapsed_s",
    "error",
)


def resident_memory_mb() -> float:
    """:return: the resident set size of this process in MiB (Linux ``/proc``)"""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


class Recorder(BaseCallback):
    """Record the safety counters and the memory every ``every`` steps."""

    def __init__(self, env_id: str, exploration: str, every: int, evaluation: SafeEvalCallback) -> None:
        super().__init__()
        self.env_id, self.exploration, self.every, self.evaluation = env_id, exploration, every, evaluation
        self.rows: list[dict[str, Any]] = []
        self._start = time.perf_counter()

    def record(self, error: str = "") -> None:
        counters = self.model.safety_counters  # type: ignore[attr-defined]
        self.rows.append(
            {
                "env": self.env_id,
                "exploration": self.exploration,
                "steps": self.num_timesteps,
                "unsafe_visits": counters.unsafe_visits,
                "cumulative_cost": counters.cumulative_cost,
                "out_of_support_actions": counters.out_of_support_actions,
                "empty_support_states": counters.empty_support_states,
                "eval_episodes": self.evaluation.n_eval_episodes * len(self.evaluation.evaluations_unsafe_visits),
                "eval_unsafe_visits": sum(self.evaluation.evaluations_unsafe_visits),
                "rss_mb": round(resident_memory_mb(), 1),
                "elapsed_s": round(time.perf_counter() - self._start, 1),
                "error": error,
            }
        )

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.record()
        return True


def soak_one(env_id: str, exploration: str, steps: int, every: int, seed: int) -> list[dict[str, Any]]:
    """:return: the timeline of one run (its last row carries the error, if any)"""
    import torch as th

    th.set_num_threads(1)
    _, n_envs, kwargs = load_hyperparams(get_algo("safeq"), env_id)
    kwargs["exploration"] = exploration
    # A strict wrapper: the first unsafe visit ends the run with UnsafeVisitError (recorded, not hidden).
    vec_env = DummyVecEnv([lambda: Monitor(SafetyWrapper(gym.make(env_id), strict=True)) for _ in range(n_envs)])
    model = SafeSupportQ(env=vec_env, seed=seed, device="cpu", **kwargs)
    # log_path only makes the callback keep its per-evaluation unsafe visits (evaluations.npz, in a scratch folder).
    evaluation = SafeEvalCallback(
        gym.make(env_id), n_eval_episodes=5, eval_freq=max(1, steps // (4 * n_envs)), log_path=tempfile.mkdtemp()
    )
    recorder = Recorder(env_id, exploration, every, evaluation)
    try:
        model.learn(steps, callback=[evaluation, recorder])
        recorder.record()
    except UnsafeVisitError as error:
        recorder.record(error=str(error).splitlines()[0])
    return recorder.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=56_000, help="training steps per run")
    parser.add_argument("--record-every", type=int, default=4_000)
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--explorations", nargs="+", default=list(EXPLORATIONS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/soak"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = [(env_id, exploration) for env_id in args.envs for exploration in args.explorations]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [
            pool.submit(soak_one, env_id, exploration, args.steps, args.record_every, args.seed)
            for env_id, exploration in runs
        ]
        timelines = [future.result() for future in futures]
    rows = [row for timeline in timelines for row in timeline]
    with open(args.out / "timeline.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    finals = [timeline[-1] for timeline in timelines]
    total_steps = sum(row["steps"] for row in finals)
    lines = [
        "# Soak: SafeSupportQ behind SafetyWrapper(strict=True)",
        "",
        f"Command: `python benchmarks/soak/soak.py --steps {args.steps} --jobs {args.jobs} --out {args.out}`; "
        f"sb3-safeq {sb3_safeq.__version__}, {platform.processor() or platform.machine()}, "
        f"{time.perf_counter() - start:.0f} s wall.",
        "",
        f"**{total_steps:,} training steps in all, {sum(row['unsafe_visits'] for row in finals)} unsafe visits, "
        f"{sum(row['out_of_support_actions'] for row in finals)} actions outside the support; "
        f"{sum(row['eval_episodes'] for row in finals)} SafeEvalCallback episodes with "
        f"{sum(row['eval_unsafe_visits'] for row in finals)} unsafe visits.**",
        "",
        "RSS grows while the replay buffer's pages are first written (numpy allocates them lazily) and should level "
        "off once it is full or the run ends; a steady climb after that would be a leak.",
        "",
        "| env | exploration | steps | unsafe visits | out of support | empty supports | eval episodes | eval unsafe "
        "visits | RSS first record (MiB) | RSS last (MiB) | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for timeline in timelines:
        first, last = timeline[0], timeline[-1]
        lines.append(
            f"| {last['env']} | {last['exploration']} | {last['steps']:,} | {last['unsafe_visits']} | "
            f"{last['out_of_support_actions']} | {last['empty_support_states']} | {last['eval_episodes']} | "
            f"{last['eval_unsafe_visits']} | {first['rss_mb']} | "
            f"{last['rss_mb']} | {last['error']} |"
        )
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
