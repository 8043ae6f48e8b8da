"""
Reading and writing Minari datasets with safe supports and costs.

A transition's support travels in the episode's ``infos`` under the key the :class:`~sb3_safeq.SafetyWrapper` writes
(``action_mask``, ``safe_action_bounds``), and its cost under ``cost``. Like observations, ``infos`` has ``T + 1``
entries per episode of ``T`` steps (the reset info first): the support of observation ``t`` is ``infos[key][t]``, and
the cost of step ``t`` is ``infos["cost"][t + 1]`` (0 at the reset). Minari is imported on use (the ``offline``
extra); datasets are read from and written to the local folder ``MINARI_DATASETS_PATH`` only, never the hub.
"""

import importlib
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_safeq.common.supports.base import COST_INFO_KEY, SupportKind
from sb3_safeq.offline.errors import NO_SUPPORT_MESSAGE, InvalidDatasetError
from sb3_safeq.offline.transitions import SafeTransitions

#: What to install when Minari is missing.
MINARI_HINT = 'pip install "sb3-safeq[offline]"'


def import_minari(module: str = "minari") -> Any:
    """
    Import Minari on use: offline training on a replay buffer or on arrays works without it.

    :param module: ``minari`` or one of its submodules
    :return: the module
    :raises ModuleNotFoundError: naming the extra to install
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"Minari datasets need the 'offline' extra: {MINARI_HINT} ({error}).") from None


def is_minari_dataset(dataset: Any) -> bool:
    """:return: whether ``dataset`` is a ``minari.MinariDataset`` (False without importing Minari when absent)"""
    return type(dataset).__module__.startswith("minari.") and hasattr(dataset, "iterate_episodes")


def load_local_minari_dataset(dataset_id: str) -> Any:
    """
    :param dataset_id: a dataset id in the local Minari folder (``MINARI_DATASETS_PATH``)
    :return: the ``MinariDataset``
    :raises InvalidDatasetError: if no local dataset has this id (the hub is never asked)
    """
    minari = import_minari()
    local = minari.list_local_datasets()
    if dataset_id not in local:
        known = ", ".join(sorted(local)) or "none"
        raise InvalidDatasetError(
            f"No local Minari dataset {dataset_id!r} (local datasets: {known}; folder: MINARI_DATASETS_PATH or "
            "~/.minari/datasets). Collect one with `sb3-safeq collect`, or give a path to a saved replay buffer."
        )
    return minari.load_dataset(dataset_id)


def transitions_from_minari(
    dataset: Any, kind: SupportKind, observation_space: gym.Space, supports_required: bool = True
) -> SafeTransitions:
    """
    :param dataset: a ``minari.MinariDataset``
    :param kind: the support kind of the model's action space
    :param observation_space: the model's observation space
    :param supports_required: refuse episodes without supports (False: the model estimates them, and a dataset
        where no episode has supports gives transitions without supports)
    :return: every step of every episode as a transition, in environment units (not validated yet)
    :raises InvalidDatasetError: for other spaces than the model's, episodes without supports when they are
        required, or some episodes with supports and some without
    """
    spec = dataset.spec
    if spec.action_space != kind.action_space or spec.observation_space != observation_space:
        raise InvalidDatasetError(
            f"The Minari dataset {spec.dataset_id!r} has the spaces {spec.observation_space!r} / "
            f"{spec.action_space!r}, the model {observation_space!r} / {kind.action_space!r}: build the model with "
            "the dataset's environment."
        )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("obs", "next", "act", "rew", "term", "trunc")}
    supports: list[np.ndarray] = []
    next_supports: list[np.ndarray] = []
    costs: list[np.ndarray] = []
    for episode in dataset.iterate_episodes():
        n_steps = len(episode)
        if isinstance(episode.observations, (dict, tuple)):
            raise InvalidDatasetError("Offline training does not read Dict or Tuple observations yet.")
        infos = episode.infos
        if kind.info_key not in infos and (supports_required or supports):
            where = f"episode {episode.id} has no infos['{kind.info_key}']"
            raise InvalidDatasetError(
                f"The Minari dataset {spec.dataset_id!r} " + NO_SUPPORT_MESSAGE.format(where=where, key=kind.info_key)
            )
        if kind.info_key in infos and columns["rew"] and not supports:
            raise InvalidDatasetError(
                f"Episode {episode.id} of the Minari dataset {spec.dataset_id!r} has infos['{kind.info_key}'] but "
                'earlier episodes have none: record the supports in every episode, or in none (behavior="estimated").'
            )
        episode_supports = np.asarray(infos.get(kind.info_key, episode.observations))
        if len(episode_supports) != n_steps + 1 or len(episode.observations) != n_steps + 1:
            raise InvalidDatasetError(
                f"Episode {episode.id} of {spec.dataset_id!r} has {n_steps} steps, {len(episode.observations)} "
                f"observations and {len(episode_supports)} supports: Minari episodes hold T + 1 observations and info "
                "entries (the reset's first), the support of observation t at infos[key][t]."
            )
        observations = np.asarray(episode.observations)
        columns["obs"].append(observations[:-1])
        columns["next"].append(observations[1:])
        columns["act"].append(np.asarray(episode.actions))
        columns["rew"].append(np.asarray(episode.rewards))
        columns["term"].append(np.asarray(episode.terminations))
        columns["trunc"].append(np.asarray(episode.truncations))
        if kind.info_key in infos:
            supports.append(episode_supports[:-1])
            next_supports.append(episode_supports[1:])
        if COST_INFO_KEY in infos:
            costs.append(np.asarray(infos[COST_INFO_KEY], dtype=np.float64)[1:])
    if not columns["rew"]:
        raise InvalidDatasetError(f"The Minari dataset {spec.dataset_id!r} holds no episode.")
    return SafeTransitions(
        observations=np.concatenate(columns["obs"]),
        actions=np.concatenate(columns["act"]),
        rewards=np.concatenate(columns["rew"]),
        next_observations=np.concatenate(columns["next"]),
        terminations=np.concatenate(columns["term"]),
        truncations=np.concatenate(columns["trunc"]),
        supports=np.concatenate(supports) if supports else None,
        next_supports=np.concatenate(next_supports) if supports else None,
        # Costs count only when every episode has them; a partial record would understate them.
        costs=np.concatenate(costs) if len(costs) == len(columns["rew"]) else None,
    )


def write_minari_dataset(
    dataset_id: str,
    episodes: list[dict[str, Any]],
    env: gym.Env,
    kind: SupportKind,
    algorithm_name: str,
    description: str,
) -> Any:
    """
    :param dataset_id: the new dataset's id (local; an existing id is refused by Minari)
    :param episodes: per episode, ``observations`` (T + 1), ``actions``, ``rewards``, ``terminations``,
        ``truncations`` (T each), ``supports`` (T + 1, raw) and ``costs`` (T + 1, 0 first)
    :param env: the environment the data came from (its spec and spaces are recorded)
    :param kind: its support kind (names the ``infos`` key of the supports)
    :param algorithm_name: what collected the data
    :param description: the dataset's description
    :return: the ``MinariDataset``
    """
    minari = import_minari()
    EpisodeBuffer = import_minari("minari.data_collector.episode_buffer").EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            id=index,
            observations=list(episode["observations"]),
            actions=list(episode["actions"]),
            rewards=list(episode["rewards"]),
            terminations=list(episode["terminations"]),
            truncations=list(episode["truncations"]),
            infos={kind.info_key: list(episode["supports"]), COST_INFO_KEY: list(episode["costs"])},
        )
        for index, episode in enumerate(episodes)
    ]
    with warnings.catch_warnings():
        # Minari asks for an author, an e-mail and a code link in every dataset; a local dataset may go without.
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env.spec,
            observation_space=env.observation_space,
            action_space=env.action_space,
            algorithm_name=algorithm_name,
            description=description,
        )
