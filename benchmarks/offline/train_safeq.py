"""
Train SafeSupportQ offline on the same exported dataset as d3rlpy (``export_dataset.py``), with the behavior that
logged it as beta (``uniform``). Run with the project's virtualenv:

    python benchmarks/offline/train_safeq.py benchmarks/offline/runs/*/dataset.npz --gradient-steps 5000

It trains on the environment's own observations (``env_observations``: SB3 one-hot encodes Discrete ones itself, the
same encoding the export wrote for d3rlpy) and the stored supports, and writes ``safeq.zip`` and ``safeq.json``
(settings, wall time of training) beside each dataset. Settings: MLPs [64, 64], batch size 64, gamma 0.99, tau 0.02,
learning rate 1e-3 (Discrete) or 5e-4 (Box, with hyperparams/safeq.yml's reverse-KL extraction and 16 behavior
samples), alpha 0.05 (the default).
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch as th

import sb3_safeq
from sb3_safeq import SafeSupportQ


def settings_for(discrete: bool) -> dict[str, Any]:
    """:return: SafeSupportQ's constructor arguments for a Discrete or Box dataset (see the module docstring)"""
    settings: dict[str, Any] = {
        "tau": 0.02,
        "batch_size": 64,
        "gamma": 0.99,
        "policy_kwargs": {"net_arch": [64, 64]},
    }
    if discrete:
        return settings | {"learning_rate": 1e-3}
    return settings | {"learning_rate": 5e-4, "extraction": "reverse_kl", "n_behavior_samples": 16}


def transitions(data: Any) -> dict[str, np.ndarray]:
    """:return: the dict of arrays ``learn_offline`` takes, from an exported file (environment units)"""
    return {
        "observations": data["env_observations"],
        "actions": data["actions"],
        "rewards": data["rewards"],
        "next_observations": data["env_next_observations"],
        "terminations": data["terminals"],
        "truncations": data["timeouts"],
        "supports": data["supports"],
        "next_supports": data["next_supports"],
        "costs": data["costs"],
    }


def train(path: Path, gradient_steps: int) -> dict[str, Any]:
    """Train on one exported dataset and save the model beside it; :return: what ``safeq.json`` holds"""
    data = np.load(path)
    env_id, seed = str(data["env_id"]), int(data["seed"])
    settings = settings_for(str(data["action_space"]) == "discrete")
    arrays = transitions(data)
    start, cpu_start = time.perf_counter(), time.process_time()
    # The environment gives the model its spaces only: learn_offline takes no environment step.
    model = SafeSupportQ("MlpPolicy", env_id, seed=seed, buffer_size=len(arrays["rewards"]), **settings)
    model.learn_offline(arrays, gradient_steps=gradient_steps, log_interval=None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    model.save(path.parent / "safeq.zip")
    return {
        "algo": "safeq",
        "env_id": env_id,
        "seed": seed,
        "gradient_steps": gradient_steps,
        "train_wall_s": wall,
        # CPU seconds of this process: on a shared machine far steadier than the wall time.
        "train_cpu_s": cpu,
        "settings": {key: repr(value) for key, value in settings.items()},
        "versions": {
            "sb3_safeq": sb3_safeq.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": th.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset.npz files from export_dataset.py")
    parser.add_argument("--gradient-steps", type=int, default=5000)
    args = parser.parse_args()
    # The benchmark machine is shared: one thread, as for d3rlpy.
    th.set_num_threads(1)
    for path in args.datasets:
        record = train(path, args.gradient_steps)
        (path.parent / "safeq.json").write_text(json.dumps(record, indent=1))
        print(
            f"{record['env_id']} seed {record['seed']} safeq: {record['train_wall_s']:.1f} s "
            f"({record['train_cpu_s']:.1f} CPU s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
