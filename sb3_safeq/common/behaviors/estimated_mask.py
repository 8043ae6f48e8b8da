"""
The estimated behavior of ``Discrete`` actions: a categorical network cloned from the logged (observation, action)
pairs, whose likely actions form the estimated mask (see :mod:`.estimated` for what that does and does not promise).
"""

import math

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs
from torch.nn import functional as F

from sb3_safeq.common.behaviors.estimated import (
    DEFAULT_NET_ARCH,
    BehaviorNetwork,
    EstimatedBehavior,
    check_beta,
    check_fraction,
)
from sb3_safeq.common.behaviors.mask import DiscreteBehaviorPolicy

#: What ``support_threshold`` means, in the words of its error message.
THRESHOLD_MEANING = (
    "the smallest probability the logging policy must have given an action in a state for that action to count as "
    "safe there"
)


class EstimatedDiscreteBehavior(EstimatedBehavior, DiscreteBehaviorPolicy):
    """
    ``beta`` cloned from a dataset of ``Discrete`` actions.

    The network gives cloned probabilities ``p(a|s)`` (restricted to the stored mask when there is one). The
    *estimated mask* of a state holds the actions with ``p(a|s) >= support_threshold``, and always the most likely one,
    so it is never empty; ``beta`` is ``p`` renormalised on it. With a uniform logging policy over ``k`` safe actions,
    each has ``p ≈ 1 / k``: any threshold below ``1 / n_actions`` recovers the whole safe set of the visited states,
    while actions the data never took in a state (or took rarely) stay out.

    :param observation_space: the model's observation space
    :param n_actions: the number of actions
    :param device: where the network lives
    :param support_threshold: in ``(0, 1)``: the smallest cloned probability of an action for it to count as safe
    :param beta: ``"cloned"`` (``beta`` is the cloned probabilities renormalised on the estimated mask) or
        ``"uniform"`` (uniform on it: the clone then only gives the support; the better choice when the logging
        policy was uniform over its safe actions, whose empirical frequencies in rarely visited states are noise that
        ``alpha log beta`` would otherwise feed into the policy)
    :param net_arch: the hidden layers of the network
    :param learning_rate: Adam's learning rate for behavior cloning
    :param batch_size: transitions per behavior-cloning step
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        n_actions: int,
        device: th.device,
        support_threshold: float = 0.05,
        beta: str = "cloned",
        net_arch: list[int] | None = None,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
    ) -> None:
        self.support_threshold = check_fraction("support_threshold", support_threshold, THRESHOLD_MEANING)
        self.beta = check_beta(beta)
        self.n_actions = n_actions
        hidden = list(DEFAULT_NET_ARCH) if net_arch is None else list(net_arch)
        super().__init__(BehaviorNetwork(observation_space, n_actions, hidden), learning_rate, batch_size, device)

    def cloned_log_probs(self, observations: PyTorchObs, masks: th.Tensor | None) -> th.Tensor:
        """
        :param observations: batch of observations
        :param masks: stored masks ``(batch, n_actions)`` (rows with a safe action), or None
        :return: the cloned log-probabilities ``(batch, n_actions)``, ``-inf`` outside the masks
        """
        logits = self.network(observations)
        if masks is not None:
            logits = logits.masked_fill(~masks, -th.inf)
        return F.log_softmax(logits, dim=-1)

    def estimated_masks(self, log_probs: th.Tensor) -> th.Tensor:
        """
        :param log_probs: cloned log-probabilities ``(batch, n_actions)``
        :return: the actions at or above the threshold, and the most likely one (never empty)
        """
        likely = log_probs >= math.log(self.support_threshold)
        most_likely = F.one_hot(log_probs.argmax(dim=-1), self.n_actions).bool()
        return likely | most_likely

    def log_probs(self, observations: PyTorchObs, masks: th.Tensor) -> th.Tensor:
        self.check_fitted()
        # A row without safe action (a terminal next state may have one) comes out all -inf, as for the other
        # behaviors: it is never bootstrapped from.
        empty = ~masks.any(dim=-1, keepdim=True)
        usable = masks | empty
        cloned = self.cloned_log_probs(observations, usable)
        keep = self.estimated_masks(cloned) & usable
        scores = th.zeros_like(cloned) if self.beta == "uniform" else cloned
        return F.log_softmax(scores.masked_fill(~keep, -th.inf), dim=-1).masked_fill(empty, -th.inf)

    def cloning_loss(self, observations: PyTorchObs, actions: th.Tensor, supports: th.Tensor | None) -> th.Tensor:
        # Logged actions lie inside their stored masks (validated), so masking the logits cannot make a target -inf.
        log_probs = self.cloned_log_probs(observations, supports)
        return -log_probs.gather(1, actions.long().reshape(-1, 1)).mean()

    def estimate_supports(self, observations: PyTorchObs, supports: th.Tensor | None) -> th.Tensor:
        if supports is not None:
            return supports
        return self.estimated_masks(self.cloned_log_probs(observations, None))

    def supports_for(self, observations: PyTorchObs) -> np.ndarray:
        self.check_fitted()
        with th.no_grad():
            return self.estimate_supports(observations, None).cpu().numpy()

    def support_size(self, supports: th.Tensor) -> th.Tensor:
        return supports.float().sum(dim=-1).mean()

    def __repr__(self) -> str:
        return f"EstimatedDiscreteBehavior(support_threshold={self.support_threshold}, beta={self.beta!r})"
