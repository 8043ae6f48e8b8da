"""Learning tests: SafeSupportQ must learn the right thing, without a single unsafe visit."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_safeq import SafeSupportQ
from sb3_safeq.common.evaluation import evaluate_safe_policy
from sb3_safeq.common.tabular import masked_uniform_behavior, reachable_states, soft_value_iteration
from tests.toy_envs import LotteryEnv, RandomMaskEnv

CLIFF = "SafeCliffWalking-v0"
OPTIMAL_SAFE_RETURN = -13.0  # up, 11 x right, down
STEP_BUDGET = 20_000


class StopWhenOptimal(BaseCallback):
    """Evaluate the deterministic extracted policy every ``check_freq`` steps; stop once it is optimal."""

    def __init__(self, check_freq: int = 500) -> None:
        super().__init__()
        self.check_freq = check_freq
        self.solved_at: int | None = None

    def _on_step(self) -> bool:
        if self.n_calls % self.check_freq:
            return True
        result = evaluate_safe_policy(self.model, gym.make(CLIFF), n_eval_episodes=1, deterministic=True)
        if result.mean_return == OPTIMAL_SAFE_RETURN:
            self.solved_at = self.num_timesteps
            return False
        return True


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_cliff_walking_optimal_without_unsafe_visits(seed: int) -> None:
    callback = StopWhenOptimal()
    model = SafeSupportQ("MlpPolicy", CLIFF, seed=seed)
    model.learn(STEP_BUDGET, callback=callback)
    print(f"seed {seed}: optimal after {callback.solved_at} steps")
    assert model.safety_counters.unsafe_visits == 0
    assert model.safety_counters.out_of_support_actions == 0
    assert callback.solved_at is not None, f"not optimal within {STEP_BUDGET} steps"
    # The deployed policy with the safety masks is optimal and safe; the unmasked head must be too.
    for use_masks in (True, False):
        result = evaluate_safe_policy(model, gym.make(CLIFF), n_eval_episodes=2, use_masks=use_masks)
        assert result.mean_return == OPTIMAL_SAFE_RETURN and result.unsafe_visits == 0


@pytest.mark.slow
def test_learned_q_matches_soft_value_iteration() -> None:
    # alpha = 1 makes the soft values differ clearly from the hard ones, so a wrong backup cannot pass.
    alpha, gamma, tolerance = 1.0, 0.99, 0.3
    env = gym.make(CLIFF)
    unwrapped = env.unwrapped
    table = unwrapped.safe_action_table
    q_star, _ = soft_value_iteration(unwrapped.P, masked_uniform_behavior(table), gamma, alpha)
    q_hard, _ = soft_value_iteration(unwrapped.P, masked_uniform_behavior(table), gamma, 0.0)
    n_states, n_actions = table.shape

    model = SafeSupportQ("MlpPolicy", env, alpha=alpha, gamma=gamma, seed=0)
    model.learn(10_000)

    start = int(np.flatnonzero(unwrapped.initial_state_distrib)[0])
    reachable = reachable_states(unwrapped.P, n_states, n_actions, [start], table)
    states = np.flatnonzero(reachable & table.any(axis=1) & (np.arange(n_states) != n_states - 1))  # goal excluded
    with th.no_grad():
        q_hat = model.critic(th.as_tensor(states)).numpy()
    safe = table[states]
    error = np.abs(q_hat - q_star[states])[safe]
    print(f"|Q_hat - Q*_alpha|: max {error.max():.4f}, mean {error.mean():.4f} over {safe.sum()} safe pairs")
    assert error.max() < tolerance
    assert np.abs(q_hard[states] - q_star[states])[safe].max() > 10 * tolerance  # the test can tell them apart


POINT_MASS = "SafePointMass-v0"
# The uniform-in-box behavior policy scores about -98 on the point mass (it wanders and pays the time penalty); a
# policy that heads for the goal through the gap scores about +16 to +21. A broken critic or extraction cannot clear
# the behavior's return by this much.
POINT_MASS_MARGIN = 60.0


@pytest.mark.slow
@pytest.mark.parametrize("seed, share_target_draws", [(0, False), (1, False), (0, True)])
def test_point_mass_beats_behavior_without_unsafe_visits(seed: int, share_target_draws: bool) -> None:
    model = SafeSupportQ(
        "MlpPolicy",
        POINT_MASS,
        seed=seed,
        share_target_draws=share_target_draws,
        exploration="induced",
        n_behavior_samples=4,
        learning_starts=500,
        policy_kwargs={"net_arch": [32, 32]},
    )
    model.learn(2500)
    assert model.safety_counters.unsafe_visits == 0
    assert model.safety_counters.out_of_support_actions == 0
    learned = evaluate_safe_policy(model, gym.make(POINT_MASS), n_eval_episodes=5)
    rng = np.random.default_rng(seed)

    def uniform_in_box(observations, safe_bounds, **_):
        return rng.uniform(*safe_bounds).astype(np.float32), None

    behavior = evaluate_safe_policy(None, gym.make(POINT_MASS), n_eval_episodes=5, predict_fn=uniform_in_box)
    assert learned.unsafe_visits == 0 and behavior.unsafe_visits == 0
    assert learned.mean_return >= behavior.mean_return + POINT_MASS_MARGIN, (learned.mean_return, behavior.mean_return)


@pytest.mark.slow
def test_extraction_head_learns_the_support() -> None:
    # After training, the *unmasked* head must put almost no mass outside the mask: it matched pi_Q, which has none.
    model = SafeSupportQ(
        "MlpPolicy",
        RandomMaskEnv(),
        seed=0,
        learning_starts=200,
        batch_size=64,
        policy_kwargs={"net_arch": [64, 64]},
        learning_rate=3e-3,
    )
    model.learn(3000)
    env = RandomMaskEnv()
    obs, _ = env.reset(seed=5)
    leaks = []
    for _ in range(200):
        logits = model.actor(th.as_tensor(obs[None]))
        probs = th.softmax(logits, -1)[0].detach().numpy()
        leaks.append(probs[~env.action_masks()].sum())
        obs, _, terminated, _, _ = env.step(int(np.flatnonzero(env.action_masks())[0]))
        if terminated:
            obs, _ = env.reset()
    assert np.mean(leaks) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("loss", [None, "huber"])
def test_critic_estimates_the_expected_target_not_its_median(loss: str | None) -> None:
    # The soft target is an expectation: the default MSE regresses to the mean 10 of the sampled targets
    # {0 (90%), 100 (10%)}; a Huber loss drifts toward their median 0, which is why it is not the default.
    kwargs = {} if loss is None else {"loss": loss}
    model = SafeSupportQ("MlpPolicy", LotteryEnv(), learning_starts=100, learning_rate=3e-3, seed=0, **kwargs)
    model.learn(3000)
    with th.no_grad():
        q_values = model.critic(th.zeros(1, 1)).numpy()[0]
    if loss is None:
        assert model.loss == "mse"
        np.testing.assert_allclose(q_values, 10.0, atol=2.5)
    else:
        assert np.all(q_values < 5.0)
