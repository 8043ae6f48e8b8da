"""
What every kind of safe support implements, so that the algorithm, the wrapper, the replay buffer, evaluation and
the benchmark handle masks, boxes (and any later kind) through the same calls, never asking which kind they have.

*Raw* supports are what the environment gives (in its own action units), *agent* supports what the networks and the
replay buffer use (actions scaled as the agent stores them).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_safeq.common.behaviors.base import BehaviorPolicy, import_behavior
from sb3_safeq.common.supports.errors import EmptySupportError, MissingSupportError

#: ``info`` key holding the ground-truth safety cost of a step (> 0 means an unsafe step).
COST_INFO_KEY = "cost"


class SoftQLearner(Protocol):
    """What a support kind reads from the algorithm to compute its losses and its induced policy."""

    policy: Any
    behavior_policy: BehaviorPolicy
    gamma: float
    extraction: str
    n_behavior_samples: int
    twin_min: bool
    share_target_draws: bool

    def critic_regression_loss(self, current_q: th.Tensor, targets: th.Tensor) -> th.Tensor:
        """:return: the critic's regression loss of ``current_q`` towards ``targets`` (both ``(batch, 1)``)"""


@dataclass(frozen=True)
class InducedStep:
    """
    One action of the induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` per observation, with what calibration needs.

    :param actions: the actions in agent units, ``(batch,)`` for masks, ``(batch, action_dim)`` for boxes
    :param q_values: the critic's ``Q̂(s, a)`` of these actions as the soft target uses it, ``(batch,)``
    :param kl: ``KL(pi_Q(.|s) || beta(.|s))``, ``(batch,)``: exact where ``pi_Q`` is known in closed form (masks);
        else a self-normalised estimate over the behavior draws, ``sum_i w_i log(N w_i)`` (at most ``log N``)
    :param log_probs: ``log pi_Q`` of every action, ``(batch, n_actions)``, where the kind has the full table
        (masks); None otherwise
    """

    actions: th.Tensor
    q_values: th.Tensor
    kl: th.Tensor
    log_probs: th.Tensor | None = None


@dataclass(frozen=True)
class InducedActions:
    """
    Actions of the induced policy ``pi_Q`` (:meth:`~sb3_safeq.SafeSupportQ.induced_policy`), numpy, one row per
    observation: the public twin of :class:`InducedStep`.

    :param actions: the actions in environment units, inside the supports as given
    :param q_values: the critic's ``Q̂(s, a)`` of these actions as the soft target uses it
    :param kl: ``KL(pi_Q(.|s) || beta(.|s))``: exact for Discrete actions; for Box actions the self-normalised estimate
        over the ``n_behavior_samples`` draws (at most ``log N``)
    :param log_probs: ``log pi_Q`` of every action ``(batch, n_actions)`` for Discrete actions; None for Box actions
    """

    actions: np.ndarray
    q_values: np.ndarray
    kl: np.ndarray
    log_probs: np.ndarray | None = None


#: The critic's loss, the mean Q-value (detached) and, when the actor is updated with it, the actor's loss and the
#: statistic the kind logs.
Losses = tuple[th.Tensor, th.Tensor, tuple[th.Tensor, th.Tensor] | None]


