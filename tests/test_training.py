"""
What ``train()`` does with a batch, for both kinds: the target network follows Polyak updates every
``target_update_interval`` steps, the extraction head waits ``actor_update_interval`` steps, the temperature follows
its schedule, the logger gets the training and safety keys; and for Box actions, the head fitted on the target's own
draws (``share_target_draws``) follows the target critic at the next states.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_safeq import SafeSupportQ
from sb3_safeq.common.buffers import SafeReplayBufferSamples
from tests.helpers import KINDS, SMALL, TINY, LinearQ, random_env


@pytest.mark.parametrize("kind", KINDS)
def test_target_network_follows_polyak_updates(kind: str) -> None:
    model = SafeSupportQ("MlpPolicy", random_env(kind), tau=0.25, target_update_interval=2, seed=0, **SMALL)
    model.learn(60)
    online_before = [p.detach().clone() for p in model.critic.parameters()]
    target_before = [p.detach().clone() for p in model.critic_target.parameters()]
    model._n_updates = 0
    model.train(gradient_steps=1, batch_size=8)  # update 1: no target update (interval 2)
    for target, before in zip(model.critic_target.parameters(), target_before, strict=True):
        assert th.equal(target, before)
    online_mid = [p.detach().clone() for p in model.critic.parameters()]
    model._n_updates = 1
    model.train(gradient_steps=1, batch_size=8)  # update 2: target <- 0.75 target + 0.25 online
    for target, before, online in zip(
        model.critic_target.parameters(), target_before, model.critic.parameters(), strict=True
    ):
        th.testing.assert_close(target, 0.75 * before + 0.25 * online.detach())
    assert not all(th.equal(a, b) for a, b in zip(online_before, online_mid, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_actor_update_interval_delays_the_extraction_head(kind: str) -> None:
    model = SafeSupportQ("MlpPolicy", random_env(kind), actor_update_interval=3, seed=0, **SMALL)
    model.learn(60)
    model._n_updates = 0
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    model.train(gradient_steps=2, batch_size=8)  # updates 1 and 2: critic only
    assert all(th.equal(p, b) for p, b in zip(model.actor.parameters(), actor_before, strict=True))
    assert not all(th.equal(p, b) for p, b in zip(model.critic.parameters(), critic_before, strict=True))
    model.train(gradient_steps=1, batch_size=8)  # update 3: the head too
    assert not all(th.equal(p, b) for p, b in zip(model.actor.parameters(), actor_before, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_schedule_is_followed(kind: str) -> None:
    model = SafeSupportQ("MlpPolicy", random_env(kind), alpha=lambda progress: 0.01 + progress, seed=0, **SMALL)
    model.learn(200)
    assert model.current_alpha() == pytest.approx(0.01 + model._current_progress_remaining)
    # A schedule that reaches 0 is refused at construction, where it is checked over its range...
    with pytest.raises(ValueError, match=r"alpha schedule gives 0\.0 at remaining progress 1\.0"):
        SafeSupportQ("MlpPolicy", random_env(kind), alpha=lambda progress: progress - 1.0, seed=0, **SMALL)
    # ...and whatever it gives later in training is checked again at each use.
    model.alpha_schedule = lambda progress: progress - 1.0
    with pytest.raises(ValueError, match="alpha schedule returned"):
        model.learn(200)


# The statistic each kind logs after an update of the extraction head (default forward-KL extraction).
ACTOR_STATISTIC = {
    "mask": "train/actor_kl",
    "box": "train/behavior_weights_ess",
    "polytope": "train/behavior_weights_ess",
}


@pytest.mark.parametrize("kind", KINDS)
def test_logger_keys_and_progress_bar(tmp_path: Path, kind: str) -> None:
    model = SafeSupportQ("MlpPolicy", TimeLimit(random_env(kind, terminate=False), 10), seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(300, log_interval=1, progress_bar=True)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train/critic_loss",
        "train/actor_loss",
        ACTOR_STATISTIC[kind],
        "train/alpha",
        "train/q_values",
        "safety/unsafe_visits",
        "safety/cumulative_cost",
        "safety/out_of_support_actions",
        "safety/empty_support_states",
        "safety/shielded_actions",
    ):
        assert key in header


@pytest.mark.parametrize("share", [False, True])
def test_shared_target_draws_fit_the_head_to_the_target_at_next_states(share: bool, monkeypatch: Any) -> None:
    # The online critic prefers the bottom of the box, the target the top: the head follows the one it is given.
    import sb3_safeq.common.supports.box as box_module

    env = random_env("box", action_low=(-3.0,), action_high=(5.0,))
    model = SafeSupportQ("MlpPolicy", env, gamma=1.0, learning_starts=10**6, seed=0, **TINY)
    model.share_target_draws = share
    model.critic.q_networks = [LinearQ(-4.0), LinearQ(-4.0)]
    model.critic_target.q_networks = [LinearQ(4.0), LinearQ(4.0)]
    passes = []
    counted = box_module.q_values_of_samples
    monkeypatch.setattr(box_module, "q_values_of_samples", lambda *args: passes.append(1) or counted(*args))
    n = 64
    full = th.tensor([[-1.0], [1.0]]).expand(n, 2, 1)
    data = SafeReplayBufferSamples(
        observations=th.zeros(n, 3),
        actions=th.zeros(n, 1),
        next_observations=th.ones(n, 3),
        dones=th.zeros(n, 1),
        rewards=th.zeros(n, 1),
        supports=full,
        next_supports=full,
    )
    optimizer = th.optim.Adam(model.actor.parameters(), lr=1e-2)
    th.manual_seed(0)
    for _ in range(150):
        _, _, actor_terms = model.support_kind.losses(model, data, 0.25, True)
        assert actor_terms is not None
        optimizer.zero_grad()
        actor_terms[0].backward()
        optimizer.step()
    # One pass of the twin critics over batch x N draws per gradient step instead of two.
    assert len(passes) == 150 * (1 if share else 2)
    trained_at = data.next_observations if share else data.observations
    with th.no_grad():
        action = model.actor.action(trained_at[:1], full[:1], deterministic=True).item()
    assert (action > 0.5) if share else (action < -0.5), action
    # Terminal next states carry no action to learn: with every transition terminal, the shared loss is 0.
    terminal = data._replace(dones=th.ones(n, 1))
    _, _, (loss, _) = model.support_kind.losses(model, terminal, 0.25, True)
    assert (loss.item() == 0.0) if share else (loss.item() != 0.0)


class DropoutExtractor(BaseFeaturesExtractor):
    """A features extractor whose output depends on train/eval mode."""

    def __init__(self, observation_space: Any) -> None:
        super().__init__(observation_space, features_dim=int(np.prod(observation_space.shape)))
        self.flatten, self.dropout = nn.Flatten(), nn.Dropout(0.5)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.dropout(self.flatten(observations))


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_eval_modes_are_switched_when_a_layer_depends_on_them(kind: str) -> None:
    # Plain MLPs compute the same in both modes: only the policy's flag follows (SB3's recursive switch, twice per
    # step at train_freq=1, is skipped). With a dropout layer the networks are switched, as SB3 does.
    plain = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **SMALL)
    dropout_kwargs = {**SMALL["policy_kwargs"], "features_extractor_class": DropoutExtractor}
    with_dropout = SafeSupportQ("MlpPolicy", random_env(kind), seed=0, **{**SMALL, "policy_kwargs": dropout_kwargs})
    assert not plain.policy._training_mode_matters and with_dropout.policy._training_mode_matters
    for mode in (False, True, False):
        for model in (plain, with_dropout):
            model.policy.set_training_mode(mode)
            assert model.policy.training == mode
        networks = (with_dropout.critic, with_dropout.actor)  # the target critic stays in eval mode
        dropouts = [module for network in networks for module in network.modules() if isinstance(module, nn.Dropout)]
        assert dropouts and all(dropout.training == mode for dropout in dropouts)
    with_dropout.learn(80)  # collects in eval mode, trains in train mode, without error
