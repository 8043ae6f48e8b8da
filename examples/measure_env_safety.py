"""
Measure how safe the bundled environments' supports are: run a policy with and without the safe support (the
action mask, or the safe box of a continuous environment) for the same number of steps and count unsafe visits
(steps with ``info["cost"] > 0``) and decision states whose support is empty.

Table 1 uses a uniformly random policy on every environment (on a continuous one: uniform in the safe box, or in
the whole action space when unmasked). A random CartPole policy drops the pole long before the cart gets near the
position limit, so table 2 also runs an epsilon-greedy balancing controller on SafeCartPole-v0: it keeps the pole
up and drifts out of the limit, which is what a trained agent does. Table 3 compares episode returns on the
continuous environments: uniform in the safe box, against a greedy controller (straight to the goal, or pushing
towards the wall) clipped into the safe box, and unclipped.

Usage::

    python examples/measure_env_safety.py                 # 200k steps on SafeCartPole-v0, 100k on the others
    python examples/measure_env_safety.py --steps 10000   # same number of steps everywhere
"""

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import sb3_safeq  # noqa: F401  (registers the environments)
from sb3_safeq.envs import SAFE_CONTINUOUS_ENV_IDS, SAFE_DISCRETE_ENV_IDS

ALL_ENV_IDS = SAFE_DISCRETE_ENV_IDS + SAFE_CONTINUOUS_ENV_IDS

DEFAULT_STEPS = {"SafeCartPole-v0": 200_000}
DEFAULT_TABULAR_STEPS = 100_000
BALANCER_EPSILON = 0.1
RETURN_STEPS = 20_000

# (observation, random generator) -> preferred action (an int for Discrete actions, an array for Box ones), or
# None for "uniform over the allowed actions".
PreferredAction = Callable[[np.ndarray, np.random.Generator], int | np.ndarray | None]
# A choice of action: (observation, random generator, policy) -> (action, whether the support was empty).
ActionChooser = Callable[[np.ndarray, np.random.Generator, PreferredAction], tuple[int | np.ndarray, bool]]


@dataclass
class RunStats:
    """
    Counters of one run.

    :param steps: Environment steps taken.
    :param episodes: Episodes finished (terminated or truncated).
    :param unsafe_visits: Steps with ``info["cost"] > 0``.
    :param empty_masks: Decision states (observations an action was chosen in) whose mask was empty.
    :param returns: Return of each finished episode.
    :param episode_costs: Summed cost of each finished episode.
    """

    steps: int = 0
    episodes: int = 0
    unsafe_visits: int = 0
    empty_masks: int = 0
    returns: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)


def uniform_random(observation: np.ndarray, rng: np.random.Generator) -> None:
    """Uniformly random policy: no preference, the runner samples among the allowed actions."""
    return None


