"""
The estimated behavior of ``Box`` actions: a Gaussian-mixture density network cloned from the logged (observation,
action) pairs, truncated to each state's box (see :mod:`.estimated` for what that does and does not promise).

The mixture lives in the agent's ``[-1, 1]`` units (where the replay buffer stores actions); :meth:`sample` and
:meth:`log_prob` speak the environment's units like every Box behavior.
"""

import math

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.box import (
    BoxBehaviorPolicy,
    UniformBoxBehavior,
    log_ndtr_difference,
    truncated_standard_normal,
)
from sb3_safeq.common.behaviors.estimated import (
    DEFAULT_NET_ARCH,
    BehaviorNetwork,
    EstimatedBehavior,
    check_beta,
    check_fraction,
)
from sb3_safeq.common.supports.box_utils import POINT_WIDTH, BoxScaler, check_boxes, clamp_into, full_boxes, inside_mask

#: What ``support_tail`` means, in the words of its error message.
TAIL_MEANING = "the probability mass of the cloned behavior left outside each state's estimated box (both tails)"
#: Range of the components' log standard deviations, agent units: wide enough for a uniform logging policy over
#: ``[-1, 1]``, narrow enough for a near-deterministic controller.
_LOG_STD_RANGE = (-5.0, 1.0)
#: How far outside ``[-1, 1]`` a component's mean may sit (a mode at the edge of the box needs a mean beyond it).
_MEAN_RANGE = 1.5
#: Bisection steps of the quantiles of the estimated box (2^-40 of the action space's width).
_BISECTION_STEPS = 40


def log_interval_mass(lower: th.Tensor, upper: th.Tensor) -> th.Tensor:
    """
    :param lower: standardised lower bounds
    :param upper: standardised upper bounds, ``>= lower``
    :return: ``log(Phi(upper) - Phi(lower))``, the interval mirrored to the left of 0 where it lies right of it (the
        left tail of ``Phi`` keeps its relative precision)
    """
    flip = lower > 0
    return log_ndtr_difference(th.where(flip, -upper, lower), th.where(flip, -lower, upper))


