"""
Offline SafeSupportQ from logs of an unknown behavior, without supports (``behavior="estimated"``).

A uniform safe behavior walks the cliff for 2,000 steps; the log keeps observations, actions, rewards and episode ends
only, as a plant's historian would. The model clones the logging policy (behavior cloning), takes the actions it gave
a probability of at least ``support_threshold`` as each state's estimated support, learns offline inside them, and is
deployed *without* any support: a SafetyWrapper checks each action against the environment's true mask.

    python examples/offline_estimated_behavior.py [--steps 2000] [--gradient-steps 1500] [--seed 0]

Runs in well under a minute on one CPU thread. The dataset goes to a temporary folder, never to the hub.
"""

import argparse
import os
import tempfile

import gymnasium as gym
import numpy as np
import torch as th

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.offline import collect_safe_dataset

ENV_ID = "SafeCliffWalking-v0"


def log_without_supports(n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """:return: a log of the uniform safe behavior as plain arrays, with the supports dropped"""
    dataset = collect_safe_dataset(ENV_ID, "uniform", n_steps=n_steps, dataset_id="cliff/log-v0", seed=seed)
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ("obs", "act", "rew", "next", "term", "trunc")}
    for episode in dataset.iterate_episodes():
        columns["obs"].append(episode.observations[:-1])
        columns["next"].append(episode.observations[1:])
        columns["act"].append(episode.actions)
        columns["rew"].append(episode.rewards)
        columns["term"].append(episode.terminations)
        columns["trunc"].append(episode.truncations)
    names = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
    keys = ("obs", "act", "rew", "next", "term", "trunc")
    return {name: np.concatenate(columns[key]) for name, key in zip(names, keys, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps of the logged behavior")
    parser.add_argument("--gradient-steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="sb3_safeq_example_")

    log = log_without_supports(args.steps, args.seed)
    model = SafeSupportQ(
        "MlpPolicy",
        ENV_ID,
        behavior="estimated",
        behavior_kwargs={"support_threshold": 0.05},
        tau=0.02,
        learning_rate=1e-3,
        seed=args.seed,
    )
    model.learn_offline(log, gradient_steps=args.gradient_steps, behavior_cloning_steps=1000, log_interval=None)

    env = SafetyWrapper(gym.make(ENV_ID))
    observation, _ = env.reset(seed=args.seed)
    done, episode_return = False, 0.0
    while not done:
        action, _ = model.predict(observation, deterministic=True)  # no support given: the estimated one is used
        observation, reward, terminated, truncated, _ = env.step(int(action))
        episode_return += float(reward)
        done = terminated or truncated
    counters = env.counters
    print(
        f"return {episode_return:.0f} (optimal safe path: -13), actions outside the true mask: "
        f"{counters.out_of_support_actions}, unsafe visits: {counters.unsafe_visits}"
    )
    true_masks = env.unwrapped.safe_action_table
    visited = np.unique(log["observations"])
    estimated = model.behavior_policy.supports_for(th.as_tensor(visited))
    assert estimated is not None
    print(
        f"estimated masks equal to the true ones on {int((estimated == true_masks[visited]).all(1).sum())} of "
        f"{len(visited)} visited states; unsafe actions in them: {int((estimated & ~true_masks[visited]).sum())}"
    )


if __name__ == "__main__":
    main()
