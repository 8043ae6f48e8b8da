"""
The main job: train SafeSupportQ on the bundled safe cliff-walking task and report what it learned and how safe
training was.

    python examples/train_cliff_walking.py [--env SafeCliffWalking-v0] [--steps 20000] [--seed 0]
        [--exploration behavior|induced|mixture] [--alpha 0.05] [--eval-episodes 10]

The same script trains on any bundled environment, e.g. the README's CartPole and point-mass rows:

    python examples/train_cliff_walking.py --env SafeCartPole-v0 --steps 50000 --exploration induced --alpha 0.2
    python examples/train_cliff_walking.py --env SafePointMass-v0 --steps 20000 --exploration induced --net-arch 64 64
"""

import argparse

import gymnasium as gym
import numpy as np
import torch as th

import sb3_safeq  # noqa: F401  (registers the safe environments)
from sb3_safeq import SafeSupportQ
from sb3_safeq.common.evaluation import evaluate_safe_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeCliffWalking-v0", help="a bundled safe environment id")
    parser.add_argument("--steps", type=int, default=20_000, help="training environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--exploration", default="behavior", choices=["behavior", "induced", "mixture"])
    parser.add_argument("--alpha", type=float, default=0.05, help="KL temperature")
    parser.add_argument("--net-arch", type=int, nargs="+", default=None, help="hidden layers (default: the policy's)")
    parser.add_argument("--n-behavior-samples", type=int, default=16, help="Box actions: draws from beta per state")
    parser.add_argument("--extraction", default="forward_kl", choices=["forward_kl", "reverse_kl"])
    args = parser.parse_args()

    # Small networks run fastest on one thread; several threads only contend on a 2-core machine.
    th.set_num_threads(1)
    model = SafeSupportQ(
        "MlpPolicy",
        args.env,
        seed=args.seed,
        alpha=args.alpha,
        exploration=args.exploration,
        n_behavior_samples=args.n_behavior_samples,
        extraction=args.extraction,
        policy_kwargs=None if args.net_arch is None else {"net_arch": args.net_arch},
        verbose=0,
    )
    model.learn(args.steps, progress_bar=True)
    counters = model.safety_counters

    evaluation = evaluate_safe_policy(model, gym.make(args.env), n_eval_episodes=args.eval_episodes)
    rng = np.random.default_rng(args.seed)

    def behavior_predict(
        observations: np.ndarray,
        action_masks: np.ndarray | None = None,
        safe_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        **_: object,
    ) -> tuple[np.ndarray, None]:
        # The behavior policy alone: uniform over the safe actions, or in the safe box.
        if safe_bounds is not None:
            low, high = safe_bounds
            return rng.uniform(low, high).astype(np.float32), None
        assert action_masks is not None
        return np.array([rng.choice(np.flatnonzero(mask)) for mask in action_masks]), None

    behavior = evaluate_safe_policy(
        None, gym.make(args.env), n_eval_episodes=args.eval_episodes, predict_fn=behavior_predict
    )

    print(f"environment:                      {args.env}")
    print(f"training steps:                   {counters.steps}")
    print(f"training unsafe visits:           {counters.unsafe_visits}")
    print(f"training out-of-support actions:  {counters.out_of_support_actions}")
    print(f"final return (deterministic):     {evaluation.mean_return:.2f} +/- {evaluation.std_return:.2f}")
    print(f"evaluation unsafe visits:         {evaluation.unsafe_visits}")
    print(f"behavior policy return:           {behavior.mean_return:.2f} +/- {behavior.std_return:.2f}")


if __name__ == "__main__":
    main()
