"""
Environment steps per second of SafeSupportQ against its SB3 counterpart with the same network, batch size,
``train_freq`` and ``gradient_steps``: DQN for Discrete actions, SAC for Box actions (where SafeSupportQ is also run
with several numbers of behavior samples). The runs are interleaved in one process (the machines are shared and
noisy, so only ratios from the same run mean anything): every run of a repeat trains in turn, 250 steps at a time,
so a slow phase of the machine slows them all alike.

    python -m sb3_safeq.bench.speed [--env SafeCliffWalking-v0] [--steps 10000] [--repeats 3]
    python -m sb3_safeq.bench.speed --env SafePointMass-v0 --train-freq 1 --n-samples 4 16 64
    python -m sb3_safeq.bench.speed --env SafePointMass-v0 --train-freq 1 --n-samples 16 --share-target-draws \
        --net-arch 256 256 --batch-size 256

``--sweep`` measures how the speed grows with one setting, SafeSupportQ against its baseline at each value
(``n_actions`` uses :class:`~sb3_safeq.bench.speed_env.MaskedActionsEnv`, the others ``--env``)::

    python -m sb3_safeq.bench.speed --sweep n_actions --values 4 16 64 256 --train-freq 1
    python -m sb3_safeq.bench.speed --env SafePointMass-v0 --sweep n_samples --values 4 16 64 --train-freq 1
    python -m sb3_safeq.bench.speed --sweep batch_size --values 64 256 1024 --train-freq 1
    python -m sb3_safeq.bench.speed --sweep width --values 64 256 1024 --train-freq 1
"""

import argparse
import copy
import functools
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import DQN, SAC
from torch.utils.flop_counter import FlopCounterMode

from sb3_safeq import SafeSupportQ, SupportKind, make_support_kind
from sb3_safeq.bench.speed_env import MaskedActionsEnv

#: The SB3 algorithm SafeSupportQ is compared with, by support kind (``SupportKind.name``).
BASELINES: dict[str, type] = {"mask": DQN, "box": SAC}
#: The settings ``--sweep`` can vary.
SWEEPS = ("n_actions", "n_samples", "batch_size", "width")

#: An environment id, or a function that builds a new environment (one per model).
EnvSource = str | Callable[[], gym.Env]
#: Steps each run takes before the next run's turn (:func:`interleaved_speeds`).
CHUNK_STEPS = 250


def warmed_up_model(algo: type, env_id: EnvSource, seed: int, kwargs: dict[str, Any]) -> Any:
    """
    :param algo: algorithm class
    :param env_id: environment id, or a function that builds the environment
    :param seed: random seed
    :param kwargs: hyperparameters (copied: SB3 adds keys to ``policy_kwargs``)
    :return: a model that has collected its ``learning_starts`` steps (the warm-up is never timed)
    """
    kwargs = copy.deepcopy(kwargs)
    model = algo("MlpPolicy", env_id if isinstance(env_id, str) else env_id(), seed=seed, **kwargs)
    model.learn(kwargs["learning_starts"])
    return model


def multiply_adds_per_gradient_step(algo: type, env_id: EnvSource, seed: int, kwargs: dict[str, Any]) -> float:
    """
    Count the multiply-adds of one gradient step (forward and backward, all networks), as torch's
    ``FlopCounterMode`` counts them (matrix products; the element-wise operations are not counted).

    :param algo: algorithm class
    :param env_id: environment id, or a function that builds the environment
    :param seed: random seed
    :param kwargs: hyperparameters (copied)
    :return: multiply-adds per gradient step (the mean over a cycle of ``actor_update_interval`` steps)
    """
    kwargs = copy.deepcopy(kwargs)
    model = algo("MlpPolicy", env_id if isinstance(env_id, str) else env_id(), seed=seed, **kwargs)
    model.learn(kwargs["learning_starts"])
    # SafeSupportQ trains its extraction head every `actor_update_interval` gradient steps: count a whole cycle.
    cycle = int(getattr(model, "actor_update_interval", 1))
    with FlopCounterMode(display=False) as counter:
        model.train(gradient_steps=cycle, batch_size=model.batch_size)
    return counter.get_total_flops() / 2 / cycle  # a multiply-add is two floating-point operations


