"""
Evaluate the policies learned offline from the exported safe datasets on the real environments, and write the
comparison table. Run with the project's virtualenv, after ``run_d3rlpy.py`` and ``train_safeq.py``:

    python benchmarks/offline/evaluate.py benchmarks/offline/runs/*/dataset.npz --episodes 20 \
        --csv benchmarks/offline/results.csv --markdown benchmarks/offline/results.md

Every policy acts deterministically through a (non-shielding) ``SafetyWrapper``, which counts the actions taken outside
the true support and the unsafe visits (``info["cost"] > 0``, the ground truth). The d3rlpy policies (TorchScript,
``torch.jit.load``: no d3rlpy needed here) get only the encoded observation: they know no supports. SafeSupportQ is
deployed as it is meant to be, with the support of each state (``safeq``), and, for reference, without it
(``safeq_no_support``: its extracted policy alone, where the API allows it).

Normalised return: ``(R - dataset mean) / (best known - dataset mean)``: 0 is the logging behavior, 1 the best known
safe return (``BEST_KNOWN``).
"""

import argparse
import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

import sb3_safeq
from sb3_safeq import SafeSupportQ, SafetyWrapper

#: Best known safe returns: the optimal safe return of the cliff (-13), the goal's reward on the frozen lake (1.0),
#: and the best mean return of SafePointMass-v0 in docs/benchmarks/results.md ("Best safe return: 21.36").
BEST_KNOWN = {"SafeCliffWalking-v0": -13.0, "SafeFrozenLake8x8-v0": 1.0, "SafePointMass-v0": 21.36}

#: A deployed policy: (observation, support as the wrapper gives it) -> environment action.
Policy = Callable[[Any, np.ndarray], Any]

COLUMNS = (
    "env_id",
    "dataset_seed",
    "algo",
    "return_mean",
    "return_std",
    "normalised_return",
    "out_of_support_actions",
    "unsafe_visits",
    "eval_episodes",
    "eval_steps",
    "train_wall_s",
    "train_cpu_s",
    "gradient_steps",
    "dataset_mean_return",
)


def encoder_for(encoding: str) -> Callable[[Any], np.ndarray]:
    """:return: the function giving a batch of one encoded observation, as the export encoded the dataset's"""
    if encoding.startswith("one_hot:"):
        size = int(encoding.split(":", 1)[1])
        return lambda observation: np.eye(size, dtype=np.float32)[[int(observation)]]
    return lambda observation: np.asarray(observation, dtype=np.float32).reshape(1, -1)


def torchscript_policy(path: Path, encoding: str, discrete: bool) -> Policy:
    """:return: the d3rlpy policy saved with ``save_policy``, acting on the encoded observation only (no support)"""
    module = th.jit.load(str(path))
    encode = encoder_for(encoding)

    def act(observation: Any, support: np.ndarray) -> Any:
        with th.no_grad():
            action = module(th.as_tensor(encode(observation))).numpy()[0]
        return int(action) if discrete else action.astype(np.float32)

    return act


def safeq_policy(path: Path, with_support: bool) -> Policy:
    """:return: the SafeSupportQ model's deterministic action, given the state's support or not"""
    model = SafeSupportQ.load(path, device="cpu")
    kind = model.support_kind

    def act(observation: Any, support: np.ndarray) -> Any:
        arguments = {kind.predict_keyword: support} if with_support else {}
        action, _ = model.predict(observation, deterministic=True, **arguments)
        return int(action) if kind.name == "mask" else action

    return act


def rollout(policy: Policy, env_id: str, n_episodes: int) -> tuple[list[float], int, int, int]:
    """:return: the episode returns, actions outside the true support, unsafe visits and steps, over ``n_episodes``"""
    env = SafetyWrapper(gym.make(env_id))
    kind = env.support_kind
    returns = []
    for episode in range(n_episodes):
        # Evaluation seeds far from the collection seeds (0-4), the same for every policy.
        observation, _ = env.reset(seed=1000 + episode)
        done, episode_return = False, 0.0
        while not done:
            support = getattr(env, kind.method_name)()
            observation, reward, terminated, truncated, _ = env.step(policy(observation, support))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    counters = env.counters
    env.close()
    return returns, counters.out_of_support_actions, counters.unsafe_visits, counters.steps


#: A trained policy found beside a dataset: (its loader, its training record, the file it is loaded from).
Found = tuple[Callable[[], Policy], dict[str, Any], Path]


def policies_of(folder: Path, encoding: str, discrete: bool) -> dict[str, Found]:
    """:return: every trained policy in a dataset's folder, by name (loaded on demand: evaluations are cached)"""
    found: dict[str, Found] = {}
    if (folder / "safeq.zip").exists():
        record = json.loads((folder / "safeq.json").read_text())
        model = folder / "safeq.zip"
        found["safeq"] = (lambda: safeq_policy(model, with_support=True), record, model)
        found["safeq_no_support"] = (lambda: safeq_policy(model, with_support=False), record, model)
    for record_path in sorted(folder.glob("d3rlpy_*.json")):
        record = json.loads(record_path.read_text())
        policy_path = folder / record["policy"]
        found[record["algo"]] = (
            lambda path=policy_path: torchscript_policy(path, encoding, discrete),  # type: ignore[misc]
            record,
            policy_path,
        )
    return found


