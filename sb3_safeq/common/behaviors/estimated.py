"""
Behavior policies estimated from logged data (``SafeSupportQ(behavior="estimated")``): the base shared by the kinds.

Offline data may come from a logging policy nobody can write down, and may carry no supports. An estimated behavior
is a small network fitted by behavior cloning on the dataset's (observation, action) pairs
(:mod:`sb3_safeq.safeq.behavior_cloning`). Once fitted it is ``beta`` wherever ``beta`` is needed (the soft target,
``log beta`` of the reverse-KL extraction, the induced policy), and it gives each state an *estimated support*: the
actions the logging policy plausibly took there. That support is what the data show, not what is safe: it keeps the
learned policy among the actions the data took, and is **no safety guarantee beyond the data**. Where the dataset
stores supports, they stay the support and the estimate only shapes ``beta`` inside them.

Each support kind builds its own (``SupportKind.make_estimated_behavior``): :mod:`.estimated_mask` for action masks,
:mod:`.estimated_box` for boxes.
"""

import inspect
from abc import ABC, abstractmethod
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, preprocess_obs
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs

#: The hidden layers of an estimated behavior's network when ``behavior_kwargs`` gives none.
DEFAULT_NET_ARCH: tuple[int, ...] = (64, 64)


class BehaviorNotFittedError(RuntimeError):
    """An estimated behavior was used before behavior cloning fitted it to a dataset."""


class BehaviorNetwork(th.nn.Module):
    """
    An MLP on the flattened, preprocessed observations (one-hot for Discrete observations, as SB3's policies see
    them), with a ``fitted`` flag saved in its state dict so that a loaded model knows whether cloning ran.

    :param observation_space: the model's observation space (not a Dict)
    :param output_dim: the number of outputs
    :param net_arch: the hidden layer sizes
    """

    fitted: th.Tensor

    def __init__(self, observation_space: spaces.Space, output_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        if isinstance(observation_space, spaces.Dict):
            raise ValueError(
                'behavior="estimated" does not read Dict observations: flatten them (gymnasium\'s '
                "FlattenObservation) before collecting the dataset."
            )
        self.observation_space = observation_space
        self.mlp = th.nn.Sequential(*create_mlp(get_flattened_obs_dim(observation_space), output_dim, net_arch))
        self.register_buffer("fitted", th.tensor(False))

    def forward(self, observations: PyTorchObs) -> th.Tensor:
        """
        :param observations: batch of observations as the replay buffer stores them
        :return: the outputs, ``(batch, output_dim)``
        """
        features = preprocess_obs(observations, self.observation_space)
        assert isinstance(features, th.Tensor)
        return self.mlp(features.float().flatten(start_dim=1))


def check_options(behavior_class: type, options: dict[str, Any]) -> None:
    """
    :param behavior_class: an estimated behavior class
    :param options: the ``behavior_kwargs`` given for it
    :raises ValueError: for an option the class does not take, naming those it takes
    """
    parameters = list(inspect.signature(behavior_class).parameters.values())
    known = [parameter.name for parameter in parameters if parameter.default is not inspect.Parameter.empty]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"behavior_kwargs has {', '.join(unknown)}, which {behavior_class.__name__} does not take: its options are "
            f"{', '.join(known)}."
        )


#: What ``beta`` is on the estimated support: the cloned probabilities renormalised on it, or uniform on it.
BETA_CHOICES: tuple[str, ...] = ("cloned", "uniform")


def check_beta(beta: str) -> str:
    """
    :param beta: the ``beta`` option of ``behavior_kwargs``
    :return: it, when valid
    :raises ValueError: naming the choices and when to take each
    """
    if beta not in BETA_CHOICES:
        raise ValueError(
            f"beta={beta!r} is invalid: choose 'cloned' (the cloned probabilities on the estimated support, the "
            "default) or 'uniform' (uniform on the estimated support, when the logging policy was uniform over its "
            "safe actions)."
        )
    return beta


