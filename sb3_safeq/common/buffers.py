"""
Replay buffers that also store the safe support of each observation and of each next observation.

The target ``V(s')`` needs the support (action mask, or safe box scaled to ``[-1, 1]``) of the *next* observation,
and the extraction head needs the support of the observation itself. SB3's ``_get_samples`` draws the environment
index internally, so sampling is re-implemented here to keep the extra arrays aligned with the transitions.
"""

from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.common.supports.factory import make_support_kind


def sampled_env_indices(n_envs: int, batch_size: int) -> np.ndarray | int:
    """
    :param n_envs: the buffer's number of environments
    :param batch_size: number of transitions sampled
    :return: the environment of each sampled transition, drawn uniformly as SB3 does; with one environment the
        index 0 itself (``randint`` over a single value draws nothing from numpy's generator, so the samples are the
        same, and indexing with an integer is cheaper than with an array)
    """
    if n_envs == 1:
        return 0
    return np.random.randint(0, high=n_envs, size=(batch_size,))


class SafeReplayBufferSamples(NamedTuple):
    """A batch of transitions with the safe support of each observation and next observation."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    supports: th.Tensor
    next_supports: th.Tensor


class SafeDictReplayBufferSamples(NamedTuple):
    """Dict-observation twin of :class:`SafeReplayBufferSamples`."""

    observations: TensorDict
    actions: th.Tensor
    next_observations: TensorDict
    dones: th.Tensor
    rewards: th.Tensor
    supports: th.Tensor
    next_supports: th.Tensor


class SupportStorage:
    """
    Storage of the supports, shared by the flat and the Dict buffers (a mixin: subclass it before an SB3 buffer).

    By hand, ``add(..., infos, supports=..., next_supports=...)`` takes the supports as the environment gives them.
    SB3's ``_store_transition`` calls ``add`` without room for extra arrays, so the algorithm stages the supports of
    the next transition with :meth:`stage_supports` just before, in agent units (masks; boxes scaled to ``[-1, 1]``).
    The supports of the next observations default to the ones the safety wrapper writes into ``info`` (the terminal
    observation's at the end of an episode, before the VecEnv auto-resets), converted to agent units.
    """

    buffer_size: int
    n_envs: int
    pos: int
    device: th.device
    action_space: spaces.Space
    supports: np.ndarray
    next_supports: np.ndarray
    _staged: tuple[np.ndarray, np.ndarray | None] | None

    def _init_supports(self) -> None:
        self.support_kind: SupportKind = make_support_kind(self.action_space)
        shape, dtype = self.support_kind.storage_shape_and_dtype()
        self.supports = np.zeros((self.buffer_size, self.n_envs, *shape), dtype=dtype)
        self.next_supports = np.zeros((self.buffer_size, self.n_envs, *shape), dtype=dtype)
        self._staged = None

    def stage_supports(self, supports: np.ndarray, next_supports: np.ndarray | None = None) -> None:
        """
        Give the supports of the transitions of the next :meth:`add` call.

        :param supports: supports of the observations in agent units, shape ``(n_envs, *support_shape)``
        :param next_supports: supports of the next observations (terminal ones at episode ends); read from the
            ``info`` dicts passed to ``add`` when omitted
        """
        self._staged = (supports, next_supports)

    def _agent_supports(self, raw_supports: Any, name: str) -> np.ndarray:
        """:return: supports given by hand, one per environment in environment units, validated, in agent units"""
        shape, _ = self.support_kind.storage_shape_and_dtype()
        if isinstance(raw_supports, np.ndarray) and raw_supports.shape != (self.n_envs, *shape):
            raise ValueError(
                f"{name} has shape {raw_supports.shape}, expected ({self.n_envs}, {', '.join(map(str, shape))}): one "
                f"{self.support_kind.method_name}() result per environment (n_envs={self.n_envs}), in the "
                "environment's units."
            )
        if len(raw_supports) != self.n_envs:
            raise ValueError(
                f"{name} holds {len(raw_supports)} supports, expected one per environment ({self.n_envs})."
            )
        return self.support_kind.to_agent(self.support_kind.stack(list(raw_supports), source=name))

    def _store_supports(self, infos: list[dict[str, Any]], supports: Any = None, next_supports: Any = None) -> None:
        if supports is not None:
            staged_supports, staged_next = self._agent_supports(supports, "supports"), None
            if next_supports is not None:
                staged_next = self._agent_supports(next_supports, "next_supports")
            self._staged = (staged_supports, staged_next)
        if self._staged is None:
            raise RuntimeError(
                f"{type(self).__name__}.add() needs the supports of the current observations: pass "
                "`add(..., infos, supports=...)` (one support per environment, as the environment gives it; the "
                "next observations' supports are read from `infos` unless `next_supports=` is given)."
            )
        supports, next_supports = self._staged
        if next_supports is None:
            next_supports = self.support_kind.to_agent(self.support_kind.from_infos(infos))
        self.supports[self.pos] = supports
        self.next_supports[self.pos] = next_supports
        self._staged = None

    def _sample_supports(self, batch_inds: np.ndarray, env_indices: np.ndarray | int) -> tuple[th.Tensor, th.Tensor]:
        supports = th.as_tensor(self.supports[batch_inds, env_indices], device=self.device)
        next_supports = th.as_tensor(self.next_supports[batch_inds, env_indices], device=self.device)
        return supports, next_supports


class SafeReplayBuffer(SupportStorage, ReplayBuffer):
    """
    SB3's ``ReplayBuffer`` plus the safe support of every observation and next observation.

    Same arguments as :class:`stable_baselines3.common.buffers.ReplayBuffer`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_supports()

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        supports: Any = None,
        next_supports: Any = None,
    ) -> None:
        """
        Add one transition per environment, with the supports of its observation and next observation.

        :param obs: observations ``(n_envs, *obs_shape)``
        :param next_obs: next observations
        :param action: actions ``(n_envs, *action_shape)``, in agent units (Box: scaled to ``[-1, 1]``)
        :param reward: rewards ``(n_envs,)``
        :param done: episode ends ``(n_envs,)``
        :param infos: one info dict per environment; ``info[<support key>]`` (written by the safety wrapper) gives
            the support of the next observation unless ``next_supports`` is given
        :param supports: the supports of ``obs``, one per environment as the environment gives them (a mask; a box
            ``(2, action_dim)`` in action units); required unless SafeSupportQ staged them
        :param next_supports: the supports of ``next_obs``, same layout (default: read from ``infos``)
        """
        # Store the supports first: `super().add` advances `self.pos`.
        self._store_supports(infos, supports, next_supports)
        super().add(obs, next_obs, action, reward, done, infos)

    # SafeReplayBufferSamples is SB3's ReplayBufferSamples plus the supports (NamedTuples cannot subclass each other).
    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> SafeReplayBufferSamples:
        env_indices = sampled_env_indices(self.n_envs, len(batch_inds))
        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        else:
            next_obs = self.next_observations[batch_inds, env_indices, :]
        # Time-limit truncations are not terminations: the target still bootstraps from them.
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        supports, next_supports = self._sample_supports(batch_inds, env_indices)
        observations = self._normalize_obs(self.observations[batch_inds, env_indices, :], env)
        next_observations = self._normalize_obs(next_obs, env)
        assert isinstance(observations, np.ndarray) and isinstance(next_observations, np.ndarray)  # a flat buffer
        # Every array here is a fresh copy (advanced indexing), so the tensors can share its memory (SB3 copies again).
        return SafeReplayBufferSamples(
            observations=self.to_torch(observations, copy=False),
            actions=self.to_torch(self.actions[batch_inds, env_indices, :], copy=False),
            next_observations=self.to_torch(next_observations, copy=False),
            dones=self.to_torch(dones.reshape(-1, 1), copy=False),
            rewards=self.to_torch(
                self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env), copy=False
            ),
            supports=supports,
            next_supports=next_supports,
        )


