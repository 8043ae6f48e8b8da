"""
What SAC's critic estimates on the double integrator, against what the benchmark scores it with.

The benchmark scores SAC's first critic against the complete hard returns of its deterministic policy. SAC's critic
estimates the soft value of its *stochastic* policy, rewards plus the entropy bonus ``-ent_coef * log pi`` of every
later state. This trains SAC as the benchmark does (``hyperparams/sac.yml``'s entry, with ``tau`` and the budget
given here) and scores the same critic both ways, on states whose return misses at most 5% of its tail.

    python benchmarks/studies/di_tau_10k/sac_own_target.py --tau 0.005 --steps 10000 --seed 0
"""

import argparse

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_safeq.bench.algorithms import get_algo, load_hyperparams
from sb3_safeq.bench.calibration import complete_horizon, discounted_returns
from sb3_safeq.bench.runner import COMPLETE_TAIL_TOLERANCE, make_env

ENV_ID = "SafeDoubleIntegrator-v0"


def score(model: SAC, seed: int, stochastic: bool, episodes: int) -> dict[str, float]:
    """
    :return: the normalised bias of the first critic against the hard and the soft (entropy-bonus) returns
    """
    horizon = complete_horizon(gym.spec(ENV_ID).max_episode_steps, model.gamma, COMPLETE_TAIL_TOLERANCE)
    env, _ = make_env(ENV_ID, seed + 50_000, False, max_episode_steps=horizon)
    ent_coef = float(th.exp(model.log_ent_coef.detach()))
    q_hat, hard, soft, steps = [], [], [], []
    for _ in range(episodes):
        observations, done, rewards, log_probs = env.reset(), False, [], []
        while not done:
            obs_tensor, _ = model.policy.obs_to_tensor(observations)
            with th.no_grad():
                if stochastic:
                    actions, log_prob = model.actor.action_log_prob(obs_tensor)
                else:
                    actions, log_prob = model.actor(obs_tensor, deterministic=True), th.zeros(1)
                q_hat.append(float(model.critic(obs_tensor, actions)[0][0, 0]))
            log_probs.append(float(log_prob[0]))
            steps.append(len(rewards))
            observations, step_rewards, dones, _ = env.step(model.policy.unscale_action(actions.cpu().numpy()))
            rewards.append(float(step_rewards[0]))
            done = bool(dones[0])
        later = np.append(np.asarray(log_probs[1:]), 0.0)
        hard.extend(discounted_returns(rewards, model.gamma))
        soft.extend(discounted_returns((np.asarray(rewards) - ent_coef * model.gamma * later).tolist(), model.gamma))
    complete = model.gamma ** (horizon - np.asarray(steps, float)) <= COMPLETE_TAIL_TOLERANCE
    q_array = np.asarray(q_hat)[complete]
    result = {"ent_coef": ent_coef, "states": float(complete.sum())}
    for name, returns in (("hard", np.asarray(hard)[complete]), ("soft", np.asarray(soft)[complete])):
        result[name] = float((q_array - returns).mean() / np.abs(returns).mean())
    return result


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
    for stochastic in (False, True):
        result = score(model, args.seed, stochastic, args.episodes)
        print(
            f"tau={args.tau} steps={args.steps} seed={args.seed} ent_coef={result['ent_coef']:.4f} "
            f"{'stochastic' if stochastic else 'deterministic'} policy, {result['states']:.0f} states: "
            f"normalised bias against hard returns {result['hard']:+.3f}, against soft returns {result['soft']:+.3f}"
        )


if __name__ == "__main__":
    main()
