"""
Environment steps per second of SafeSupportQ against its SB3 counterpart with the same network, batch size,
``train_freq`` and ``gradient_steps``: DQN for Discrete actions, SAC for Box actions (where SafeSupportQ is also run
with several numbers of behavior samples). The runs are interleaved in one process (the machines are shared and
noisy, so only ratios from the same run mean anything).

    python -m sb3_safeq.bench.speed [--env SafeCliffWalking-v0] [--steps 10000] [--repeats 3]
    python -m sb3_safeq.bench.speed --env SafePointMass-v0 --train-freq 1 --n-samples 4 16 64
    python -m sb3_safeq.bench.speed --env SafePointMass-v0 --train-freq 1 --n-samples 16 --share-target-draws \
        --net-arch 256 256 --batch-size 256
"""

import argparse
import copy
import platform
import statistics
import time
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import DQN, SAC
from torch.utils.flop_counter import FlopCounterMode

from sb3_safeq import SafeSupportQ, SupportKind, make_support_kind

#: The SB3 algorithm SafeSupportQ is compared with, by support kind (``SupportKind.name``).
BASELINES: dict[str, type] = {"mask": DQN, "box": SAC}


def steps_per_second(algo: type, env_id: str, steps: int, seed: int, kwargs: dict[str, Any]) -> float:
    """
    :param algo: algorithm class
    :param env_id: environment id
    :param steps: environment steps to train for, after ``learning_starts`` (the warm-up is not timed)
    :param seed: random seed
    :param kwargs: hyperparameters (copied: SB3 adds keys to ``policy_kwargs``)
    :return: environment steps per second of ``learn`` while training
    """
    kwargs = copy.deepcopy(kwargs)
    model = algo("MlpPolicy", env_id, seed=seed, **kwargs)
    model.learn(kwargs["learning_starts"])
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def multiply_adds_per_gradient_step(algo: type, env_id: str, seed: int, kwargs: dict[str, Any]) -> float:
    """
    Count the multiply-adds of one gradient step (forward and backward, all networks), as torch's
    ``FlopCounterMode`` counts them (matrix products; the element-wise operations are not counted).

    :param algo: algorithm class
    :param env_id: environment id
    :param seed: random seed
    :param kwargs: hyperparameters (copied)
    :return: multiply-adds per gradient step (the mean over a cycle of ``actor_update_interval`` steps)
    """
    kwargs = copy.deepcopy(kwargs)
    model = algo("MlpPolicy", env_id, seed=seed, **kwargs)
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
        help="SafeSupportQ's actor_update_interval (default: the support kind's, 2 for Discrete and 1 for Box)",
    )
    parser.add_argument(
        "--share-target-draws", action="store_true", help="Box: also run SafeSupportQ with share_target_draws=True"
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    support_kind = make_support_kind(gym.make(args.env).action_space)

    actor_update_interval = args.actor_update_interval or support_kind.default_actor_update_interval
    print(
        f"{args.env}; machine: {platform.processor() or platform.machine()}, torch {th.__version__}, "
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
        runs = candidates(support_kind, common, args.n_samples, args.actor_update_interval, args.share_target_draws)
        baseline = next(iter(runs))
        speeds: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            # Rotate the order so that a slow phase of the machine does not always hit the same algorithm.
            names = list(runs)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in names:
                algo, kwargs = runs[name]
                speeds[name].append(steps_per_second(algo, args.env, args.steps, repeat, kwargs))
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
