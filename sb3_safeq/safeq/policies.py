"""Policies of SafeSupportQ for discrete actions: a Q-network, its target, and the categorical extraction head."""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from sb3_safeq.common.supports.mask import MaskSupport
from sb3_safeq.safeq.training_mode import behaves_the_same_in_both_modes


class CategoricalActor(BasePolicy):
    """
    The extraction head: a categorical policy over discrete actions, trained to match the induced policy ``pi_Q``.

    Its logits are defined for every action; the safe mask is applied when acting. Training matches the full
    softmax to ``pi_Q``, which has no mass outside the support, so the head also learns to avoid unsafe actions
    when no mask is available at deployment (the benchmark measures how well: "support leakage").

    :param observation_space: observation space
    :param action_space: action space
    :param features_extractor: network extracting features from observations
    :param features_dim: number of features
    :param net_arch: sizes of the hidden layers
    :param activation_fn: activation function
    :param normalize_images: whether to divide images by 255
    """

    action_space: spaces.Discrete

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.logits_net = nn.Sequential(*create_mlp(features_dim, int(action_space.n), net_arch, activation_fn))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: observations
        :return: unmasked logits, shape ``(batch, n_actions)``
        """
        return self.logits_net(self.extract_features(obs, self.features_extractor))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return select_action(self(observation), deterministic)

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


def select_action(logits: th.Tensor, deterministic: bool) -> th.Tensor:
    """
    :param logits: (masked) logits, shape ``(batch, n_actions)``
    :param deterministic: take the mode instead of sampling
    :return: actions, shape ``(batch,)``
    """
    if deterministic:
        return logits.argmax(dim=-1)
    return th.distributions.Categorical(logits=logits).sample()


def apply_mask(logits: th.Tensor, masks: th.Tensor) -> th.Tensor:
    """
    :param logits: logits, shape ``(batch, n_actions)``
    :param masks: boolean safe-action masks of the same shape
    :return: logits with ``-inf`` outside the masks
    """
    return logits.masked_fill(~masks, -th.inf)


def split_net_arch(net_arch: list[int] | dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """
    :param net_arch: one list of hidden layers for both networks, or ``dict(qf=[...], pi=[...])``
    :return: hidden layers of the critic and of the extraction actor
    """
    if isinstance(net_arch, dict):
        if set(net_arch) != {"qf", "pi"}:
            raise ValueError(f"net_arch as a dict needs exactly the keys 'qf' and 'pi', got {sorted(net_arch)}.")
        return list(net_arch["qf"]), list(net_arch["pi"])
    return list(net_arch), list(net_arch)


def optimizer_kwargs_with_defaults(
    optimizer_class: type[th.optim.Optimizer], optimizer_kwargs: dict[str, Any], device: th.device
) -> dict[str, Any]:
    """
    Use torch's fused Adam implementation unless the user chose one: with networks this small the optimizer's
    per-tensor overhead is a large part of a gradient step, and the fused kernel cuts it by 2-3x on CPU.

    :param optimizer_class: the optimizer class
    :param optimizer_kwargs: the user's keyword arguments
    :param device: the device of the parameters
    :return: the keyword arguments to build the optimizer with
    """
    kwargs = dict(optimizer_kwargs)
    fusable = optimizer_class in (th.optim.Adam, th.optim.AdamW) and device.type in ("cpu", "cuda")
    if fusable and "fused" not in kwargs and "foreach" not in kwargs:
        kwargs["fused"] = True
    return kwargs


def critic_and_actor_optimizer(
    policy: BasePolicy, critic: nn.Module, actor: nn.Module, lr: float
) -> th.optim.Optimizer:
    """
    One optimizer and one parameter group for both networks, the critic's parameters first: a single (fused) step
    per gradient step, and a single pass over the group (two groups cost a second pass and a second fused call per
    step, about 2% of a gradient step on small networks). Every optimizer torch ships updates each parameter from its
    own gradient and state alone, so this is the arithmetic of one optimizer per network; a parameter whose gradient
    is None is not stepped (the extraction head when ``actor_update_interval`` skips it), exactly as if it had its
    own optimizer.

    :param policy: the policy (its ``optimizer_class``, ``optimizer_kwargs`` and device)
    :param critic: the critic (its target is not optimised)
    :param actor: the extraction head
    :param lr: the initial learning rate of both
    :return: the optimizer
    """
    kwargs = optimizer_kwargs_with_defaults(policy.optimizer_class, policy.optimizer_kwargs, policy.device)
    parameters = [*critic.parameters(), *actor.parameters()]
    return policy.optimizer_class(parameters, lr=lr, **kwargs)  # type: ignore[call-arg]


def merged_parameter_groups(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """
    The state of an optimizer saved with one parameter group per network (sb3-safeq's models before 2026-12-08), as the
    single group :func:`critic_and_actor_optimizer` builds: the parameters' indices and their state are the same, in
    the same order.

    :param optimizer_state: an optimizer's ``state_dict()``
    :return: the same state with one parameter group
    :raises ValueError: if the groups' settings differ (they cannot be one group)
    """
    groups = optimizer_state["param_groups"]
    if len(groups) <= 1:
        return optimizer_state
    settings = [{key: value for key, value in group.items() if key != "params"} for group in groups]
    if any(setting != settings[0] for setting in settings[1:]):
        raise ValueError(
            "The saved optimizer has parameter groups with different settings, which one optimizer group cannot "
            f"hold: {settings}. Give every group of the saved state the same settings, or load the networks without "
            "the optimizer state: `model.set_parameters({'policy': params['policy']}, exact_match=False)`."
        )
    merged = {**settings[0], "params": [index for group in groups for index in group["params"]]}
    return {**optimizer_state, "param_groups": [merged]}


def observation_batch(policy: BasePolicy, observation: Any) -> tuple[PyTorchObs, bool, int]:
    """
    Convert ``predict``'s observation to a tensor batch, refusing the ``(obs, info)`` tuple a bare ``reset()`` gives.

    :param policy: the policy (its ``obs_to_tensor`` does the conversion)
    :param observation: the observation passed to ``predict``
    :return: the tensor batch, whether the input was already batched, and the batch size
    """
    if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
        raise ValueError(
            "predict() got a tuple (obs, info): pass only the observation, e.g. `obs, info = env.reset(); "
            "model.predict(obs)`."
        )
    obs_tensor, vectorized_env = policy.obs_to_tensor(observation)
    tensors = list(obs_tensor.values()) if isinstance(obs_tensor, dict) else [obs_tensor]
    if any(tensor.is_floating_point() and not bool(th.isfinite(tensor).all()) for tensor in tensors):
        # A NaN observation gives NaN Q-values and actions that no clipping into the support can repair.
        raise ValueError(
            "predict() got an observation with NaN or infinite entries: no action can be chosen from it. Check the "
            "sensors or the observation pipeline (e.g. VecNormalize statistics) before acting."
        )
    return obs_tensor, vectorized_env, tensors[0].shape[0]


class SafeSupportQPolicy(BasePolicy):
    """
    Policy of SafeSupportQ for ``Discrete`` actions: Q-network, target Q-network and a categorical extraction head,
    each with its own features extractor.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param net_arch: hidden layers, either one list for both networks or ``dict(qf=[...], pi=[...])``
    :param activation_fn: activation function
    :param features_extractor_class: features extractor to use
    :param features_extractor_kwargs: keyword arguments for the features extractor
    :param normalize_images: whether to divide images by 255
    :param optimizer_class: optimizer of both networks
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate. Adam and AdamW use
        torch's fused implementation unless ``fused`` or ``foreach`` is given.
    """

    action_space: spaces.Discrete
    q_net: QNetwork
    q_net_target: QNetwork
    actor: CategoricalActor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [] if features_extractor_class == NatureCNN else [64, 64]
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.qf_arch, self.pi_arch = split_net_arch(net_arch)
        self.support_kind = MaskSupport(action_space)
        self._build(lr_schedule)

    def _net_args(self, net_arch: list[int]) -> dict[str, Any]:
        # A fresh features extractor for every network: the critic and the actor are trained separately.
        args = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": net_arch,
            "activation_fn": self.activation_fn,
            "normalize_images": self.normalize_images,
        }
        return self._update_features_extractor(args, features_extractor=None)

    def _build(self, lr_schedule: Schedule) -> None:
        self.q_net = QNetwork(**self._net_args(self.qf_arch)).to(self.device)
        self.q_net_target = QNetwork(**self._net_args(self.qf_arch)).to(self.device)
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.actor = CategoricalActor(**self._net_args(self.pi_arch)).to(self.device)
        self.optimizer = critic_and_actor_optimizer(self, self.q_net, self.actor, lr_schedule(1))
        self._training_mode_matters = not behaves_the_same_in_both_modes(self, (CategoricalActor,))

    @property
    def critic(self) -> QNetwork:
        """The Q-network, ``Q(s, .)`` of every action (the name every support kind's critic has)."""
        return self.q_net

    @property
    def critic_target(self) -> QNetwork:
        """The target Q-network."""
        return self.q_net_target

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def action_logits(self, observation: PyTorchObs, action_masks: th.Tensor | None = None) -> th.Tensor:
        """
        Logits of the extracted (deployable) policy.

        :param observation: observations (tensor batch)
        :param action_masks: boolean safe-action masks; where given, logits outside them are ``-inf`` (zero
            probability)
        :return: logits, shape ``(batch, n_actions)``
        """
        logits = self.actor(observation)
        return logits if action_masks is None else apply_mask(logits, action_masks)

    def _predict(
        self, observation: PyTorchObs, deterministic: bool = False, action_masks: th.Tensor | None = None
    ) -> th.Tensor:
        return select_action(self.action_logits(observation, action_masks), deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the extracted policy's action.

        :param observation: the input observation (single or vectorised)
        :param state: unused (no recurrent policies), returned as is
        :param episode_start: unused
        :param deterministic: take the most likely safe action instead of sampling
        :param action_masks: safe-action masks; with them no action outside the masks is ever returned. Without
            them the unmasked extraction head acts (it was trained to put no mass outside the support).
        :return: the actions and the (unchanged) state
        """
        self.set_training_mode(False)
        obs_tensor, vectorized_env, n_obs = observation_batch(self, observation)
        masks = None
        if action_masks is not None:
            masks = th.as_tensor(self.support_kind.predict_supports(action_masks, n_obs)[1], device=self.device)
        with th.no_grad():
            actions = self._predict(obs_tensor, deterministic=deterministic, action_masks=masks)
        actions_np = actions.cpu().numpy().reshape(-1)  # one index per observation (Discrete actions)
        if not vectorized_env:
            actions_np = actions_np.squeeze(axis=0)
        return actions_np, state

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
            }
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        """
        :param mode: train mode (True) or eval mode (False) of the Q-network and the head; only the policy's own flag
            changes when none of their layers behaves differently in the two modes (see
            :mod:`~sb3_safeq.safeq.training_mode`)
        """
        if self._training_mode_matters:
            self.q_net.set_training_mode(mode)
            self.actor.set_training_mode(mode)
        self.training = mode


MlpPolicy = SafeSupportQPolicy


class CnnPolicy(SafeSupportQPolicy):
    """
    :class:`SafeSupportQPolicy` with a ``NatureCNN`` features extractor, for image observations.
    Same parameters as :class:`SafeSupportQPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
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
        )


class MultiInputPolicy(SafeSupportQPolicy):
    """
    :class:`SafeSupportQPolicy` with a ``CombinedExtractor``, for Dict observations.
    Same parameters as :class:`SafeSupportQPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
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
        )
