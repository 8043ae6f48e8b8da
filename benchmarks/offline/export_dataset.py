"""
Collect a safe offline dataset with sb3-safeq and export it as a plain ``.npz`` file of arrays: the only thing the
d3rlpy side (``run_d3rlpy.py``, its own virtualenv) reads. Run with the project's virtualenv:

    python benchmarks/offline/export_dataset.py --envs SafeCliffWalking-v0 SafeFrozenLake8x8-v0 SafePointMass-v0 \
        --steps 5000 --seeds 0 1 2 --out benchmarks/offline/runs

One file per environment and seed, ``<out>/<env>-uniform-seed<seed>/dataset.npz``, holding one row per transition:

- ``observations`` / ``next_observations``: float32, *encoded* for a generic MLP (one-hot for Discrete observation
  spaces, unchanged for Box ones); the encoding is named once, in ``observation_encoding`` (``one_hot:<n>`` or
  ``identity``), and ``evaluate.py`` applies the same one to the environment's observations;
- ``env_observations`` / ``env_next_observations``: the observations as the environment gives them (what
  SafeSupportQ, with SB3's own preprocessing, trains on);
- ``actions`` (environment units), ``rewards``, ``terminals`` (the next observation is terminal), ``timeouts`` (the
  episode was cut after this step: time limit or end of the log);
- ``supports`` / ``next_supports``: action masks ``(n, n_actions)`` or boxes ``(n, 2, action_dim)`` (row 0 low,
  row 1 high), as the ``SafetyWrapper`` gives them; ``costs``;
- metadata: ``env_id``, ``behavior``, ``seed``, ``action_space`` (``discrete`` or ``box``), ``n_actions`` /
  ``action_low`` / ``action_high``, ``dataset_mean_return`` and ``episode_returns`` (complete and cut episodes alike).
"""

import argparse
import os
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafetyWrapper

#: The first increment's environments: two Discrete grid worlds (masks) and one Box task (boxes).
DEFAULT_ENVS = ("SafeCliffWalking-v0", "SafeFrozenLake8x8-v0", "SafePointMass-v0")


def encoding_of(observation_space: gym.Space) -> str:
    """:return: the name of the observation encoding both sides apply (one-hot for integer grid cells)"""
    if isinstance(observation_space, gym.spaces.Discrete):
        return f"one_hot:{int(observation_space.n)}"
    if isinstance(observation_space, gym.spaces.Box):
        return "identity"
    raise ValueError(f"Only Discrete and Box observations are exported, got {observation_space}.")


def encode(observations: np.ndarray, encoding: str) -> np.ndarray:
    """
    :param observations: ``(n,)`` integer cells or ``(n, *obs_shape)`` vectors, as the environment gives them
    :param encoding: ``one_hot:<n>`` or ``identity`` (see :func:`encoding_of`)
    :return: ``(n, features)`` float32, what a d3rlpy MLP reads
    """
    if encoding.startswith("one_hot:"):
        size = int(encoding.split(":", 1)[1])
        return np.eye(size, dtype=np.float32)[np.asarray(observations, dtype=np.int64).reshape(-1)]
    return np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)


def collect(env_id: str, behavior: str, n_steps: int, seed: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """
    Collect ``n_steps`` safe steps into a throwaway local Minari dataset and read them back as transitions.

    :return: the transition arrays (environment units) and the return of every episode in the log
    """
    from sb3_safeq.offline import collect_safe_dataset  # after MINARI_DATASETS_PATH is set by main()
    from sb3_safeq.offline.minari_io import transitions_from_minari

    dataset_id = f"offline-bench/{env_id.lower()}-{behavior}-seed{seed}-v0"
    dataset = collect_safe_dataset(env_id, behavior, n_steps, dataset_id, seed=seed)
    episode_returns = [float(np.sum(episode.rewards)) for episode in dataset.iterate_episodes()]
    # Read back through the package's own reader, so that the export holds exactly what learn_offline would train on.
    env = SafetyWrapper(gym.make(env_id))
    transitions = transitions_from_minari(dataset, env.support_kind, env.observation_space)
    env.close()
    arrays = {
        "env_observations": transitions.observations,
        "env_next_observations": transitions.next_observations,
        "actions": transitions.actions,
        "rewards": transitions.rewards.astype(np.float32),
        "terminals": transitions.terminations.astype(bool),
        "timeouts": transitions.truncations.astype(bool),
        "supports": transitions.supports,
        "next_supports": transitions.next_supports,
        "costs": transitions.costs if transitions.costs is not None else np.zeros(len(transitions)),
    }
    return arrays, episode_returns


def space_metadata(env_id: str) -> dict[str, np.ndarray]:
    """:return: the action space's type and size (Discrete) or bounds (Box), and the observation encoding"""
    env = gym.make(env_id)
    metadata = {"observation_encoding": np.array(encoding_of(env.observation_space))}
    if isinstance(env.action_space, gym.spaces.Discrete):
        metadata |= {"action_space": np.array("discrete"), "n_actions": np.array(int(env.action_space.n))}
    else:
        metadata |= {
            "action_space": np.array("box"),
            "action_low": env.action_space.low,
            "action_high": env.action_space.high,
        }
    env.close()
    return metadata


def export(env_id: str, behavior: str, n_steps: int, seed: int, out: Path) -> Path:
    """Collect one dataset and write it as ``<out>/<env>-<behavior>-seed<seed>/dataset.npz``; :return: its path"""
    arrays, episode_returns = collect(env_id, behavior, n_steps, seed)
    metadata = space_metadata(env_id)
    encoding = str(metadata["observation_encoding"])
    folder = out / f"{env_id}-{behavior}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dataset.npz"
    np.savez_compressed(
        path,
        observations=encode(arrays["env_observations"], encoding),
        next_observations=encode(arrays["env_next_observations"], encoding),
        env_id=np.array(env_id),
        behavior=np.array(behavior),
        seed=np.array(seed),
        episode_returns=np.array(episode_returns),
        dataset_mean_return=np.array(np.mean(episode_returns)),
        **arrays,
        **metadata,
    )
    print(
        f"{path}: {len(arrays['rewards'])} transitions, {len(episode_returns)} episodes, mean return "
        f"{np.mean(episode_returns):.2f}, {int(arrays['terminals'].sum())} terminal transitions"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    parser.add_argument("--behavior", default="uniform", help="what collect_safe_dataset accepts (default: uniform)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/offline/runs"))
    args = parser.parse_args()
    # Minari writes each dataset to a local folder; a temporary one keeps the exports the only result (no hub).
    os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="minari-offline-bench-")
    for env_id in args.envs:
        for seed in args.seeds:
            export(env_id, args.behavior, args.steps, seed, args.out)


if __name__ == "__main__":
    main()
