"""
Train d3rlpy's offline algorithms on an exported safe dataset (``export_dataset.py``) and save each learned policy as
TorchScript. Runs in d3rlpy's OWN virtualenv (d3rlpy 2.8 pins gymnasium 1.0.0); it reads only the ``.npz`` file, never
sb3_safeq or Minari:

    /work/d3rlpy-venv/bin/python benchmarks/offline/run_d3rlpy.py \
        benchmarks/offline/runs/SafeCliffWalking-v0-uniform-seed0/dataset.npz --gradient-steps 5000

Discrete actions: DiscreteCQL, DiscreteBCQ and DiscreteBC; Box actions: CQL, IQL, AWAC, TD3+BC and BC. Beside the
dataset, each algorithm writes ``d3rlpy_<name>.pt`` (``save_policy``: observations encoded as in the dataset's
``observation_encoding`` in, greedy / deterministic actions out; ``torch.jit.load`` reads it without d3rlpy) and
``d3rlpy_<name>.json`` (settings, versions, wall time of training).

The settings follow SafeSupportQ's in the comparison where an algorithm has the same knob: MLPs [64, 64], batch size
64, gamma 0.99, soft target updates tau 0.02 (Box) or a hard copy every 50 steps (Discrete, about the same time
constant), learning rate 1e-3 for the Discrete Q-learners (d3rlpy's default 6.25e-5 with a copy every 8,000 steps is
tuned for Atari's millions of steps and would not move in 5,000). Everything else is d3rlpy's default.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import d3rlpy
import numpy as np
import torch

#: The algorithms trained per action space: name -> d3rlpy config class.
DISCRETE_ALGOS = {
    "DiscreteCQL": d3rlpy.algos.DiscreteCQLConfig,
    "DiscreteBCQ": d3rlpy.algos.DiscreteBCQConfig,
    "DiscreteBC": d3rlpy.algos.DiscreteBCConfig,
}
BOX_ALGOS = {
    "CQL": d3rlpy.algos.CQLConfig,
    "IQL": d3rlpy.algos.IQLConfig,
    "AWAC": d3rlpy.algos.AWACConfig,
    "TD3PlusBC": d3rlpy.algos.TD3PlusBCConfig,
    "BC": d3rlpy.algos.BCConfig,
}


def load_dataset(path: Path) -> tuple[d3rlpy.dataset.MDPDataset, dict[str, Any]]:
    """
    :param path: an ``export_dataset.py`` file
    :return: the d3rlpy dataset (encoded observations) and the file's metadata
    """
    data = np.load(path)
    discrete = str(data["action_space"]) == "discrete"
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data["observations"].astype(np.float32),
        actions=data["actions"].astype(np.int64 if discrete else np.float32),
        rewards=data["rewards"].astype(np.float32),
        # d3rlpy cuts episodes at terminals and timeouts alike; a timeout's last transition is dropped by d3rlpy (its
        # next observation is not in the arrays), about one transition per cut episode.
        terminals=data["terminals"].astype(np.float32),
        timeouts=data["timeouts"].astype(np.float32),
        action_space=d3rlpy.ActionSpace.DISCRETE if discrete else d3rlpy.ActionSpace.CONTINUOUS,
        action_size=int(data["n_actions"]) if discrete else int(data["actions"].shape[1]),
    )
    metadata = {"discrete": discrete, "env_id": str(data["env_id"]), "seed": int(data["seed"])}
    return dataset, metadata


def make_config(name: str, config_class: type, net_arch: list[int], batch_size: int, discrete: bool) -> Any:
    """:return: the algorithm's config with the shared settings (see the module docstring), d3rlpy's defaults else"""
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=net_arch)
    settings: dict[str, Any] = {"batch_size": batch_size, "gamma": 0.99}
    if discrete:
        settings["encoder_factory"] = encoder
        if name != "DiscreteBC":
            settings |= {"learning_rate": 1e-3, "target_update_interval": 50}
    elif name == "BC":
        settings["encoder_factory"] = encoder
    else:
        settings |= {"actor_encoder_factory": encoder, "critic_encoder_factory": encoder, "tau": 0.02}
        if name == "IQL":
            settings["value_encoder_factory"] = encoder
    return config_class(**settings)


def train(name: str, config: Any, dataset: Any, gradient_steps: int, seed: int, out: Path) -> dict[str, Any]:
    """Train one algorithm, save its policy as TorchScript; :return: what the ``.json`` record holds"""
    d3rlpy.seed(seed)
    algo = config.create(device="cpu:0")
    start, cpu_start = time.perf_counter(), time.process_time()
    algo.fit(
        dataset,
        n_steps=gradient_steps,
        n_steps_per_epoch=gradient_steps,
        show_progress=False,
        save_interval=gradient_steps + 1,
        # No log folders: the wall time and the policy are the only results.
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    policy_path = out / f"d3rlpy_{name}.pt"
    algo.save_policy(str(policy_path))
    return {
        "algo": f"d3rlpy_{name}",
        "policy": policy_path.name,
        "gradient_steps": gradient_steps,
        "seed": seed,
        "train_wall_s": wall,
        # CPU seconds of this process: on a shared machine far steadier than the wall time.
        "train_cpu_s": cpu,
        "settings": {key: repr(value) for key, value in vars(config).items()},
        "versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__, "numpy": np.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset.npz files from export_dataset.py")
    parser.add_argument("--gradient-steps", type=int, default=5000)
    parser.add_argument("--algos", nargs="*", default=None, help="a subset of the algorithms (default: all that fit)")
    parser.add_argument("--net-arch", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    # The benchmark machine is shared: one thread, as for SafeSupportQ.
    torch.set_num_threads(1)
    for path in args.datasets:
        dataset, metadata = load_dataset(path)
        algos = DISCRETE_ALGOS if metadata["discrete"] else BOX_ALGOS
        for name, config_class in algos.items():
            if args.algos and name not in args.algos:
                continue
            config = make_config(name, config_class, args.net_arch, args.batch_size, metadata["discrete"])
            record = train(name, config, dataset, args.gradient_steps, metadata["seed"], path.parent)
            record["env_id"] = metadata["env_id"]
            (path.parent / f"d3rlpy_{name}.json").write_text(json.dumps(record, indent=1))
            print(
                f"{metadata['env_id']} seed {metadata['seed']} {name}: {record['train_wall_s']:.1f} s "
                f"({record['train_cpu_s']:.1f} CPU s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
