"""
The protocol of behavior policies: distributions over actions supported on each state's safe set.

Every behavior policy follows one protocol: ``sample(observations, support, n_samples)`` draws actions and
``log_prob(observations, support, actions)`` scores them, where ``support`` describes the safe actions of each
state in the layout of its support kind (:mod:`sb3_safeq.common.supports`). Both must put zero probability outside
the support: this is what makes training safe. The behaviors of each kind are in :mod:`.mask` and :mod:`.box`.
"""

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs


class BehaviorPolicy(ABC):
    """Base class of behavior policies: a distribution over actions supported on each state's safe set."""

    #: attributes holding ``torch`` state (modules, optimizers) that a saved model must carry, relative to the
    #: behavior (none for a behavior defined by a formula or a function; see :mod:`.estimated`)
    torch_save_names: tuple[str, ...] = ()

    def supports_for(self, observations: PyTorchObs) -> np.ndarray | None:
        """
        The support this behavior implies on its own, for ``predict`` called without one.

        :param observations: batch of observations (tensors)
        :return: raw supports (environment units) of the observations, or None (the default): a behavior given with
            the environment's supports implies none, only an estimated one does (:mod:`.estimated`)
        """
        return None

    def check_can_collect(self) -> None:
        """
        :raises ValueError: if this behavior cannot act in an environment (online ``learn``); the default can
        """
        return None

    @abstractmethod
    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        """
        Draw actions from the behavior policy.

        :param observations: batch of observations (as stored in the replay buffer, before preprocessing)
        :param support: safe support of each observation
        :param n_samples: number of actions to draw per observation
        :return: actions, shape ``(batch, n_samples)`` for discrete actions, ``(batch, n_samples, action_dim)`` for
            Box actions
        """

    def act(self, observations: PyTorchObs, support: np.ndarray) -> np.ndarray:
        """
        Draw one action per observation for the environment (the data-collection hot path).

        The default converts the support to a tensor and calls :meth:`sample`; subclasses may override it with a
        cheaper numpy version.

        :param observations: batch of observations, as a tensor (batched like replay-buffer samples)
        :param support: safe support of each observation, as a numpy array
        :return: actions, shape ``(batch,)``
        """
        device = next(iter(observations.values())).device if isinstance(observations, dict) else observations.device
        return self.sample(observations, th.as_tensor(support, device=device), 1)[:, 0].cpu().numpy()

    @abstractmethod
    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        Log-probability of given actions (``-inf`` outside the support).

        :param observations: batch of observations
        :param support: safe support of each observation
        :param actions: actions, shape ``(batch, n)``
        :return: log-probabilities, shape ``(batch, n)``
        """


def observations_to_numpy(observations: PyTorchObs) -> Any:
    """:return: the observations as numpy arrays (a dict of them for Dict observations)"""
    if isinstance(observations, dict):
        return {key: value.detach().cpu().numpy() for key, value in observations.items()}
    return observations.detach().cpu().numpy()


def import_behavior(path: str) -> BehaviorPolicy | Callable[..., Any]:
    """
    :param path: ``"package.module:name"`` of a :class:`BehaviorPolicy` subclass (instantiated without arguments),
        a :class:`BehaviorPolicy` instance or a behavior function
    :return: the object it names
    """
    module_name, _, attribute = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"Cannot import the behavior policy {path!r} ({error}): give 'package.module:name' of an importable "
            "BehaviorPolicy subclass, instance or function."
        ) from error
    if isinstance(target, type):
        if not issubclass(target, BehaviorPolicy):
            raise TypeError(f"{path!r} is a class but not a BehaviorPolicy subclass.")
        return target()
    return target
