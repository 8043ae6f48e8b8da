"""
Bringing your own control barrier function: a point that moves with the velocity it is given, a disc it must never
enter, and the CBF condition as one linear constraint on the action, so SafeSupportQ learns inside it.

    python examples/cbf_single_integrator.py [--steps 5000] [--seed 0]

The environment (the lines between the markers) is the whole integration: a ``ConstrainedBox`` action space and a
``safe_action_constraints()`` method returning ``(A, b)`` with ``A a <= b``. For ``x' = x + dt a`` and the barrier
``h(x) = |x - c|^2 - r^2``, ``h(x') = h(x) + 2 dt (x - c).a + dt^2 |a|^2 >= h(x) + 2 dt (x - c).a``, so the row
``-2 dt (x - c).a <= gamma h(x)`` (``0 < gamma <= 1``) keeps ``h(x') >= (1 - gamma) h(x) >= 0``: never inside the disc.
"""

import argparse

import gymnasium as gym
import numpy as np
import torch as th

from sb3_safeq import ConstrainedBox, SafeSupportQ
from sb3_safeq.common.evaluation import evaluate_safe_policy

# --- the user's environment with its CBF --------------------------------------------------------------------------


class DiscAvoidingPoint(gym.Env):
    centre, radius, goal, dt, gamma = np.array([0.0, 0.0]), 0.5, np.array([1.5, 0.0]), 0.1, 0.5

    def __init__(self) -> None:
        self.action_space = ConstrainedBox(-1.0, 1.0, shape=(2,), max_constraints=1)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        offset = self.x - self.centre
        barrier = offset @ offset - self.radius**2
        return (-2.0 * self.dt * offset)[None, :], np.array([self.gamma * barrier])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.t = np.array([-1.5, self.np_random.uniform(-0.05, 0.05)]), 0
        return self.x.astype(np.float32), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x, self.t = np.clip(self.x + self.dt * np.asarray(action, np.float64), -10, 10), self.t + 1
        inside = np.linalg.norm(self.x - self.centre) < self.radius  # ground truth: never consults the CBF
        reward = -float(np.linalg.norm(self.x - self.goal))
        return self.x.astype(np.float32), reward, False, self.t >= 60, {"cost": float(inside)}


# ------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="training environment steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)

    model = SafeSupportQ(
        "MlpPolicy", DiscAvoidingPoint(), learning_starts=500, exploration="mixture", tau=0.02, seed=args.seed
    )
    model.learn(args.steps, progress_bar=False)
    result = evaluate_safe_policy(model, DiscAvoidingPoint(), n_eval_episodes=5, deterministic=True)
    counters = model.safety_counters
    print(f"training: {counters.steps} steps, {counters.unsafe_visits} unsafe visits")
    print(f"deployment: return {np.mean(result.episode_returns):.2f}, {result.unsafe_visits} unsafe visits")


if __name__ == "__main__":
    main()
