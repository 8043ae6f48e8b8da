"""
What SAC's critic estimates on the double integrator, against what the benchmark scores it with.

The benchmark scores SAC's first critic against the complete hard returns of its deterministic policy. SAC's critic
estimates the soft value of its *stochastic* policy, rewards plus the entropy bonus ``-ent_coef * log pi`` of every
later state. This trains SAC as the benchmark does (``hyperparams/sac.yml``'s entry, with ``tau`` and the budget
given here) and scores the same critic both ways, on states whose return misses at most 5% of its tail.

    python benchmarks/studies/di_tau_10k/sac_own_target.py --tau 0.005 --steps 10000 --seed 0
"""

import argparse
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_safeq.bench.algorithms import get_algo, load_hyperparams
from sb3_safeq.bench.calibration import calibration_statistics, complete_horizon, rollout_pairs
from sb3_safeq.bench.runner import COMPLETE_TAIL_TOLERANCE, make_env

ENV_ID = "SafeDoubleIntegrator-v0"


def score(model: SAC, seed: int, stochastic: bool, episodes: int) -> float:
    """
    The harness's complete-return calibration of SAC's first critic: against the hard returns of its deterministic
    policy, or against the soft returns of its stochastic policy, whose entropy bonus ``-ent_coef * log pi`` enters
    where SafeSupportQ's ``-alpha * KL`` does.

    :return: the normalised bias
    """
    horizon = complete_horizon(gym.spec(ENV_ID).max_episode_steps, model.gamma, COMPLETE_TAIL_TOLERANCE)
    env, _ = make_env(ENV_ID, seed + 50_000, False, max_episode_steps=horizon)

    def act(observations: Any, _supports: dict[str, Any]) -> tuple[np.ndarray, float, float]:
        obs_tensor, _ = model.policy.obs_to_tensor(observations)
        with th.no_grad():
            if stochastic:
                actions, log_prob = model.actor.action_log_prob(obs_tensor)
            else:
                actions, log_prob = model.actor(obs_tensor, deterministic=True), th.zeros(1)
            q_value = float(model.critic(obs_tensor, actions)[0][0, 0])
        return model.policy.unscale_action(actions.cpu().numpy()), q_value, float(log_prob[0])

    entropy_weight = float(th.exp(model.log_ent_coef.detach())) if stochastic else 0.0
    pairs = rollout_pairs(env, episodes, act, model.gamma, kl_weight=entropy_weight, use_support=False)
    return calibration_statistics(*pairs, COMPLETE_TAIL_TOLERANCE, return_pairs=False)["norm_bias"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tau", type=float, default=0.005)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    th.set_num_threads(1)
    _, n_envs, kwargs = load_hyperparams(get_algo("sac"), ENV_ID)
    kwargs["tau"] = args.tau
    train_env, _ = make_env(ENV_ID, args.seed, False, n_envs)
    model = SAC(env=train_env, seed=args.seed, verbose=0, device="cpu", **kwargs)
    model.learn(args.steps)
    hard = score(model, args.seed, stochastic=False, episodes=args.episodes)
    soft = score(model, args.seed, stochastic=True, episodes=args.episodes)
    ent_coef = float(th.exp(model.log_ent_coef.detach()))
    print(
        f"tau={args.tau} steps={args.steps} seed={args.seed} ent_coef={ent_coef:.4f}: "
        f"normalised bias against the hard returns of the deterministic policy {hard:+.3f}, against the soft "
        f"returns of the stochastic policy {soft:+.3f}"
    )


if __name__ == "__main__":
    main()