def goal_seeker(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SafePointMass-v0 controller: full speed straight towards the goal (``observation[2:4]`` is its offset)."""
    offset = observation[2:4].astype(np.float64)
    return offset / max(float(np.abs(offset).max()), 1e-9)


def wall_pusher(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SafeDoubleIntegrator-v0 controller: full acceleration towards the wall, where the reward is highest."""
    return np.ones(1)


GREEDY_CONTROLLERS: dict[str, PreferredAction] = {
    "SafePointMass-v0": goal_seeker,
    "SafeDoubleIntegrator-v0": wall_pusher,
}


def epsilon_greedy_balancer(observation: np.ndarray, rng: np.random.Generator) -> int | None:
    """
    CartPole controller that pushes the cart under the falling pole; it balances for hundreds of steps and drifts
    sideways, with probability ``BALANCER_EPSILON`` of a uniformly random action instead.
    """
    if rng.random() < BALANCER_EPSILON:
        return None
    _, _, theta, theta_dot = observation
    return int(theta + 0.5 * theta_dot > 0.0)


def mask_chooser(env: gym.Env, masked: bool) -> ActionChooser:
    """
    Action choice on a Discrete environment: with the mask, a preferred action outside it is replaced by a
    uniformly random safe action.

    :param env: The environment, with ``action_masks()``.
    :param masked: Restrict the actions to ``action_masks() == True``.
    :return: The chooser.
    """
    action_masks = env.get_wrapper_attr("action_masks")
    all_actions = np.arange(int(env.action_space.n))

    def choose(observation: np.ndarray, rng: np.random.Generator, preferred: PreferredAction) -> tuple[int, bool]:
        # The mask is read in every state, also unmasked, to count how often the policy leaves the safe set.
        mask = action_masks()
        allowed = np.flatnonzero(mask) if masked and mask.any() else all_actions
        action = preferred(observation, rng)
        if action is None or action not in allowed:
            action = int(allowed[rng.integers(len(allowed))])
        return action, not mask.any()

    return choose


def box_chooser(env: gym.Env, masked: bool) -> ActionChooser:
    """
    Action choice on a Box environment: with the safe box, a preferred action is clipped into it (its closest safe
    action) and no preference is uniform in it; unmasked, both use the whole action space instead.

    :param env: The environment, with ``safe_action_bounds()``; an empty box has ``low > high``.
    :param masked: Restrict the actions to the safe box.
    :return: The chooser.
    """
    safe_action_bounds = env.get_wrapper_attr("safe_action_bounds")
    space = env.action_space

    def choose(
        observation: np.ndarray, rng: np.random.Generator, preferred: PreferredAction
    ) -> tuple[np.ndarray, bool]:
        # The box is read in every state, also unmasked, to count how often the policy leaves the safe set.
        low, high = safe_action_bounds()
        empty = bool(np.any(low > high))
        if not masked or empty:
            low, high = space.low, space.high
        action = preferred(observation, rng)
        action = rng.uniform(low, high) if action is None else np.clip(action, low, high)
        # float32 rounding is monotone, so the cast stays within float32 bounds.
        return action.astype(space.dtype), empty

    return choose


def run_policy(env_id: str, steps: int, masked: bool, seed: int, preferred: PreferredAction) -> RunStats:
    """
    Run a policy, restricted to the safe support or not.

    See :func:`mask_chooser` and :func:`box_chooser` for how the support restricts the policy. When the support
    is empty (the state is outside the safe set) there is nothing safe to choose, so the policy acts as unmasked;
    such states are counted.

    :param env_id: Registered id of a safe environment.
    :param steps: Number of environment steps.
    :param masked: Restrict the actions to the safe support.
    :param seed: Seed of the environment and of the policy.
    :param preferred: The policy, see :data:`PreferredAction`.
    :return: The run's counters.
    """
    env = gym.make(env_id)
    choose = box_chooser(env, masked) if isinstance(env.action_space, spaces.Box) else mask_chooser(env, masked)
    rng = np.random.default_rng(seed)
    stats = RunStats()
    episode_return, episode_cost = 0.0, 0.0
    observation, _ = env.reset(seed=seed)
    while stats.steps < steps:
        action, empty = choose(observation, rng, preferred)
        stats.empty_masks += int(empty)
        observation, reward, terminated, truncated, info = env.step(action)
        stats.steps += 1
        stats.unsafe_visits += int(info["cost"] > 0.0)
        episode_return += float(reward)
        episode_cost += info["cost"]
        if terminated or truncated:
            stats.episodes += 1
            stats.returns.append(episode_return)
            stats.episode_costs.append(episode_cost)
            episode_return, episode_cost = 0.0, 0.0
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
        "--env-ids", nargs="+", default=list(ALL_ENV_IDS), help="environments to measure (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the environments and the policies")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    unknown = sorted(set(args.env_ids) - set(ALL_ENV_IDS))
    if unknown:
        parser.error(f"unknown env id(s) {unknown}; choose among {list(ALL_ENV_IDS)}")
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


def measure_returns(env_ids: Sequence[str], steps: int | None, seed: int) -> None:
    """
    Print a Markdown table of episode returns of a uniformly random and a greedy policy, with and without the safe
    box, on continuous environments.

    :param env_ids: Continuous environments to run.
    :param steps: Steps per run; None for ``RETURN_STEPS``.
    :param seed: Seed of the environments and the policies.
    """
    columns = ("env id", "policy", "support", "episodes", "return mean", "return std", "cost per episode")
    print(f"\nTable 3: episode returns on the continuous environments, {steps or RETURN_STEPS} steps per run\n")
    print_row(columns)
    print("|" + "---|" * len(columns))
    for env_id in env_ids:
        for name, preferred in (("uniform random", uniform_random), ("greedy", GREEDY_CONTROLLERS[env_id])):
            for masked in (True, False):
                stats = run_policy(env_id, steps or RETURN_STEPS, masked=masked, seed=seed, preferred=preferred)
                returns = np.array(stats.returns)
                print_row(
                    (
                        env_id,
                        name,
                        "safe box" if masked else "whole action space",
                        stats.episodes,
                        f"{returns.mean():.2f}",
                        f"{returns.std():.2f}",
                        f"{np.mean(stats.episode_costs):.2f}",
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
    continuous = [env_id for env_id in args.env_ids if env_id in SAFE_CONTINUOUS_ENV_IDS]
    if continuous:
        measure_returns(continuous, args.steps, args.seed)


if __name__ == "__main__":
    main()
