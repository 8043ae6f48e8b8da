"""One entry point for every kind of offline dataset: a Minari dataset or its local id, a saved replay buffer (object
or file), or plain arrays. Each is validated and returned in the replay buffer's layout."""

import os
import pathlib
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.save_util import load_from_pkl

from sb3_safeq.common.buffers import SupportStorage
from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.offline.errors import NO_SUPPORT_MESSAGE, InvalidDatasetError
from sb3_safeq.offline.minari_io import is_minari_dataset, load_local_minari_dataset, transitions_from_minari
from sb3_safeq.offline.replay import transitions_from_buffer
from sb3_safeq.offline.transitions import AgentTransitions, SafeTransitions
from sb3_safeq.offline.validation import check_agent_transitions, validate_transitions

#: What :func:`load_offline_dataset` accepts, for error messages.
DATASET_KINDS = (
    "a minari.MinariDataset or the id of a local one, a SafeReplayBuffer or the path of one saved with "
    "save_replay_buffer, a dict of arrays (observations, actions, rewards, next_observations, terminations, "
    "truncations, supports, next_supports, optionally costs), or SafeTransitions"
)


def load_offline_dataset(
    dataset: Any, kind: SupportKind, observation_space: spaces.Space, supports_required: bool = True
) -> AgentTransitions:
    """
    :param dataset: see :data:`DATASET_KINDS`. A buffer file is unpickled: load only files you trust
    :param kind: the support kind of the model's action space
    :param observation_space: the model's observation space
    :param supports_required: refuse a dataset without supports (False for a model that estimates them: its
        transitions then come back with ``supports=None``)
    :return: the validated transitions in agent units
    :raises InvalidDatasetError: for a dataset that does not fit the model or breaks the support contract
    """
    if isinstance(dataset, (str, os.PathLike)):
        path = pathlib.Path(dataset)
        for candidate in (path, path.with_name(path.name + ".pkl")):
            if candidate.is_file():
                return load_offline_dataset(load_from_pkl(candidate), kind, observation_space, supports_required)
        if isinstance(dataset, os.PathLike) or str(dataset).endswith(".pkl"):
            raise InvalidDatasetError(f"No replay buffer file {str(dataset)!r}.")
        dataset = load_local_minari_dataset(str(dataset))
    if is_minari_dataset(dataset):
        transitions = transitions_from_minari(dataset, kind, observation_space, supports_required)
        return validate_transitions(transitions, kind, observation_space)
    if isinstance(dataset, dict):
        dataset = SafeTransitions.from_arrays(dataset, kind.info_key, supports_required)
    if isinstance(dataset, SafeTransitions):
        if dataset.supports is None and supports_required:
            where = "SafeTransitions with supports=None"
            raise InvalidDatasetError("The dataset " + NO_SUPPORT_MESSAGE.format(where=where, key=kind.info_key))
        return validate_transitions(dataset, kind, observation_space)
    if isinstance(dataset, BaseBuffer) and not isinstance(dataset, SupportStorage):
        transitions_from_buffer(dataset)  # raises: it stores no supports
    if isinstance(dataset, SupportStorage):
        buffer: Any = dataset
        if buffer.action_space != kind.action_space or buffer.observation_space != observation_space:
            raise InvalidDatasetError(
                f"The replay buffer was filled for the spaces {buffer.observation_space!r} / {buffer.action_space!r}, "
                f"the model has {observation_space!r} / {kind.action_space!r}: use a buffer of the same environment."
            )
        data = transitions_from_buffer(buffer)
        check_agent_transitions(data, kind)
        return data
    raise InvalidDatasetError(f"Cannot read a {type(dataset).__name__} as an offline dataset: give {DATASET_KINDS}.")
