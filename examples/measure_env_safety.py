"""
Measure how safe the bundled environments' masks are: run a policy with and without the safe-action mask for
the same number of steps and count unsafe visits (steps with ``info["cost"] > 0``) and decision states whose
mask is empty.

Table 1 uses a uniformly random policy on every environment. A random CartPole policy drops the pole long before
the cart gets near the position limit, so table 2 also runs an epsilon-greedy balancing controller on
SafeCartPole-v0: it keeps the pole up and drifts out of the limit, which is what a trained agent does.

Usage::

    python examples/measure_env_safety.py                 # 200k steps on SafeCartPole-v0, 100k on the others
    python examples/measure_env_safety.py --steps 10000   # same number of steps everywhere
"""

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import sb3_safeq  # noqa: F401  (registers the environments)
from sb3_safeq.envs import SAFE_DISCRETE_ENV_IDS

DEFAULT_STEPS = {"SafeCartPole-v0": 200_000}
DEFAULT_TABULAR_STEPS = 100_000
BALANCER_EPSILON = 0.1

# (observation, random generator) -> preferred action, or None for "uniform over the allowed actions".
PreferredAction = Callable[[np.ndarray, np.random.Generator], int | None]


@dataclass
class RunStats:
    """
    Counters of one run.

    :param steps: Environment steps taken.
    :param episodes: Episodes finished (terminated or truncated).
    :param unsafe_visits: Steps with ``info["cost"] > 0``.
    :param empty_masks: Decision states (observations an action was chosen in) whose mask was empty.
    """

    steps: int = 0
    episodes: int = 0
    unsafe_visits: int = 0
    empty_masks: int = 0


def uniform_random(observation: np.ndarray, rng: np.random.Generator) -> int | None:
    """Uniformly random policy: no preference, the runner samples among the allowed actions."""
    return None


def epsilon_greedy_balancer(observation: np.ndarray, rng: np.random.Generator) -> int | None:
    """
    CartPole controller that pushes the cart under the falling pole; it balances for hundreds of steps and drifts
    sideways, with probability ``BALANCER_EPSILON`` of a uniformly random action instead.
    """
    if rng.random() < BALANCER_EPSILON:
        return None
    _, _, theta, theta_dot = observation
    return int(theta + 0.5 * theta_dot > 0.0)


def run_policy(env_id: str, steps: int, masked: bool, seed: int, preferred: PreferredAction) -> RunStats:
    """
    Run a policy, restricted to the mask or not.

    With the mask, a preferred action outside it is replaced by a uniformly random safe action. When the mask is
    empty (the state is outside the safe set) there is nothing safe to choose, so the policy acts as unmasked;
    such states are counted.

    :param env_id: Registered id of a safe environment.
    :param steps: Number of environment steps.
    :param masked: Restrict the actions to ``action_masks() == True``.
    :param seed: Seed of the environment and of the policy.
    :param preferred: The policy, see :data:`PreferredAction`.
    :return: The run's counters.
    """
    env = gym.make(env_id)
    action_masks = env.get_wrapper_attr("action_masks")
    rng = np.random.default_rng(seed)
    all_actions = np.arange(int(env.action_space.n))
    stats = RunStats()
    observation, _ = env.reset(seed=seed)
    while stats.steps < steps:
        # The mask is read in every state, also unmasked, to count how often the policy leaves the safe set.
        mask = action_masks()
        if not mask.any():
            stats.empty_masks += 1
        allowed = np.flatnonzero(mask) if masked and mask.any() else all_actions
        action = preferred(observation, rng)
        if action is None or action not in allowed:
            action = int(allowed[rng.integers(len(allowed))])
        observation, _, terminated, truncated, info = env.step(action)
        stats.steps += 1
        stats.unsafe_visits += int(info["cost"] > 0.0)
        if terminated or truncated:
            stats.episodes += 1
            observation, _ = env.reset()
    env.close()
    return stats


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps per run (default: {DEFAULT_STEPS}, {DEFAULT_TABULAR_STEPS} for the others)",
    )
    parser.add_argument(
        "--env-ids", nargs="+", default=list(SAFE_DISCRETE_ENV_IDS), help="environments to measure (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the environments and the policies")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    unknown = sorted(set(args.env_ids) - set(SAFE_DISCRETE_ENV_IDS))
    if unknown:
        parser.error(f"unknown env id(s) {unknown}; choose among {list(SAFE_DISCRETE_ENV_IDS)}")
    return args


def print_row(cells: Sequence[object]) -> None:
    """Print one Markdown table row; pipes inside cells are escaped."""
    print("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |", flush=True)


def measure(title: str, env_ids: Sequence[str], steps: int | None, seed: int, preferred: PreferredAction) -> None:
    """
    Print a Markdown table comparing masked and unmasked runs of one policy on several environments.

    :param title: Table title.
    :param env_ids: Environments to run.
    :param steps: Steps per run; None for the per-environment default.
    :param seed: Seed of the environments and the policy.
    :param preferred: The policy.
    """
    columns = (
        "env id",
        "safe set",
        "steps",
        "unsafe visits masked",
        "unsafe visits unmasked",
        "empty masks masked",
        "empty masks unmasked",
        "episodes masked / unmasked",
        "wall time",
    )
    print(f"\n{title}\n")
    print_row(columns)
    print("|" + "---|" * len(columns))
    for env_id in env_ids:
        n_steps = steps or DEFAULT_STEPS.get(env_id, DEFAULT_TABULAR_STEPS)
        definition = gym.make(env_id).get_wrapper_attr("safe_set_definition")
        start = time.perf_counter()
        masked = run_policy(env_id, n_steps, masked=True, seed=seed, preferred=preferred)
        unmasked = run_policy(env_id, n_steps, masked=False, seed=seed, preferred=preferred)
        print_row(
            (
                env_id,
                definition,
                n_steps,
                masked.unsafe_visits,
                unmasked.unsafe_visits,
                masked.empty_masks,
                unmasked.empty_masks,
                f"{masked.episodes} / {unmasked.episodes}",
                f"{time.perf_counter() - start:.1f} s",
            )
        )


def main() -> None:
    """Measure the requested environments."""
    args = parse_args()
    measure("Table 1: uniformly random policy", args.env_ids, args.steps, args.seed, uniform_random)
    if "SafeCartPole-v0" in args.env_ids:
        measure(
            f"Table 2: balancing controller, epsilon = {BALANCER_EPSILON}",
            ["SafeCartPole-v0"],
            args.steps,
            args.seed,
            epsilon_greedy_balancer,
        )


if __name__ == "__main__":
    main()