def candidates(
    support_kind: SupportKind,
    common: dict[str, Any],
    n_samples: list[int],
    actor_update_interval: int | None,
    share_target_draws: bool = False,
) -> dict[str, tuple[type, dict[str, Any]]]:
    """:return: the runs to compare, by name; the first one is the baseline"""
    baseline = BASELINES[support_kind.name]
    # SafeSupportQ uses torch's fused Adam by default; the baseline is measured both as shipped and with it.
    fused = {**common, "policy_kwargs": {**common["policy_kwargs"], "optimizer_kwargs": {"fused": True}}}
    runs: dict[str, tuple[type, dict[str, Any]]] = {
        baseline.__name__: (baseline, common),
        f"{baseline.__name__} + fused Adam": (baseline, fused),
    }
    safeq = {**common, "actor_update_interval": actor_update_interval}
    if support_kind.samples_behavior:
        for n in n_samples:
            runs[f"SafeSupportQ N={n}"] = (SafeSupportQ, {**safeq, "n_behavior_samples": n})
            if share_target_draws:
                shared = {**safeq, "n_behavior_samples": n, "share_target_draws": True}
                runs[f"SafeSupportQ N={n}, share_target_draws"] = (SafeSupportQ, shared)
    else:
        runs["SafeSupportQ"] = (SafeSupportQ, safeq)
    return runs


def interleaved_speeds(
    runs: dict[str, tuple[type, dict[str, Any]]],
    env_id: EnvSource,
    steps: int,
    repeats: int,
    chunk: int = CHUNK_STEPS,
) -> dict[str, list[float]]:
    """
    Time every run in alternating chunks of ``chunk`` steps, so that the runs share every slow phase of a shared
    machine: timing each run whole, one after the other, let per-repeat ratios scatter from 0.6 to 1.5 on the
    development machine; alternating keeps them within a few percent.

    :param runs: the runs to time, by name: algorithm class and hyperparameters
    :param env_id: environment id, or a function that builds the environment
    :param steps: timed training steps per run
    :param repeats: repeats of every run (repeat ``i`` uses seed ``i``)
    :param chunk: steps per ``learn`` call between two switches (the call's own overhead is a few milliseconds)
    :return: steps per second of every run, one value per repeat
    """
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats):
        models = {name: warmed_up_model(algo, env_id, repeat, kwargs) for name, (algo, kwargs) in runs.items()}
        elapsed = dict.fromkeys(runs, 0.0)
        done = 0
        while done < steps:
            n_steps = min(chunk, steps - done)
            # Rotate the order so that no run always follows the same one.
            turn = done // chunk % len(runs)
            names = [*list(runs)[turn:], *list(runs)[:turn]]
            for name in names:
                start = time.perf_counter()
                models[name].learn(n_steps, reset_num_timesteps=False)
                elapsed[name] += time.perf_counter() - start
            done += n_steps
        for name in runs:
            speeds[name].append(steps / elapsed[name])
    return speeds


def sweep_point(
    setting: str, value: int, env_id: str, common: dict[str, Any], n_samples: int
) -> tuple[EnvSource, dict[str, Any], int]:
    """
    :param setting: one of :data:`SWEEPS`
    :param value: its value at this point
    :param env_id: the environment of every setting but ``n_actions``
    :param common: the hyperparameters shared by both algorithms (not modified)
    :param n_samples: SafeSupportQ's ``n_behavior_samples`` (Box) when ``setting`` is not ``n_samples``
    :return: the environment, the shared hyperparameters and ``n_behavior_samples`` at this point
    """
    common = copy.deepcopy(common)
    env: EnvSource = env_id
    if setting == "n_actions":
        env = functools.partial(MaskedActionsEnv, n_actions=value)
    elif setting == "n_samples":
        n_samples = value
    elif setting == "batch_size":
        common["batch_size"] = value
    elif setting == "width":
        common["policy_kwargs"]["net_arch"] = [value] * len(common["policy_kwargs"]["net_arch"])
    else:
        raise ValueError(f"Unknown sweep {setting!r}; choose one of {', '.join(SWEEPS)}")
    return env, common, n_samples