class SupportKind(ABC):
    """
    One kind of safe support: how it is read from an environment, validated, converted, stored, tested, shielded,
    passed to ``predict``, sampled by the behavior policies, and used in the soft Bellman target, the extraction
    losses and the induced policy.

    :param action_space: the environment's action space (one the kind :meth:`accepts`)
    """

    #: the gymnasium action-space class this kind describes
    action_space_type: ClassVar[type[spaces.Space]]
    #: short name of the kind (``"mask"``, ``"box"``), e.g. for tables of per-kind policy classes
    name: ClassVar[str]
    #: environment method returning the support of the current observation
    method_name: ClassVar[str]
    #: ``info`` key where the safety wrapper writes the (raw) support of the returned observation
    info_key: ClassVar[str]
    #: keyword of ``predict`` that carries the supports of the observations
    predict_keyword: ClassVar[str]
    #: keyword of :class:`~sb3_safeq.SafetyWrapper` that gives a support function instead of the method
    wrapper_argument: ClassVar[str]
    #: base class of the behavior policies of this kind
    behavior_class: ClassVar[type[BehaviorPolicy]]
    #: whether the soft value and the induced policy are estimated from ``n_behavior_samples`` behavior draws (else
    #: they are exact and ``n_behavior_samples`` has no effect)
    samples_behavior: ClassVar[bool]
    #: SafeSupportQ's ``actor_update_interval`` when the user gives none: how many gradient steps per extraction-head
    #: update this kind's head needs
    default_actor_update_interval: ClassVar[int] = 1

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    @classmethod
    def accepts(cls, action_space: spaces.Space) -> bool:
        """:return: whether this kind describes the safe supports of such an action space"""
        return isinstance(action_space, cls.action_space_type)

    # ------------------------------------------------------------------ reading and validation

    def find_method(self, env: gym.Env) -> Callable[[], Any]:
        """
        Find the support method through the gymnasium wrappers, in the units of ``env``'s own action space.

        A wrapper between ``env`` and the layer that defines the method may change the actions (an action wrapper, or
        any wrapper with another action space): its supports would then be in the wrong units. Each such wrapper is
        passed to :meth:`support_through_action_wrapper`, which converts the supports or refuses the wrapper.

        :param env: a (possibly wrapped) gymnasium environment
        :return: a function giving the support of the current observation
        :raises MissingSupportError: if no layer defines the method
        """
        layers: list[gym.Wrapper] = []
        current: gym.Env = env
        while not callable(getattr(current, self.method_name, None)):
            if not isinstance(current, gym.Wrapper):
                raise MissingSupportError(self.missing_method_message(env))
            layers.append(current)
            current = current.env
        method: Callable[[], Any] = getattr(current, self.method_name)
        for wrapper in reversed(layers):  # from the inner-most outwards
            if isinstance(wrapper, gym.ActionWrapper) or wrapper.action_space != wrapper.env.action_space:
                method = self.support_through_action_wrapper(wrapper, method)
        return method

    def support_through_action_wrapper(self, wrapper: gym.Wrapper, method: Callable[[], Any]) -> Callable[[], Any]:
        """
        :param wrapper: a wrapper that may change the actions, above the layer giving the support
        :param method: the support function below it (in the wrapped environment's action units)
        :return: the support function in the wrapper's action units
        :raises ValueError: when the kind cannot convert supports through this wrapper (the default)
        """
        raise ValueError(
            f"{type(wrapper).__name__} changes the actions between the agent and the environment that gives "
            f"{self.method_name}(): the safe support would be read in the wrong action units. Give "
            f"{type(wrapper).__name__} (or a wrapper above it) a `{self.method_name}()` method that converts the "
            "support into its own action space, or apply it below the layer that defines the support."
        )

    @abstractmethod
    def missing_method_message(self, env: gym.Env) -> str:
        """:return: the error message for an environment without the support method, with how to add one"""

    @abstractmethod
    def validate(self, support: Any, source: str) -> np.ndarray:
        """
        The one gate of this kind: convert and check the support of one observation.

        :param support: the support as the environment (or a user) gives it
        :param source: where it came from, for error messages
        :return: the raw support as stored in ``info`` (see :meth:`storage_shape_and_dtype` for its layout)
        """

    def stack(self, supports: Sequence[Any], source: str | None = None) -> np.ndarray:
        """
        :param supports: one support per environment
        :param source: where they came from, for error messages (default: the environment method)
        :return: validated raw supports, stacked
        """
        where = f"{self.method_name}()" if source is None else source
        return np.stack([self.validate(support, where) for support in supports])

    def from_infos(self, infos: Sequence[dict[str, Any]]) -> np.ndarray:
        """
        :param infos: one info dict per environment (written by the safety wrapper)
        :return: raw supports of the returned observations, stacked
        """
        for index, info in enumerate(infos):
            if self.info_key not in info:
                raise MissingSupportError(
                    f"The info dict of environment {index} has no '{self.info_key}' entry. The support of each "
                    "returned observation must travel in `info` because a VecEnv auto-resets terminal observations: "
                    "wrap every environment with `sb3_safeq.SafetyWrapper` (e.g. "
                    "`make_vec_env(env_id, wrapper_class=SafetyWrapper)`)."
                )
        supports = [info[self.info_key] for info in infos]
        stacked = np.stack(supports)
        shape, dtype = self.storage_shape_and_dtype()
        if stacked.dtype == dtype and stacked.shape == (len(infos), *shape):
            return stacked  # validated by the safety wrapper already: the fast path of every step
        return self.stack(supports, source=f"info['{self.info_key}']")

    def env_method_result(self, support: np.ndarray) -> Any:
        """
        :param support: a raw support as stored
        :return: what the environment method returns for it (a copy)
        """
        return support.copy()

    # ------------------------------------------------------------------ units, storage and tests

    @abstractmethod
    def storage_shape_and_dtype(self) -> tuple[tuple[int, ...], type]:
        """:return: shape and dtype of the support of one observation (raw and agent units share them)"""

    @abstractmethod
    def to_agent(self, raw_supports: np.ndarray) -> np.ndarray:
        """:return: the supports in agent units (what the replay buffer stores)"""

    def actions_to_agent(self, actions: np.ndarray) -> np.ndarray:
        """:return: environment actions in agent units (what the replay buffer stores)"""
        return actions

    def actions_to_env(self, actions: th.Tensor) -> np.ndarray:
        """:return: agent-unit actions (tensor) in environment units (numpy)"""
        return actions.cpu().numpy()

    def clip_actions(self, actions: np.ndarray, raw_supports: np.ndarray) -> np.ndarray:
        """
        :param actions: environment actions already inside their supports up to unit rounding
        :param raw_supports: their supports
        :return: the actions exactly inside (rounding of the unit conversions made harmless)
        """
        return actions

    @abstractmethod
    def empty(self, supports: np.ndarray) -> np.ndarray:
        """:return: boolean per state: True where the support (raw or agent units) has no safe action"""

    @abstractmethod
    def empty_message(self, where: str) -> str:
        """:return: the error message for a state (described by ``where``) whose support is empty"""

    def check_not_empty(self, supports: np.ndarray, where: str) -> None:
        """
        :param supports: stacked supports
        :param where: description of the states, e.g. "The current state of environment {index}"
        :raises EmptySupportError: naming the first state without safe action
        """
        empty = self.empty(supports)
        if empty.any():
            raise EmptySupportError(self.empty_message(where.format(index=int(np.flatnonzero(empty)[0]))))

    @abstractmethod
    def contains(self, action: Any, support: np.ndarray) -> bool:
        """
        :param action: one environment action (as given to ``env.step``)
        :param support: its raw support
        :return: whether the action lies in the support (False for NaN or malformed actions)
        """

    @abstractmethod
    def shield(self, action: Any, support: np.ndarray, rng: np.random.Generator) -> Any:
        """
        :param action: an environment action outside the (non-empty) support
        :param support: its raw support
        :param rng: the environment's random generator
        :return: a safe action to take instead
        """

    # ------------------------------------------------------------------ predict

    @abstractmethod
    def predict_supports(self, supports: Any, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
        """
        :param supports: what a user passed to ``predict(..., <predict_keyword>=...)``
        :param n_obs: the number of observations
        :return: the raw supports and the agent supports, one per observation
        """

    @abstractmethod
    def predict_argument(self, raw_supports: np.ndarray) -> Any:
        """:return: the value of ``predict``'s keyword for these stacked raw supports"""

    def pick_predict_argument(self, **arguments: Any) -> Any:
        """
        :param arguments: the support keywords given to ``predict`` (``action_masks=``, ``safe_bounds=``, ...)
        :return: the value of this kind's keyword (None when not given)
        :raises ValueError: when another kind's keyword is given
        """
        for keyword, value in arguments.items():
            if keyword != self.predict_keyword and value is not None:
                raise ValueError(
                    f"{keyword} does not apply to the action space {self.action_space!r}: pass the safe support of "
                    f"each observation as {self.predict_keyword}=."
                )
        return arguments.get(self.predict_keyword)

    def current_predict_kwargs(self, env: Any) -> dict[str, Any]:
        """
        :param env: a VecEnv whose sub-environments expose their safe support
        :return: ``{predict_keyword: supports of the current observations}``, ready for ``model.predict``
        """
        return {self.predict_keyword: self.predict_argument(self.stack(env.env_method(self.method_name)))}

    # ------------------------------------------------------------------ behavior policies

    @abstractmethod
    def uniform_behavior(self) -> BehaviorPolicy:
        """:return: the default behavior: uniform over each state's support"""

    @abstractmethod
    def sample_uniform(self, raw_supports: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """
        Draw from the uniform behavior with a given numpy generator (reproducible evaluation of the behavior).

        :param raw_supports: non-empty raw supports, stacked
        :param rng: the generator
        :return: one environment action per support
        """

    @abstractmethod
    def behavior_from_function(self, function: Callable[..., Any]) -> BehaviorPolicy:
        """:return: the behavior policy a user function defines (see the kind's documentation for its signature)"""

    def make_estimated_behavior(
        self, observation_space: spaces.Space, device: th.device, **behavior_kwargs: Any
    ) -> BehaviorPolicy:
        """
        Build the behavior of ``SafeSupportQ(behavior="estimated")``: a network to be fitted by behavior cloning on an
        offline dataset (:mod:`sb3_safeq.common.behaviors.estimated`).

        :param observation_space: the model's observation space
        :param device: where its network lives
        :param behavior_kwargs: the kind's options (``SafeSupportQ(behavior_kwargs=...)``)
        :return: the unfitted estimated behavior
        :raises ValueError: for kinds that offer none (the default)
        """
        raise ValueError(
            f'behavior="estimated" is not offered for the action space {self.action_space!r} yet: it is offered for '
            "Discrete actions (action masks) and Box actions (safe boxes). Give the behavior that logged the data, "
            "and store the supports in the dataset."
        )

    def make_behavior(self, behavior: str | BehaviorPolicy | Callable[..., Any]) -> BehaviorPolicy:
        """
        Build the behavior policy named by ``SafeSupportQ(behavior=...)``.

        :param behavior: ``"uniform"``, a :class:`BehaviorPolicy` of this kind, a function (see
            :meth:`behavior_from_function`), or the import path ``"package.module:name"`` of one of these (a
            :class:`BehaviorPolicy` subclass is instantiated without arguments): the form that hyperparameter files
            (rl-zoo3) and saved models can carry
        :return: the behavior policy
        """
        if isinstance(behavior, BehaviorPolicy):
            if not isinstance(behavior, self.behavior_class):
                raise TypeError(
                    f"The behavior policy {behavior!r} does not fit the action space {self.action_space!r}: use a "
                    f"{self.behavior_class.__name__} subclass."
                )
            return behavior
        if isinstance(behavior, str):
            if behavior == "uniform":
                return self.uniform_behavior()
            if behavior == "estimated":
                raise ValueError(
                    'behavior="estimated" is cloned from an offline dataset by SafeSupportQ(behavior="estimated")'
                    ".learn_offline: it cannot act before that, nor collect data. Give a behavior that is known to be "
                    "supported on the safe set ('uniform', a BehaviorPolicy, a function or its import path)."
                )
            if ":" in behavior:
                return self.make_behavior(import_behavior(behavior))
            raise ValueError(
                f"Unknown behavior policy {behavior!r}: use 'uniform' (uniform over the safe actions), 'estimated' "
                "(SafeSupportQ offline only: cloned from the dataset by learn_offline), a BehaviorPolicy instance, "
                "a function (for Discrete actions (observations, masks) -> probabilities, for Box actions "
                "(observations, low, high) -> torch distribution), or the import path of one of these as "
                "'package.module:name'."
            )
        if callable(behavior):
            return self.behavior_from_function(behavior)
        raise TypeError(f"behavior must be 'uniform', a BehaviorPolicy or a callable, got {type(behavior).__name__}.")

    # ------------------------------------------------------------------ learning

    @abstractmethod
    def actor_stat_name(self, extraction: str) -> str:
        """:return: the name of the statistic logged as ``train/<name>`` after each extraction update"""

    @abstractmethod
    def losses(self, learner: SoftQLearner, data: Any, alpha: float, update_actor: bool) -> Losses:
        """
        The critic's loss towards the soft Bellman target ``r + gamma (1 - terminated) V(s')`` with
        ``V(s') = alpha log E_beta exp(Q_target(s', .) / alpha)``, and the extraction head's loss when it is updated
        and does not need the updated critic.

        :param learner: the algorithm (its policy, behavior policy and settings)
        :param data: a replay-buffer batch with supports in agent units
        :param alpha: the temperature
        :param update_actor: whether the extraction head is updated in this gradient step
        :return: see :data:`Losses`; the actor's terms are None when it is not updated or when its loss needs the
            critic after its step (see :meth:`actor_loss_after_critic_step`)
        """

    def actor_loss_after_critic_step(
        self, learner: SoftQLearner, data: Any, alpha: float
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        The extraction head's loss when it differentiates through the critic (after the critic's step, as SAC does).
        Only called when :meth:`losses` returned no actor terms for an actor update.

        :return: the actor's loss and its statistic
        """
        raise NotImplementedError(f"{type(self).__name__} computes the extraction loss in losses().")

    @abstractmethod
    def critic_values(self, policy: Any, observations: PyTorchObs, actions: np.ndarray) -> th.Tensor:
        """
        :param policy: the algorithm's policy
        :param observations: a batch of observations (tensors)
        :param actions: one environment action per observation (numpy)
        :return: the first critic's ``Q̂(s, a)``, ``(batch,)``
        """

    @abstractmethod
    def induced_step(
        self,
        learner: SoftQLearner,
        observations: PyTorchObs,
        supports: th.Tensor,
        alpha: float,
        deterministic: bool,
    ) -> InducedStep:
        """
        Act with the induced policy ``pi_Q ∝ beta * exp(Q / alpha)`` (same support as ``beta``).

        :param learner: the algorithm
        :param observations: a batch of observations (tensors, as the replay buffer stores them)
        :param supports: their non-empty supports in agent units (tensor)
        :param alpha: the temperature
        :param deterministic: take the mode instead of sampling
        :return: the actions in agent units, their Q-values and the KL to ``beta``
        """
