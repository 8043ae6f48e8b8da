"""
Known against estimated behavior in offline SafeSupportQ (issue 15 point 3).

Per environment and seed: a dataset of N steps of the uniform safe behavior (strict SafetyWrapper, local Minari
dataset), then two models trained offline for G gradient steps with the same hyperparameters:

- *known*: ``behavior="uniform"`` on the dataset with its supports, deployed with the environment's support;
- *estimated*: ``behavior="estimated"`` on the same dataset with its supports removed (beta and the supports cloned
  from the data, 2,000 behavior-cloning steps), deployed twice: without any support (it acts inside its estimated
  support) and with the environment's support.

Each deployment runs 10 deterministic episodes; a SafetyWrapper counts the actions outside the environment's TRUE
support and the unsafe visits (cost > 0). Rows go to a CSV and a markdown table to stdout.

    python benchmarks/studies/offline_estimated.py [--envs ...] [--seeds 0 1 2] [--steps 5000] [--gradient-steps 5000]
        [--beta cloned|uniform] [--out benchmarks/studies/offline_estimated.csv]
"""

import argparse
import csv
import os
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.offline import collect_safe_dataset
from sb3_safeq.offline.minari_io import transitions_from_minari

#: Hyperparameters per environment (the same for both behaviors).
SETTINGS: dict[str, dict[str, Any]] = {
    "SafeCliffWalking-v0": {"tau": 0.02, "learning_rate": 1e-3},
    "SafeFrozenLake8x8-v0": {"tau": 0.02, "learning_rate": 1e-3},
    "SafePointMass-v0": {
        "tau": 0.02,
        "learning_rate": 1e-3,
        "extraction": "reverse_kl",
        "n_behavior_samples": 16,
        "policy_kwargs": {"net_arch": [64, 64]},
    },
}


def deploy(model: SafeSupportQ, env_id: str, n_episodes: int, with_support: bool) -> tuple[float, int, int]:
    """:return: mean return, actions outside the environment's support, unsafe visits (deterministic episodes)"""
    env = SafetyWrapper(gym.make(env_id))
    kind = env.support_kind
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=1000 + episode)
        done, episode_return = False, 0.0
        while not done:
            support = {kind.predict_keyword: getattr(env, kind.method_name)()} if with_support else {}
            action, _ = model.predict(observation, deterministic=True, **support)
            observation, reward, terminated, truncated, _ = env.step(int(action) if kind.name == "mask" else action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return float(np.mean(returns)), env.counters.out_of_support_actions, env.counters.unsafe_visits


def run(env_id: str, seed: int, n_steps: int, gradient_steps: int, n_episodes: int, beta: str) -> dict[str, Any]:
    dataset = collect_safe_dataset(
        env_id, "uniform", n_steps=n_steps, dataset_id=f"{env_id}/uniform{seed}-v0", seed=seed
    )
    kind = SafetyWrapper(gym.make(env_id)).support_kind
    transitions = transitions_from_minari(dataset, kind, dataset.spec.observation_space)
    arrays = {key: value for key, value in vars(transitions).items() if value is not None}
    no_supports = {key: value for key, value in arrays.items() if key not in ("supports", "next_supports")}
    row: dict[str, Any] = {"env": env_id, "seed": seed}
    for name, behavior, data in (("known", "uniform", arrays), ("estimated", "estimated", no_supports)):
        start = time.time()
        options = {"behavior_kwargs": {"beta": beta}} if name == "estimated" else {}
        model = SafeSupportQ("MlpPolicy", env_id, behavior=behavior, seed=seed, **SETTINGS[env_id], **options)
        model.learn_offline(data, gradient_steps=gradient_steps, log_interval=None)
        row[f"{name}_seconds"] = round(time.time() - start, 1)
        row[f"{name}_return"], row[f"{name}_outside"], row[f"{name}_unsafe"] = deploy(model, env_id, n_episodes, True)
        if name == "estimated":
            ret, outside, unsafe = deploy(model, env_id, n_episodes, False)
            row["estimated_nosupport_return"], row["estimated_nosupport_outside"] = ret, outside
            row["estimated_nosupport_unsafe"] = unsafe
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--gradient-steps", type=int, default=5000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--beta", default="cloned", choices=["cloned", "uniform"], help="estimated beta's option")
    parser.add_argument("--out", default="benchmarks/studies/offline_estimated.csv")
    args = parser.parse_args()
    th.set_num_threads(1)
    os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="sb3_safeq_estimated_")
    rows = []
    for env_id in args.envs:
        for seed in args.seeds:
            rows.append(run(env_id, seed, args.steps, args.gradient_steps, args.episodes, args.beta))
            print(rows[-1], flush=True)
            with open(args.out, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    print(
        "| env | seed | known β (return / outside / unsafe) | estimated β, no support given | "
        "estimated β, true support |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['env']} | {row['seed']} | {row['known_return']:.2f} / {row['known_outside']} / "
            f"{row['known_unsafe']} | {row['estimated_nosupport_return']:.2f} / {row['estimated_nosupport_outside']} / "
            f"{row['estimated_nosupport_unsafe']} | {row['estimated_return']:.2f} / {row['estimated_outside']} / "
            f"{row['estimated_unsafe']} |"
        )


if __name__ == "__main__":
    main()
