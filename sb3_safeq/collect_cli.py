"""``sb3-safeq collect``: log a safe behavior into a local Minari dataset with supports and costs."""

import argparse
import importlib
import os
import sys
from typing import Any

import gymnasium as gym

from sb3_safeq.common.supports.errors import EmptySupportError
from sb3_safeq.common.wrappers import UnsafeVisitError
from sb3_safeq.offline import collect_safe_dataset
from sb3_safeq.safeq import SafeSupportQ


def _behavior(argument: str) -> Any:
    """:return: what ``collect_safe_dataset`` takes for the ``--behavior`` argument"""
    if argument == "uniform" or ":" in argument:
        return argument  # an import path is resolved (and checked) by the support kind
    if argument.endswith(".zip"):
        if not os.path.isfile(argument):
            raise ValueError(f"no saved model {argument!r}")
        return SafeSupportQ.load(argument, device="cpu")
    raise ValueError(
        f"--behavior {argument!r}: give 'uniform', the import path 'package.module:name' of a controller or "
        "behavior (as SafeSupportQ(behavior=...) takes it), or a saved SafeSupportQ model (.zip)"
    )


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    """:return: exit code 2, after the one-line message on stderr"""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def main(arguments: list[str]) -> int:
    """
    :param arguments: the command-line arguments after ``collect``
    :return: the exit code: 0, or 2 with a one-line message when the inputs cannot work
    """
    parser = argparse.ArgumentParser(
        prog="sb3-safeq collect",
        description="Run a behavior inside the safe support of an environment (through a strict SafetyWrapper) and "
        "write the transitions, with the support of every observation and the cost of every step, as a local Minari "
        "dataset (folder: MINARI_DATASETS_PATH, default ~/.minari/datasets). Train on it with "
        "SafeSupportQ.learn_offline(dataset_id, gradient_steps).",
    )
    parser.add_argument("--env", required=True, help="environment id (with action_masks() or safe_action_bounds())")
    parser.add_argument(
        "--behavior",
        default="uniform",
        help="'uniform' (default), the import path 'package.module:name' of a controller or behavior, or a saved "
        "SafeSupportQ model (.zip; unpickled: trusted files only)",
    )
    parser.add_argument("--steps", type=int, required=True, help="number of environment steps to log")
    parser.add_argument("--dataset-id", required=True, help="id of the new local dataset, e.g. cliff/uniform-v0")
    parser.add_argument("--gym-packages", nargs="+", default=[], help="packages to import that register the env")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first reset and of the behavior")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(arguments)
    if args.steps < 1:
        return _usage_error(parser, f"--steps must be >= 1, got {args.steps}")
    try:
        for package in args.gym_packages:
            importlib.import_module(package)
        dataset = collect_safe_dataset(
            args.env,
            behavior=_behavior(args.behavior),
            n_steps=args.steps,
            dataset_id=args.dataset_id,
            seed=args.seed,
            progress_bar=not args.no_progress,
        )
    except (ValueError, TypeError, ImportError, AttributeError, gym.error.Error, EmptySupportError) as error:
        return _usage_error(parser, str(error))
    except UnsafeVisitError as error:
        return _usage_error(parser, f"the safe support let an unsafe step through: {error}")
    print(
        f"Wrote {dataset.total_steps} steps in {dataset.total_episodes} episodes of {args.env} to the Minari dataset "
        f"{args.dataset_id!r} (unsafe steps: 0)."
    )
    return 0