class SafeDictReplayBuffer(SupportStorage, DictReplayBuffer):
    """
    Dict-observation twin of :class:`SafeReplayBuffer`.

    Same arguments as :class:`stable_baselines3.common.buffers.DictReplayBuffer`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_supports()

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        supports: Any = None,
        next_supports: Any = None,
    ) -> None:
        """Dict-observation twin of :meth:`SafeReplayBuffer.add` (same arguments, observations as dicts)."""
        self._store_supports(infos, supports, next_supports)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> SafeDictReplayBufferSamples:
        env_indices = sampled_env_indices(self.n_envs, len(batch_inds))
        obs = self._normalize_obs({key: obs[batch_inds, env_indices, :] for key, obs in self.observations.items()}, env)
        next_obs = self._normalize_obs(
            {key: obs[batch_inds, env_indices, :] for key, obs in self.next_observations.items()}, env
        )
        assert isinstance(obs, dict) and isinstance(next_obs, dict)
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        supports, next_supports = self._sample_supports(batch_inds, env_indices)
        return SafeDictReplayBufferSamples(
            observations={key: self.to_torch(value) for key, value in obs.items()},
            actions=self.to_torch(self.actions[batch_inds, env_indices]),
            next_observations={key: self.to_torch(value) for key, value in next_obs.items()},
            dones=self.to_torch(dones.reshape(-1, 1)),
            rewards=self.to_torch(self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env)),
            supports=supports,
            next_supports=next_supports,
        )