def check_fraction(name: str, value: float, meaning: str) -> float:
    """
    :param name: the keyword of ``behavior_kwargs``
    :param value: its value
    :param meaning: what it means, for the message
    :return: the value as a float
    :raises ValueError: unless ``0 < value < 1``, naming the fix
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"{name}={value!r} is invalid: it must be a number strictly between 0 and 1, {meaning}. Pass e.g. "
            f"behavior_kwargs=dict({name}=0.05)."
        )
    return float(value)


class EstimatedBehavior(ABC):
    """
    What the estimated behaviors of every kind share: the network, its optimizer, the fitted flag, and the two
    operations behavior cloning needs. Mixed into the kind's behavior base class (``DiscreteBehaviorPolicy``,
    ``BoxBehaviorPolicy``), so the support kinds use it as any other ``beta``.

    :param network: the behavior's network
    :param learning_rate: Adam's learning rate for behavior cloning
    :param batch_size: transitions per behavior-cloning step
    :param device: where the network lives
    """

    torch_save_names: tuple[str, ...] = ("network", "optimizer")

    def __init__(self, network: BehaviorNetwork, learning_rate: float, batch_size: int, device: th.device) -> None:
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"learning_rate={learning_rate!r} (behavior_kwargs) must be a number > 0, e.g. 1e-3.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} (behavior_kwargs) must be an integer >= 1, e.g. 256.")
        self.network = network.to(device)
        self.optimizer = th.optim.Adam(self.network.parameters(), lr=float(learning_rate))
        self.batch_size = batch_size
        self.device = device

    @property
    def fitted(self) -> bool:
        """:return: whether behavior cloning has fitted the network"""
        return bool(self.network.fitted)

    def mark_fitted(self) -> None:
        """Record that behavior cloning ran (saved with the model)."""
        self.network.fitted.fill_(True)

    def check_fitted(self) -> None:
        """:raises BehaviorNotFittedError: before behavior cloning, with what to do"""
        if not self.fitted:
            raise BehaviorNotFittedError(
                'The estimated behavior (behavior="estimated") is not fitted yet: it is learned from a dataset by '
                "behavior cloning. Call model.learn_offline(dataset, gradient_steps) first (behavior_cloning_steps "
                "> 0), or load a model saved after it."
            )

    def check_can_collect(self) -> None:
        raise ValueError(
            'behavior="estimated" is for offline learning only: it was cloned from a dataset, and online collection '
            "needs a behavior supported on the environment's own safe support. Train online with a model built with "
            'a known behavior (behavior="uniform", your controller), e.g. to compare with this one.'
        )

    @abstractmethod
    def cloning_loss(self, observations: PyTorchObs, actions: th.Tensor, supports: th.Tensor | None) -> th.Tensor:
        """
        The negative log-likelihood of the logged actions (the behavior-cloning loss).

        :param observations: batch of observations as the replay buffer stores them
        :param actions: the logged actions in agent units, as the replay buffer stores them ``(batch, action_dim)``
            (``action_dim`` is 1 for Discrete actions)
        :param supports: the stored supports in agent units ``(batch, *support_shape)``, or None when the dataset has
            none
        :return: the mean loss (a scalar tensor)
        """

    @abstractmethod
    def estimate_supports(self, observations: PyTorchObs, supports: th.Tensor | None) -> th.Tensor:
        """
        :param observations: batch of observations as the replay buffer stores them
        :param supports: stored supports in agent units, or None
        :return: the supports to store and train with, agent units, never empty: the stored ones when given (the
            estimate only shapes ``beta`` inside them), else the estimated ones
        """

    @abstractmethod
    def support_size(self, supports: th.Tensor) -> th.Tensor:
        """
        :param supports: supports in agent units ``(batch, *support_shape)``
        :return: their mean size, logged as ``offline/estimated_support_size`` (actions of a mask, the fraction of the
            action space's width of a box)
        """
