"""
The guarantee as a property over random set-ups: for random supports (masks with any safe subset; boxes with
degenerate axes), numbers of environments, exploration modes, episode lengths, terminations or truncations and empty
terminal supports, nothing outside the support is executed (the environments raise on it), and every stored support
is the one of its observation or next observation (the observations encode their supports, read back here without
the package).
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.safeq.arguments import EXPLORATION_MODES, EXTRACTIONS
from tests.helpers import KINDS, TINY, decode_supports, random_env, to_agent_units
from tests.polytope_toy_envs import rows_contain


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    n_envs=st.integers(1, 3),
    exploration=st.sampled_from(EXPLORATION_MODES),
    episode_length=st.integers(2, 9),
    terminate=st.booleans(),
    empty_terminal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_nothing_outside_the_support_is_executed_or_stored(
    kind: str, n_envs: int, exploration: str, episode_length: int, terminate: bool, empty_terminal: bool, seed: int
) -> None:
    # Without termination the time limit truncates; only a terminated state may have no safe action.
    terminal_support = "empty" if empty_terminal and terminate else "random"

    def make() -> Any:
        env = random_env(kind, episode_length=episode_length, terminate=terminate, terminal_support=terminal_support)
        return SafetyWrapper(TimeLimit(env, max_episode_steps=episode_length))

    vec_env = DummyVecEnv([make for _ in range(n_envs)])
    model = SafeSupportQ("MlpPolicy", vec_env, exploration=exploration, learning_starts=20, seed=seed, **TINY)
    model.learn(60 * n_envs)
    counters = model.safety_counters
    assert counters.steps == 60 * n_envs
    assert counters.unsafe_visits == 0 and counters.out_of_support_actions == 0

    buffer = model.replay_buffer
    n = buffer.size()
    space = model.action_space
    observations = buffer.observations[:n].reshape(n * n_envs, -1)
    next_observations = buffer.next_observations[:n].reshape(n * n_envs, -1)
    stored = buffer.supports[:n].reshape(n * n_envs, *buffer.supports.shape[2:])
    stored_next = buffer.next_supports[:n].reshape(n * n_envs, *buffer.supports.shape[2:])
    np.testing.assert_array_equal(stored, to_agent_units(space, decode_supports(kind, observations)))
    np.testing.assert_array_equal(stored_next, to_agent_units(space, decode_supports(kind, next_observations)))


def _decoded_agent_supports(kind: str, space: Any, observations: th.Tensor) -> np.ndarray:
    """:return: the supports the observations encode, in agent units (read without the package)"""
    return to_agent_units(space, decode_supports(kind, observations.detach().cpu().numpy()))


@settings(max_examples=10, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    extraction=st.sampled_from(EXTRACTIONS),
    share_target_draws=st.booleans(),
    empty_terminal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_nothing_outside_the_support_is_bootstrapped_from(
    kind: str, extraction: str, share_target_draws: bool, empty_terminal: bool, seed: int
) -> None:
    # Every Q-value the losses use is of an action inside the support of its own state: boxes, every (observation,
    # action) row the critics are evaluated on (the target's draws at s', the extraction's draws or samples at s);
    # masks, the losses do not change when the Q-values of unsafe actions are made huge.
    def make() -> Any:
        return SafetyWrapper(
            random_env(kind, episode_length=5, terminal_support="empty" if empty_terminal else "random")
        )

    box_only = {"share_target_draws": share_target_draws} if kind in ("box", "polytope") else {}
    model = SafeSupportQ(
        "MlpPolicy", DummyVecEnv([make, make]), extraction=extraction, learning_starts=20, seed=seed, **TINY, **box_only
    )
    model.learn(60)
    space, policy = model.action_space, model.policy
    data = model.replay_buffer.sample(32)
    alpha = model.current_alpha()

    if kind in ("box", "polytope"):
        # Every Q evaluation goes through the q-networks on rows [features(s), a]; the flat observation's features
        # are the observation itself (SB3's FlattenExtractor), so each row says which box its action must be in.
        evaluated: list[th.Tensor] = []
        hooks = [
            critic.q_networks[0].register_forward_pre_hook(lambda _, inputs: evaluated.append(inputs[0]))
            for critic in (policy.critic, policy.critic_target)
        ]
        model.support_kind.losses(model, data, alpha, update_actor=True)
        if extraction == "reverse_kl":
            model.support_kind.actor_loss_after_critic_step(model, data, alpha)
        for hook in hooks:
            hook.remove()
        assert len(evaluated) >= 2
        action_dim = space.shape[0]
        for rows in evaluated:
            observations, actions = rows[:, :-action_dim], rows[:, -action_dim:]
            boxes = _decoded_agent_supports(kind, space, observations)
            actions = actions.detach().cpu().numpy()
            if kind == "polytope":
                # A terminal s' may have an empty polytope (its stored radius < 0): any action does there.
                live = boxes[:, -1, -1] >= 0
                assert live.any() and rows_contain(boxes[live, :-1], actions[live]).all()
                continue
            low, high = boxes[:, 0], boxes[:, 1]
            # A terminal s' may have an empty box: any action does there, its value is multiplied by 1 - done = 0.
            live = (low <= high).all(axis=1)
            assert live.any()
            assert ((actions[live] >= low[live] - 1e-6) & (actions[live] <= high[live] + 1e-6)).all()
        return

    def unsafe_made_huge(_: Any, inputs: tuple[th.Tensor, ...], q_values: th.Tensor) -> th.Tensor:
        masks = th.as_tensor(_decoded_agent_supports(kind, space, inputs[0]))
        return q_values + 1e4 * (~masks).float()

    plain = model.support_kind.losses(model, data, alpha, update_actor=True)
    hooks = [critic.register_forward_hook(unsafe_made_huge) for critic in (policy.critic, policy.critic_target)]
    perturbed = model.support_kind.losses(model, data, alpha, update_actor=True)
    for hook in hooks:
        hook.remove()
    critic_loss, _, actor_terms = plain
    assert actor_terms is not None and perturbed[2] is not None
    assert th.equal(critic_loss, perturbed[0])
    assert th.equal(actor_terms[0], perturbed[2][0])
