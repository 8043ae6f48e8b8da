"""
Offline SafeSupportQ against online SafeSupportQ on the same budget: a dataset of N steps of the uniform safe behavior
(collected through a strict SafetyWrapper into a local Minari dataset), N gradient steps on it, against an online run
of N environment steps (one gradient step each, same hyperparameters). Both are evaluated deterministically with the
supports; the deployed actions outside the support are counted by a SafetyWrapper.

    python examples/offline_vs_online.py [--env SafeCliffWalking-v0] [--steps 5000] [--seeds 0 1 2]
        [--tau 0.02] [--learning-rate 1e-3] [--net-arch 64 64]

The datasets go to a temporary folder (MINARI_DATASETS_PATH), never to the hub.
"""

import argparse
import os
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch as th

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeSupportQ, SafetyWrapper


def deploy(model: SafeSupportQ, env_id: str, n_episodes: int) -> tuple[float, int, int]:
    """:return: mean return of the deterministic policy given the supports, actions outside them, unsafe visits"""
    env = SafetyWrapper(gym.make(env_id))
    kind = env.support_kind
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=1000 + episode)
        done, episode_return = False, 0.0
        while not done:
            support = getattr(env, kind.method_name)()
            action, _ = model.predict(observation, deterministic=True, **{kind.predict_keyword: support})
            observation, reward, terminated, truncated, _ = env.step(int(action) if kind.name == "mask" else action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return float(np.mean(returns)), env.counters.out_of_support_actions, env.counters.unsafe_visits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeCliffWalking-v0")
    parser.add_argument("--steps", type=int, default=5000, help="dataset size = gradient steps = online env steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tau", type=float, default=0.02)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(1)
    os.environ.setdefault("MINARI_DATASETS_PATH", tempfile.mkdtemp(prefix="minari-"))
    from sb3_safeq.offline import collect_safe_dataset  # after MINARI_DATASETS_PATH is set

    settings = {"tau": args.tau, "learning_rate": args.learning_rate, "policy_kwargs": {"net_arch": args.net_arch}}
    print(f"{args.env}: N = {args.steps}, {settings}")
    print("seed  dataset return  offline return (out, unsafe, s)  online return (out, unsafe, train unsafe, s)")
    for seed in args.seeds:
        dataset_id = f"offline-vs-online/{args.env.lower()}-seed{seed}-v0"
        dataset = collect_safe_dataset(args.env, "uniform", args.steps, dataset_id, seed=seed)
        episode_returns = [float(episode.rewards.sum()) for episode in dataset.iterate_episodes()]

        start = time.perf_counter()
        offline = SafeSupportQ("MlpPolicy", args.env, seed=seed, **settings)
        offline.learn_offline(dataset, gradient_steps=args.steps, log_interval=None)
        offline_time = time.perf_counter() - start
        offline_result = deploy(offline, args.env, args.eval_episodes)

        start = time.perf_counter()
        online = SafeSupportQ("MlpPolicy", args.env, seed=seed, **settings)
        online.learn(args.steps)
        online_time = time.perf_counter() - start
        online_result = deploy(online, args.env, args.eval_episodes)
        print(
            f"{seed:>4}  {np.mean(episode_returns):>14.1f}  {offline_result[0]:>14.1f} {offline_result[1:]} "
            f"{offline_time:.0f}  {online_result[0]:>13.1f} {online_result[1:]} "
            f"{online.safety_counters.unsafe_visits} {online_time:.0f}"
        )


if __name__ == "__main__":
    main()