class EstimatedBoxBehavior(EstimatedBehavior, BoxBehaviorPolicy):
    """
    ``beta`` cloned from a dataset of ``Box`` actions: a mixture of ``n_components`` diagonal Gaussians per state,
    truncated to the state's box.

    With stored boxes, the mixture is truncated to the stored box (in cloning, sampling and scoring), so every draw
    stays inside it. Without them, the estimated support of a state is the box whose axes cover the central
    ``1 - support_tail`` of the cloned behavior's marginal mass (truncated to the action space), and ``beta`` is the
    mixture truncated to that box. That box is an estimate of where the logging policy acted, **not a guarantee**:
    the logging policy's true safe box may be narrower on some side (a smooth mixture cannot follow a box whose
    edges jump from one state to the next).

    :param observation_space: the model's observation space
    :param scaler: the map between environment and agent action units
    :param action_dim: the number of action axes
    :param device: where the network lives
    :param support_tail: in ``(0, 1)``: the cloned mass left outside each estimated box (without stored boxes)
    :param beta: ``"cloned"`` (``beta`` is the mixture truncated to the box) or ``"uniform"`` (uniform in the box: the
        clone then only gives the estimated box)
    :param n_components: the number of mixture components (>= 1)
    :param net_arch: the hidden layers of the network
    :param learning_rate: Adam's learning rate for behavior cloning
    :param batch_size: transitions per behavior-cloning step
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        scaler: BoxScaler,
        action_dim: int,
        device: th.device,
        support_tail: float = 0.05,
        beta: str = "cloned",
        n_components: int = 5,
        net_arch: list[int] | None = None,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
    ) -> None:
        self.support_tail = check_fraction("support_tail", support_tail, TAIL_MEANING)
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components={n_components!r} (behavior_kwargs) must be an integer >= 1, e.g. 5.")
        self.beta = check_beta(beta)
        self.uniform = UniformBoxBehavior()
        self.scaler = scaler
        self.action_dim = action_dim
        self.n_components = n_components
        hidden = list(DEFAULT_NET_ARCH) if net_arch is None else list(net_arch)
        outputs = n_components * (1 + 2 * action_dim)
        super().__init__(BehaviorNetwork(observation_space, outputs, hidden), learning_rate, batch_size, device)

    # ------------------------------------------------------------------ the mixture, agent units

    def mixture(self, observations: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :param observations: batch of observations
        :return: log-weights ``(batch, K)``, means and standard deviations ``(batch, K, action_dim)``, agent units
        """
        outputs = self.network(observations)
        batch, k, dim = outputs.shape[0], self.n_components, self.action_dim
        log_weights = th.log_softmax(outputs[:, :k], dim=-1)
        means = _MEAN_RANGE * th.tanh(outputs[:, k : k + k * dim]).reshape(batch, k, dim)
        low, high = _LOG_STD_RANGE
        log_stds = low + (high - low) * (th.tanh(outputs[:, k + k * dim :]) + 1.0) / 2.0
        return log_weights, means, log_stds.reshape(batch, k, dim).exp()

    @staticmethod
    def _component_log_masses(
        boxes: th.Tensor, means: th.Tensor, stds: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :param boxes: agent boxes ``(batch, 2, d)``
        :param means: ``(batch, K, d)``
        :param stds: ``(batch, K, d)``
        :return: the log-mass of each component in the box ``(batch, K)``, per axis ``(batch, K, d)``, and which axes
            carry density ``(batch, d)`` (a point axis, ``low == high``, carries none)
        """
        volume = (boxes[:, 1] - boxes[:, 0]) > POINT_WIDTH
        lower = (boxes[:, 0].unsqueeze(1) - means) / stds
        upper = (boxes[:, 1].unsqueeze(1) - means) / stds
        per_axis = th.where(volume.unsqueeze(1), log_interval_mass(lower, upper), th.zeros_like(lower))
        return per_axis.sum(dim=-1), per_axis, volume

    def agent_log_density(self, observations: PyTorchObs, boxes: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :param observations: batch of observations
        :param boxes: agent boxes ``(batch, 2, d)``, non-empty
        :param actions: agent actions ``(batch, n, d)``
        :return: the log-density of the truncated mixture ``(batch, n)`` in agent units, ``-inf`` outside the box
        """
        log_weights, means, stds = self.mixture(observations)
        log_masses, _, volume = self._component_log_masses(boxes, means, stds)
        standard = (actions.unsqueeze(2) - means.unsqueeze(1)) / stds.unsqueeze(1)  # (batch, n, K, d)
        log_pdf = -0.5 * standard**2 - 0.5 * math.log(2.0 * math.pi) - stds.log().unsqueeze(1)
        log_pdf = th.where(volume[:, None, None], log_pdf, th.zeros_like(log_pdf)).sum(dim=-1)
        log_numerator = th.logsumexp(log_weights.unsqueeze(1) + log_pdf, dim=-1)
        log_normaliser = th.logsumexp(log_weights + log_masses, dim=-1)
        log_density = log_numerator - log_normaliser.unsqueeze(1)
        return log_density.masked_fill(~inside_mask(actions, boxes), -th.inf)

    def agent_sample(self, observations: PyTorchObs, boxes: th.Tensor, n_samples: int) -> th.Tensor:
        """
        :param observations: batch of observations
        :param boxes: agent boxes ``(batch, 2, d)``, non-empty
        :param n_samples: draws per observation
        :return: draws of the truncated mixture, agent units ``(batch, n_samples, d)``, inside the boxes
        """
        log_weights, means, stds = self.mixture(observations)
        log_masses, _, _ = self._component_log_masses(boxes, means, stds)
        # The truncated mixture is a mixture of truncated components, weighted by the mass each keeps in the box.
        components = th.distributions.Categorical(logits=log_weights + log_masses).sample((n_samples,)).T
        index = components.unsqueeze(-1).expand(-1, -1, self.action_dim)
        mean, std = means.gather(1, index).double(), stds.gather(1, index).double()  # (batch, n, d)
        lower = (boxes[:, 0].unsqueeze(1).double() - mean) / std
        upper = (boxes[:, 1].unsqueeze(1).double() - mean) / std
        flip = lower > 0  # sample on the left of 0, where the tail of Phi is precise
        sign = th.where(flip, -1.0, 1.0).to(lower.dtype)
        uniform = th.rand(lower.shape, dtype=th.float64, device=lower.device)
        standard = truncated_standard_normal(th.where(flip, -upper, lower), th.where(flip, -lower, upper), uniform)
        return clamp_into((mean + sign * standard * std).to(boxes.dtype), boxes)

    def quantile_boxes(self, observations: PyTorchObs) -> th.Tensor:
        """
        :param observations: batch of observations
        :return: per state, the box covering the central ``1 - support_tail`` of each axis' marginal of the mixture
            truncated to the action space, agent units ``(batch, 2, d)``
        """
        log_weights, means, stds = self.mixture(observations)
        means, stds = means.double(), stds.double()
        whole = full_boxes(means.shape[0], self.action_dim, means.device).double()
        log_masses, per_axis, _ = self._component_log_masses(whole, means, stds)
        weights = th.softmax(log_weights.double() + log_masses, dim=-1).unsqueeze(-1)  # (batch, K, 1)
        lower = (-1.0 - means) / stds

        def cdf(points: th.Tensor) -> th.Tensor:  # (batch, d) -> the marginal cdf of each axis at the points
            upper = th.maximum((points.unsqueeze(1) - means) / stds, lower)
            return (weights * (log_interval_mass(lower, upper) - per_axis).exp()).sum(dim=1)

        bounds = []
        for target in (self.support_tail / 2.0, 1.0 - self.support_tail / 2.0):
            low = -th.ones_like(means[:, 0])
            high = th.ones_like(means[:, 0])
            for _ in range(_BISECTION_STEPS):
                middle = (low + high) / 2.0
                below = cdf(middle) < target
                low, high = th.where(below, middle, low), th.where(below, high, middle)
            bounds.append((low + high) / 2.0)
        return th.stack(bounds, dim=1).clamp(-1.0, 1.0).float()

    # ------------------------------------------------------------------ the behavior protocol, environment units

    def sample(self, observations: PyTorchObs, support: th.Tensor, n_samples: int = 1) -> th.Tensor:
        self.check_fitted()
        if self.beta == "uniform":
            return self.uniform.sample(observations, support, n_samples)
        check_boxes(support)
        boxes = self.scaler.to_agent_tensor(support.float())
        samples = self.scaler.to_env_tensor(self.agent_sample(observations, boxes, n_samples))
        return clamp_into(samples.to(support.dtype), support)

    def log_prob(self, observations: PyTorchObs, support: th.Tensor, actions: th.Tensor) -> th.Tensor:
        self.check_fitted()
        if self.beta == "uniform":
            return self.uniform.log_prob(observations, support, actions)
        scaler = self.scaler
        boxes = scaler.to_agent_tensor(support.float())
        inside = inside_mask(actions, support)
        agent_actions = clamp_into(scaler.to_agent_tensor(actions.float()), boxes)
        log_density = self.agent_log_density(observations, boxes, agent_actions)
        # Change of variables to environment units, over the axes that carry density.
        volume = (boxes[:, 1] - boxes[:, 0]) > POINT_WIDTH
        log_half_width = scaler.log_half_width_tensor(log_density.device)
        log_density = log_density - (volume * log_half_width).sum(dim=-1, keepdim=True)
        return log_density.to(actions.dtype).masked_fill(~inside, -th.inf)

    # ------------------------------------------------------------------ behavior cloning

    def cloning_loss(self, observations: PyTorchObs, actions: th.Tensor, supports: th.Tensor | None) -> th.Tensor:
        # Without stored boxes the mixture is truncated to the action space, where every logged action lies.
        boxes = full_boxes(actions.shape[0], self.action_dim, actions.device) if supports is None else supports
        agent_actions = clamp_into(actions.float(), boxes).unsqueeze(1)
        return -self.agent_log_density(observations, boxes, agent_actions).mean()

    def estimate_supports(self, observations: PyTorchObs, supports: th.Tensor | None) -> th.Tensor:
        if supports is not None:
            return supports
        return self.quantile_boxes(observations)

    def supports_for(self, observations: PyTorchObs) -> np.ndarray:
        self.check_fitted()
        with th.no_grad():
            return self.scaler.to_env(self.quantile_boxes(observations).cpu().numpy())

    def support_size(self, supports: th.Tensor) -> th.Tensor:
        return ((supports[:, 1] - supports[:, 0]) / 2.0).prod(dim=-1).mean()

    def __repr__(self) -> str:
        return (
            f"EstimatedBoxBehavior(support_tail={self.support_tail}, beta={self.beta!r}, "
            f"n_components={self.n_components})"
        )
