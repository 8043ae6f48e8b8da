"""Moving validated transitions into and out of a :class:`~sb3_safeq.SafeReplayBuffer`."""

from typing import Any

import numpy as np

from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer, SupportStorage
from sb3_safeq.offline.errors import InvalidDatasetError
from sb3_safeq.offline.transitions import AgentTransitions


def fill_replay_buffer(buffer: Any, data: AgentTransitions) -> None:
    """
    Replace the contents of a replay buffer by the dataset's transitions (stored as SafeSupportQ's collection stores
    them: supports in agent units; ``dones`` is ``terminated or truncated`` and ``timeouts`` marks the truncations, so
    a truncated transition still bootstraps).

    :param buffer: the model's :class:`~sb3_safeq.SafeReplayBuffer` (one environment, no memory optimisation)
    :param data: validated transitions in agent units
    :raises InvalidDatasetError: if the buffer cannot hold the dataset
    """
    check_fillable(buffer)
    if data.supports is None or data.next_supports is None:
        raise InvalidDatasetError(
            'The transitions carry no supports: a model that estimates them (behavior="estimated") fills them in '
            "before writing the buffer; any other model needs a dataset with supports."
        )
    n_transitions = len(data)
    check_capacity(buffer, n_transitions)
    buffer.reset()
    buffer._staged = None
    rows = slice(0, n_transitions)
    buffer.observations[rows, 0] = data.observations
    buffer.next_observations[rows, 0] = data.next_observations
    buffer.actions[rows, 0] = data.actions
    buffer.rewards[rows, 0] = data.rewards
    buffer.dones[rows, 0] = data.terminations | data.truncations
    buffer.timeouts[rows, 0] = data.truncations
    buffer.supports[rows, 0] = data.supports
    buffer.next_supports[rows, 0] = data.next_supports
    buffer.pos = n_transitions % buffer.buffer_size
    buffer.full = n_transitions == buffer.buffer_size


def check_capacity(buffer: Any, n_transitions: int) -> None:
    """
    :param buffer: the model's replay buffer
    :param n_transitions: the number of transitions to write
    :raises InvalidDatasetError: if the buffer cannot hold them
    """
    if n_transitions > buffer.buffer_size:
        raise InvalidDatasetError(
            f"The dataset holds {n_transitions} transitions but the replay buffer only {buffer.buffer_size}: build the "
            f"model with buffer_size >= {n_transitions}."
        )


def check_fillable(buffer: Any) -> None:
    """
    :param buffer: a replay buffer
    :raises InvalidDatasetError: unless it stores supports, for one environment, without memory optimisation
    """
    if not isinstance(buffer, SupportStorage):
        raise InvalidDatasetError(
            f"The model's replay buffer is a {type(buffer).__name__}, which stores no safe supports: use "
            "SafeReplayBuffer (the default)."
        )
    if isinstance(buffer, SafeDictReplayBuffer):
        raise InvalidDatasetError(
            "Offline training does not fill Dict-observation buffers yet: flatten the observations."
        )
    if buffer.n_envs != 1:
        raise InvalidDatasetError(
            f"The model's replay buffer is laid out for {buffer.n_envs} environments: build the model for offline "
            "training with a single environment (the dataset is one stream of transitions)."
        )
    if getattr(buffer, "optimize_memory_usage", False):
        raise InvalidDatasetError(
            "optimize_memory_usage=True stores each next observation as the following observation, which a dataset "
            "of separate episodes does not provide: build the model with optimize_memory_usage=False."
        )


def transitions_from_buffer(buffer: Any) -> AgentTransitions:
    """
    :param buffer: a filled :class:`~sb3_safeq.SafeReplayBuffer` (any number of environments)
    :return: its transitions in agent units, the environments' columns one after another
    :raises InvalidDatasetError: for a buffer without supports, an empty one, or a memory-optimised one
    """
    if not isinstance(buffer, SafeReplayBuffer):
        raise InvalidDatasetError(
            f"A {type(buffer).__name__} is no dataset for offline SafeSupportQ: it must be a SafeReplayBuffer, which "
            "stores the safe support of every observation (a DQN or SAC buffer stores none)."
        )
    if getattr(buffer, "optimize_memory_usage", False):
        raise InvalidDatasetError("A memory-optimised replay buffer cannot be read as a dataset: save one without it.")
    size = buffer.size()
    if size == 0:
        raise InvalidDatasetError("The replay buffer is empty.")

    def column_major(array: np.ndarray) -> np.ndarray:
        # (size, n_envs, ...) -> (n_envs * size, ...): each environment's transitions in their order.
        return np.swapaxes(array[:size], 0, 1).reshape(-1, *array.shape[2:])

    dones = column_major(buffer.dones).astype(bool)
    timeouts = column_major(buffer.timeouts).astype(bool)
    return AgentTransitions(
        observations=column_major(buffer.observations),
        actions=column_major(buffer.actions),
        rewards=column_major(buffer.rewards),
        next_observations=column_major(buffer.next_observations),
        terminations=dones & ~timeouts,
        truncations=dones & timeouts,
        supports=column_major(buffer.supports),
        next_supports=column_major(buffer.next_supports),
    )
