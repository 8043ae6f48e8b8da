"""Policies of SafeSupportQ for ``Box`` actions: twin Q(s, a) critics, their targets, and the squashed-box actor."""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_safeq.common.supports import squashed_box
from sb3_safeq.common.supports.box import BoxSupport
from sb3_safeq.common.supports.box_utils import full_boxes
from sb3_safeq.common.supports.factory import make_support_kind
from sb3_safeq.safeq.policies import critic_and_actor_optimizer, observation_batch, split_net_arch
from sb3_safeq.safeq.training_mode import behaves_the_same_in_both_modes


class SquashedBoxActor(BasePolicy):
    """
    The extraction policy for ``Box`` actions: a Gaussian over ``u`` squashed into the state's safe box
    (:mod:`sb3_safeq.common.supports.squashed_box`), so its actions never leave the box.

    :param observation_space: observation space
    :param action_space: action space
    :param features_extractor: network extracting features from observations
    :param features_dim: number of features
    :param net_arch: sizes of the hidden layers
    :param activation_fn: activation function
    :param normalize_images: whether to divide images by 255
    """

    action_space: spaces.Box

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        action_dim = get_action_dim(action_space)
        self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.mean = nn.Linear(last_dim, action_dim)
        self.log_std = nn.Linear(last_dim, action_dim)

    def forward(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: observations
        :return: mean and (clamped) log standard deviation of the pre-squash Gaussian, each ``(batch, action_dim)``
        """
        latent = self.latent_pi(self.extract_features(obs, self.features_extractor))
        log_std = self.log_std(latent).clamp(squashed_box.LOG_STD_MIN, squashed_box.LOG_STD_MAX)
        return self.mean(latent), log_std

    def action(self, obs: PyTorchObs, bounds: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """
        :param obs: observations
        :param bounds: safe boxes ``(batch, 2, action_dim)`` in agent units
        :param deterministic: return the squashed mean instead of a sample
        :return: actions in agent units, inside the boxes
        """
        mean, log_std = self(obs)
        if deterministic:
            return squashed_box.mode(mean, bounds)
        return squashed_box.rsample(mean, log_std, bounds)[0]

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        batch = next(iter(observation.values())).shape[0] if isinstance(observation, dict) else observation.shape[0]
        return self.action(
            observation, full_boxes(batch, get_action_dim(self.action_space), self.device), deterministic
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            {
                "net_arch": self.net_arch,
                "features_dim": self.features_dim,
                "activation_fn": self.activation_fn,
                "features_extractor": self.features_extractor,
            }
        )
        return data


class BoxSafeSupportQPolicy(BasePolicy):
    """
    Policy of SafeSupportQ for ``Box`` actions: ``n_critics`` Q(s, a) networks with their targets (as SAC's critic)
    and a Gaussian extraction actor squashed into each state's safe box. Critic and actor have separate features
    extractors: the critic never depends on the actor.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param net_arch: hidden layers, one list for both networks or ``dict(qf=[...], pi=[...])``
    :param activation_fn: activation function
    :param features_extractor_class: features extractor to use
    :param features_extractor_kwargs: keyword arguments for the features extractor
    :param normalize_images: whether to divide images by 255
    :param optimizer_class: optimizer of both networks
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate. Adam and AdamW use
        torch's fused implementation unless ``fused`` or ``foreach`` is given.
    :param n_critics: number of critic networks (the target takes their minimum or mean, see ``twin_min``)
    :param share_features_extractor: must stay False (accepted for SAC's ``policy_kwargs``): the critic never depends
        on the extraction head, and a shared features extractor would let the head's loss move the critic's features
    """

    action_space: spaces.Box
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    actor: SquashedBoxActor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        if share_features_extractor:
            raise ValueError(
                "share_features_extractor=True is not supported: SafeSupportQ trains the critic independently of the "
                "extraction head (the head can be retrained on a fixed critic), and a features extractor shared with "
                "the head would let the head's loss change the critic's features. Leave it False (the default)."
            )
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
            squash_output=True,
        )
        if n_critics < 1:
            raise ValueError(f"n_critics={n_critics} must be >= 1.")
        if net_arch is None:
            net_arch = [] if features_extractor_class == NatureCNN else [256, 256]
        self.net_arch = net_arch
        self.qf_arch, self.pi_arch = split_net_arch(net_arch)
        self.activation_fn = activation_fn
        self.n_critics = n_critics
        kind = make_support_kind(action_space)  # the box kind, or the polytope kind for a ConstrainedBox
        assert isinstance(kind, BoxSupport)
        self.support_kind = kind
        self.scaler = self.support_kind.scaler
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = SquashedBoxActor(**self._net_args(self.pi_arch)).to(self.device)
        self.critic = ContinuousCritic(**self._critic_args()).to(self.device)
        self.critic_target = ContinuousCritic(**self._critic_args()).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)
        self.optimizer = critic_and_actor_optimizer(self, self.critic, self.actor, lr_schedule(1))
        self._training_mode_matters = not behaves_the_same_in_both_modes(self, (SquashedBoxActor,))

    def _net_args(self, net_arch: list[int]) -> dict[str, Any]:
        args = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": net_arch,
            "activation_fn": self.activation_fn,
            "normalize_images": self.normalize_images,
        }
        return self._update_features_extractor(args, features_extractor=None)

    def _critic_args(self) -> dict[str, Any]:
        args = self._net_args(self.qf_arch)
        args.update({"n_critics": self.n_critics, "share_features_extractor": False})
        return args

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor._predict(observation, deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        safe_bounds: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
        safe_constraints: Any = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the extracted policy's action, in the environment's action units.

        :param observation: the input observation (single or vectorised)
        :param state: unused (no recurrent policies), returned as is
        :param episode_start: unused
        :param deterministic: return the squashed mean instead of a sample
        :param safe_bounds: the safe box of each observation, ``(low, high)`` in action units (e.g. from
            ``env.safe_action_bounds()``); with it no action outside the box is ever returned. Without it the
            action is squashed into the whole action space.
        :param safe_constraints: ``ConstrainedBox`` actions: the linear constraints ``(A, b)`` of each observation
            (e.g. from ``env.safe_action_constraints()``), instead of ``safe_bounds``
        :return: the actions and the (unchanged) state
        """
        self.set_training_mode(False)
        obs_tensor, vectorized_env, n_obs = observation_batch(self, observation)
        kind = self.support_kind
        supports = kind.pick_predict_argument(safe_bounds=safe_bounds, safe_constraints=safe_constraints)
        if supports is None:
            with th.no_grad():
                agent_actions = self.actor._predict(obs_tensor, deterministic).cpu().numpy()
            actions = np.clip(self.scaler.to_env(agent_actions), self.action_space.low, self.action_space.high)
        else:
            raw_supports, agent_supports = kind.predict_supports(supports, n_obs)
            with th.no_grad():
                agent_tensor = th.as_tensor(agent_supports, device=self.device)
                mean, log_std = self.actor(obs_tensor)
                if deterministic:
                    head_actions = kind.head_mode(mean, agent_tensor)
                else:
                    head_actions = kind.head_rsample(mean, log_std, agent_tensor)[0]
            actions = kind.clip_actions(self.scaler.to_env(head_actions.cpu().numpy()), raw_supports)
        actions = actions.astype(self.action_space.dtype).reshape((-1, *self.action_space.shape))
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, state

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            {
                "net_arch": self.net_arch,
                "activation_fn": self.activation_fn,
                "lr_schedule": self._dummy_schedule,
                "optimizer_class": self.optimizer_class,
                "optimizer_kwargs": self.optimizer_kwargs,
                "features_extractor_class": self.features_extractor_class,
                "features_extractor_kwargs": self.features_extractor_kwargs,
                "n_critics": self.n_critics,
            }
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        """
        :param mode: train mode (True) or eval mode (False) of the critics and the head; only the policy's own flag
            changes when none of their layers behaves differently in the two modes (see
            :mod:`~sb3_safeq.safeq.training_mode`)
        """
        if self._training_mode_matters:
            self.actor.set_training_mode(mode)
            self.critic.set_training_mode(mode)
        self.training = mode


BoxMlpPolicy = BoxSafeSupportQPolicy


class BoxCnnPolicy(BoxSafeSupportQPolicy):
    """
    :class:`BoxSafeSupportQPolicy` with a ``NatureCNN`` features extractor, for image observations.
    Same parameters as :class:`BoxSafeSupportQPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            n_critics,
            share_features_extractor,
        )


class BoxMultiInputPolicy(BoxSafeSupportQPolicy):
    """
    :class:`BoxSafeSupportQPolicy` with a ``CombinedExtractor``, for Dict observations.
    Same parameters as :class:`BoxSafeSupportQPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            n_critics,
            share_features_extractor,
        )