def evaluate_policy(
    name: str, found: Found, env_id: str, seed: int, dataset_mean: float, n_episodes: int
) -> dict[str, Any] | None:
    """
    :return: the policy's row (see ``COLUMNS``), from ``eval_<name>.json`` beside it when that is newer than the policy
        and has as many episodes (the runs land one by one on a shared machine: evaluate as they come), else None when
        the policy cannot act
    """
    load, record, source = found
    cache = source.parent / f"eval_{name}.json"
    if cache.exists() and cache.stat().st_mtime > source.stat().st_mtime:
        cached = json.loads(cache.read_text())
        if cached["eval_episodes"] == n_episodes:
            return cached
    try:
        returns, outside, unsafe, steps = rollout(load(), env_id, n_episodes)
    except ValueError as error:
        # e.g. a model that cannot act without the support: say so rather than fail the whole table.
        print(f"{env_id} seed {seed} {name}: not evaluated ({error})")
        return None
    mean = float(np.mean(returns))
    row = {
        "env_id": env_id,
        "dataset_seed": seed,
        "algo": name,
        "return_mean": mean,
        "return_std": float(np.std(returns)),
        "normalised_return": (mean - dataset_mean) / (BEST_KNOWN[env_id] - dataset_mean),
        "out_of_support_actions": outside,
        "unsafe_visits": unsafe,
        "eval_episodes": n_episodes,
        "eval_steps": steps,
        "train_wall_s": float(record["train_wall_s"]),
        "train_cpu_s": float(record["train_cpu_s"]),
        "gradient_steps": int(record["gradient_steps"]),
        "dataset_mean_return": dataset_mean,
    }
    cache.write_text(json.dumps(row, indent=1))
    print(f"{env_id} seed {seed} {name}: return {mean:.2f}, outside {outside}, unsafe {unsafe}", flush=True)
    return row


def evaluate_dataset(path: Path, n_episodes: int) -> list[dict[str, Any]]:
    """:return: one row per policy trained on this dataset (see ``COLUMNS``)"""
    data = np.load(path)
    env_id, seed = str(data["env_id"]), int(data["seed"])
    found = policies_of(path.parent, str(data["observation_encoding"]), str(data["action_space"]) == "discrete")
    rows = [
        evaluate_policy(name, item, env_id, seed, float(data["dataset_mean_return"]), n_episodes)
        for name, item in found.items()
    ]
    return [row for row in rows if row is not None]


def common_seeds(rows: list[dict[str, Any]], env_id: str) -> set[int]:
    """:return: the dataset seeds every algorithm of this environment was evaluated on (a fair summary uses those)"""
    seeds_by_algo: dict[str, set[int]] = {}
    for row in rows:
        if row["env_id"] == env_id:
            seeds_by_algo.setdefault(row["algo"], set()).add(row["dataset_seed"])
    return set.intersection(*seeds_by_algo.values())


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """
    :return: the per-environment, per-algorithm summary (mean ± std over the dataset seeds that every algorithm of the
        environment has; counts summed over them); the CSV keeps every row
    """
    lines = [
        "| env | algo | dataset seeds | return | normalised return | deployed actions outside the support (sum) | "
        "unsafe visits (sum) | train wall s | train CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(row["env_id"], row["algo"]) for row in rows}, key=lambda key: (key[0], key[1] != "safeq", key[1]))
    for env_id, algo in keys:
        seeds = common_seeds(rows, env_id)
        group = [row for row in rows if (row["env_id"], row["algo"]) == (env_id, algo) and row["dataset_seed"] in seeds]
        if not group:
            continue
        returns = np.array([row["return_mean"] for row in group])
        normalised = np.array([row["normalised_return"] for row in group])
        walls = np.array([row["train_wall_s"] for row in group])
        cpus = np.array([row["train_cpu_s"] for row in group])
        lines.append(
            f"| {env_id} | {algo} | {', '.join(str(seed) for seed in sorted(seeds))} | "
            f"{returns.mean():.2f} ± {returns.std():.2f} | "
            f"{normalised.mean():.2f} ± {normalised.std():.2f} | {sum(row['out_of_support_actions'] for row in group)}"
            f" | {sum(row['unsafe_visits'] for row in group)} | {walls.mean():.0f} | {cpus.mean():.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset.npz files with trained policies beside them")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/offline/results.csv"))
    parser.add_argument("--markdown", type=Path, default=None, help="also print the summary table into this file")
    args = parser.parse_args()
    th.set_num_threads(1)
    # safeq_no_support acts without the support on purpose (the reference row): its warning says what we measure.
    warnings.simplefilter("ignore", sb3_safeq.PredictWithoutSupportWarning)
    rows = [row for path in args.datasets for row in evaluate_dataset(path, args.episodes)]
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