def print_sweep(args: argparse.Namespace, common: dict[str, Any], actor_update_interval: int | None) -> None:
    """
    Time SafeSupportQ and its baseline at every value of ``args.sweep`` and print one Markdown row per value.

    :param args: the parsed command line
    :param common: the hyperparameters shared by both algorithms
    :param actor_update_interval: SafeSupportQ's (``None``: the support kind's default)
    """
    print(
        f"| {args.sweep} | baseline steps/s | SafeSupportQ steps/s | ratio | per repeat | compute-bound ratio |\n"
        "|---|---|---|---|---|---|",
        flush=True,
    )
    for value in args.values:
        env, point, n_samples = sweep_point(args.sweep, value, args.env, common, args.n_samples[0])
        support_kind = make_support_kind((env() if callable(env) else gym.make(env)).action_space)
        baseline = BASELINES[support_kind.name].__name__
        safeq = {**point, "actor_update_interval": actor_update_interval}
        if support_kind.samples_behavior:
            safeq["n_behavior_samples"] = n_samples
        runs = {baseline: (BASELINES[support_kind.name], point), "SafeSupportQ": (SafeSupportQ, safeq)}
        speeds = interleaved_speeds(runs, env, args.steps, args.repeats)
        ratios = [ours / base for ours, base in zip(speeds["SafeSupportQ"], speeds[baseline], strict=True)]
        macs = {name: multiply_adds_per_gradient_step(algo, env, 0, kwargs) for name, (algo, kwargs) in runs.items()}
        print(
            f"| {value} | {statistics.median(speeds[baseline]):.0f} ({baseline}) | "
            f"{statistics.median(speeds['SafeSupportQ']):.0f} | {statistics.median(ratios):.2f} | "
            f"{', '.join(f'{ratio:.2f}' for ratio in ratios)} | {macs[baseline] / macs['SafeSupportQ']:.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeCliffWalking-v0")
    parser.add_argument("--steps", type=int, default=5_000, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-freq", type=int, nargs="+", default=[4, 1], help="settings to compare")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[64, 64], help="hidden layers of every network")
    parser.add_argument(
        "--n-samples",
        type=int,
        nargs="+",
        default=[4, 16, 64],
        help="n_behavior_samples (Box)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for small networks)")
    parser.add_argument(
        "--actor-update-interval",
        type=int,
        default=None,
        help="SafeSupportQ's actor_update_interval (default: the support kind's, 4 for Discrete and 1 for Box)",
    )
    parser.add_argument(
        "--share-target-draws", action="store_true", help="Box: also run SafeSupportQ with share_target_draws=True"
    )
    parser.add_argument("--sweep", choices=SWEEPS, help="vary one setting (the first --n-samples value is the N)")
    parser.add_argument("--values", type=int, nargs="+", help="the values of --sweep")
    args = parser.parse_args()
    if (args.sweep is None) != (args.values is None):
        parser.error("--sweep and --values go together: e.g. --sweep n_actions --values 4 16 64 256")
    th.set_num_threads(args.threads)
    support_kind = make_support_kind(gym.make(args.env).action_space)

    actor_update_interval = args.actor_update_interval or support_kind.default_actor_update_interval
    environment = "MaskedActionsEnv (8 observations)" if args.sweep == "n_actions" else args.env
    print(
        f"{environment}; machine: {platform.processor() or platform.machine()}, torch {th.__version__}, "
        f"{args.threads} thread(s); net_arch {args.net_arch}, batch {args.batch_size}, gradient_steps 1, "
        f"SafeSupportQ actor_update_interval={actor_update_interval}; steps/s (median of {args.repeats}), "
        "ratio to the baseline (median; each repeat)"
    )
    for train_freq in args.train_freq:
        common = {
            "learning_starts": 1000,
            "batch_size": args.batch_size,
            "train_freq": train_freq,
            "gradient_steps": 1,
            "policy_kwargs": {"net_arch": list(args.net_arch)},
        }
        if args.sweep is not None:
            print(f"\ntrain_freq={train_freq}, {args.steps} timed steps per run\n")
            print_sweep(args, common, args.actor_update_interval)
            continue
        runs = candidates(support_kind, common, args.n_samples, args.actor_update_interval, args.share_target_draws)
        baseline = next(iter(runs))
        speeds = interleaved_speeds(runs, args.env, args.steps, args.repeats)
        # The compute-bound limit of each ratio: the baseline's multiply-adds per gradient step over the run's.
        macs = {
            name: multiply_adds_per_gradient_step(algo, args.env, 0, kwargs) for name, (algo, kwargs) in runs.items()
        }
        print(
            f"\ntrain_freq={train_freq}\n\n| run | steps/s | ratio to {baseline} | per repeat | multiply-adds per "
            f"gradient step | compute-bound ratio |\n|---|---|---|---|---|---|"
        )
        for name, values in speeds.items():
            ratios = [value / base for value, base in zip(values, speeds[baseline], strict=True)]
            print(
                f"| {name} | {statistics.median(values):.0f} | {statistics.median(ratios):.2f} | "
                f"{', '.join(f'{ratio:.2f}' for ratio in ratios)} | {macs[name]:,.0f} | "
                f"{macs[baseline] / macs[name]:.2f} |"
            )


if __name__ == "__main__":
    main()
