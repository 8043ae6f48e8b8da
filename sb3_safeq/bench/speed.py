"""
Environment steps per second of SafeSupportQ against SB3's DQN with the same network, batch size, ``train_freq``
and ``gradient_steps``, measured in one process with the runs interleaved (the machines are shared and noisy, so
only ratios from the same run mean anything).

    python -m sb3_safeq.bench.speed [--env SafeCliffWalking-v0] [--steps 10000] [--repeats 3]
"""

import argparse
import platform
import statistics
import time
from typing import Any

import torch as th
from stable_baselines3 import DQN

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeSupportQ


def steps_per_second(algo: type, env_id: str, steps: int, seed: int, common: dict[str, Any]) -> float:
    """
    :param algo: algorithm class
    :param env_id: environment id
    :param steps: environment steps to train for
    :param seed: random seed
    :param common: hyperparameters shared by both algorithms
    :return: environment steps per second of ``learn`` (model construction excluded)
    """
    model = algo("MlpPolicy", env_id, seed=seed, **common)
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeCliffWalking-v0")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-freq", type=int, nargs="+", default=[4, 1], help="settings to compare")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for small networks)")
    parser.add_argument(
        "--actor-update-interval", type=int, default=1, help="SafeSupportQ's actor_update_interval (1 = default)"
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {th.__version__}, {args.threads} thread(s); "
        f"SafeSupportQ actor_update_interval={args.actor_update_interval}"
    )
    print(
        "| train_freq | gradient_steps | DQN steps/s | DQN + fused Adam steps/s | SafeSupportQ steps/s "
        "| ratio to DQN (median, each repeat) | ratio to DQN + fused Adam |"
    )
    print("|---|---|---|---|---|---|---|")
    for train_freq in args.train_freq:
        common = {
            "learning_starts": 1000,
            "batch_size": args.batch_size,
            "train_freq": train_freq,
            "gradient_steps": 1,
            "policy_kwargs": {"net_arch": [64, 64]},
        }
        # SafeSupportQ uses torch's fused Adam by default; DQN is measured both as shipped and with the same Adam.
        fused = {**common, "policy_kwargs": {**common["policy_kwargs"], "optimizer_kwargs": {"fused": True}}}
        runs: dict[str, tuple[type, dict[str, Any]]] = {
            "dqn": (DQN, common),
            "dqn_fused": (DQN, fused),
            "safeq": (SafeSupportQ, {**common, "actor_update_interval": args.actor_update_interval}),
        }
        speeds: dict[str, list[float]] = {name: [] for name in runs}
        ratios, fused_ratios = [], []
        for repeat in range(args.repeats):
            # Rotate the order so that a slow phase of the machine does not always hit the same algorithm.
            names = list(runs)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in names:
                algo, kwargs = runs[name]
                speeds[name].append(steps_per_second(algo, args.env, args.steps, repeat, kwargs))
            ratios.append(speeds["safeq"][-1] / speeds["dqn"][-1])
            fused_ratios.append(speeds["safeq"][-1] / speeds["dqn_fused"][-1])
        medians = {name: statistics.median(values) for name, values in speeds.items()}
        print(
            f"| {train_freq} | 1 | {medians['dqn']:.0f} | {medians['dqn_fused']:.0f} | {medians['safeq']:.0f} | "
            f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) | "
            f"{statistics.median(fused_ratios):.2f} |"
        )


if __name__ == "__main__":
    main()
