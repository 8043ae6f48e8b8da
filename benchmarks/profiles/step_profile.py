"""
Where the time of one gradient step and one environment step goes, for SafeSupportQ and its SB3 counterpart (DQN
for Discrete actions, SAC for Box actions), with the same network, batch size and one gradient step per environment
step. The real calls are timed by wrapping them (nothing of ``train`` is re-implemented here): sampling the replay
buffer, ``backward``, gradient clipping, the optimizer's ``zero_grad`` and ``step``, the target update; the rest of
``train`` is the forward passes and the losses (with their Python). DQN copies its target network in ``_on_step``
(every ``target_update_interval`` environment steps), so its target update is part of the environment step. An
environment step is ``collect_rollouts`` with no gradient step: acting, ``env.step`` through the wrappers, storing
the transition.

    python benchmarks/profiles/step_profile.py --env SafeCliffWalking-v0
    python benchmarks/profiles/step_profile.py --env SafePointMass-v0 --net-arch 256 256 --batch-size 256

One torch thread; CPU times in microseconds per step, the median of ``--repeats`` interleaved repeats.
"""

import argparse
import contextlib
import copy
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import stable_baselines3.sac.sac as sac_module
import torch as th
from stable_baselines3 import DQN, SAC

import sb3_safeq.safeq.safeq as safeq_module
from sb3_safeq import SafeSupportQ, make_support_kind

PARTS = ("sample", "forward and losses", "zero_grad", "backward", "clip", "optimizer step", "target update")


@contextlib.contextmanager
def patched(owner: Any, name: str, timed: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Replace ``owner.name`` by ``timed(original)`` for the duration of the block (nothing if it has none)."""
    if not hasattr(owner, name):  # e.g. an older sb3_safeq without `clip_grad_norms_`
        yield
        return
    original = getattr(owner, name)
    setattr(owner, name, timed(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def profile_gradient_step(model: Any, n_steps: int) -> dict[str, float]:
    """
    :param model: a model whose replay buffer holds enough transitions
    :param n_steps: gradient steps to time
    :return: microseconds per gradient step, by part (:data:`PARTS`) and in total
    """
    spent: dict[str, float] = defaultdict(float)

    def timer(part: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    spent[part] += time.perf_counter() - start

            return timed

        return wrap

    # Every optimizer the policy's modules hold (SAC: actor and critic; DQN and SafeSupportQ: the policy's), and SAC's
    # entropy coefficient's.
    optimizers = {
        id(value): value
        for module in model.policy.modules()
        for value in vars(module).values()
        if isinstance(value, th.optim.Optimizer)
    }
    if getattr(model, "ent_coef_optimizer", None) is not None:
        optimizers[id(model.ent_coef_optimizer)] = model.ent_coef_optimizer
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(model.replay_buffer, "sample", timer("sample")))
        stack.enter_context(patched(th.autograd, "backward", timer("backward")))
        stack.enter_context(patched(th.nn.utils, "clip_grad_norm_", timer("clip")))
        stack.enter_context(patched(safeq_module, "clip_grad_norms_", timer("clip")))
        stack.enter_context(patched(sac_module, "polyak_update", timer("target update")))
        if isinstance(model, SafeSupportQ):
            stack.enter_context(patched(model, "_update_target_network", timer("target update")))
        for optimizer in optimizers.values():
            stack.enter_context(patched(optimizer, "step", timer("optimizer step")))
            stack.enter_context(patched(optimizer, "zero_grad", timer("zero_grad")))
        start = time.perf_counter()
        model.train(gradient_steps=n_steps, batch_size=model.batch_size)
        total = time.perf_counter() - start
    spent["forward and losses"] = total - sum(spent.values())
    result = {part: spent[part] / n_steps * 1e6 for part in PARTS}
    result["total"] = total / n_steps * 1e6
    return result


def profile_environment_step(model: Any, n_steps: int) -> float:
    """:return: microseconds per environment step of ``learn`` without gradient steps"""
    gradient_steps, model.gradient_steps = model.gradient_steps, 0
    start = time.perf_counter()
    model.learn(n_steps, reset_num_timesteps=False)
    model.gradient_steps = gradient_steps
    return (time.perf_counter() - start) / n_steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeCliffWalking-v0")
    parser.add_argument("--steps", type=int, default=2000, help="timed gradient steps and environment steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--n-samples", type=int, default=16, help="SafeSupportQ's n_behavior_samples (Box)")
    args = parser.parse_args()
    th.set_num_threads(1)
    discrete = make_support_kind(gym.make(args.env).action_space).name == "mask"
    common = {"learning_starts": 1000, "batch_size": args.batch_size, "policy_kwargs": {"net_arch": args.net_arch}}
    runs: dict[str, tuple[type, dict[str, Any]]] = {
        "DQN" if discrete else "SAC": (DQN if discrete else SAC, common),
        "SafeSupportQ": (SafeSupportQ, common if discrete else {**common, "n_behavior_samples": args.n_samples}),
    }
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for repeat in range(args.repeats):
        for name in list(runs)[repeat % 2 :] + list(runs)[: repeat % 2]:
            algo, kwargs = runs[name]
            # A copy: SB3 adds keys to `policy_kwargs` (SAC: `use_sde`) that another algorithm would refuse.
            model = algo("MlpPolicy", args.env, seed=repeat, **copy.deepcopy(kwargs))
            model.learn(kwargs["learning_starts"])
            model.train(gradient_steps=100, batch_size=model.batch_size)  # warm-up
            row = profile_gradient_step(model, args.steps)
            row["environment step"] = profile_environment_step(model, args.steps)
            results[name].append(row)
    columns = [*PARTS, "total", "environment step"]
    print(
        f"{args.env}, net_arch {args.net_arch}, batch {args.batch_size}"
        + ("" if discrete else f", SafeSupportQ n_behavior_samples={args.n_samples}")
        + f"; microseconds per step, median of {args.repeats} repeats, torch {th.__version__}, 1 thread\n"
    )
    print("| | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, rows in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{statistics.median(row[column] for row in rows):.0f}" for column in columns)
            + " |"
        )


if __name__ == "__main__":
    main()
