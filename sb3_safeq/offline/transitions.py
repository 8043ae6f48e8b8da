"""
Transitions of an offline dataset, as plain arrays: the form every dataset source (a Minari dataset, a saved replay
buffer, a dict of arrays) is converted to before it is validated and written into the replay buffer.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_safeq.offline.errors import NO_SUPPORT_MESSAGE, InvalidDatasetError

#: The arrays a dataset given as a dict must hold (one row per transition), and the optional ones.
REQUIRED_KEYS: tuple[str, ...] = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminations",
    "truncations",
    "supports",
    "next_supports",
)
OPTIONAL_KEYS: tuple[str, ...] = ("costs",)
#: The arrays of the supports, which a dataset may lack when the model estimates them (``behavior="estimated"``).
SUPPORT_KEYS: tuple[str, ...] = ("supports", "next_supports")


@dataclass(frozen=True)
class SafeTransitions:
    """
    ``n`` transitions with the safe support of each observation and next observation.

    In *environment* units (as the environment and its ``SafetyWrapper`` give them): actions as taken by ``env.step``,
    supports as ``action_masks()`` / ``safe_action_bounds()`` return them. Not validated yet (see
    :func:`~sb3_safeq.offline.validation.validate_transitions`).

    :param observations: ``(n, *obs_shape)``
    :param actions: ``(n,)`` for Discrete actions, ``(n, action_dim)`` for Box actions
    :param rewards: ``(n,)``
    :param next_observations: ``(n, *obs_shape)``
    :param terminations: ``(n,)`` bool: the next observation is terminal (no bootstrap)
    :param truncations: ``(n,)`` bool: the episode was cut after this transition (time limit, end of the log); the
        target still bootstraps from the next observation
    :param supports: ``(n, *support_shape)``: masks ``(n, n_actions)`` or boxes ``(n, 2, action_dim)``; None for a
        dataset without supports (accepted only by a model that estimates them, ``behavior="estimated"``)
    :param next_supports: the supports of the next observations, same layout (None with ``supports``)
    :param costs: ``(n,)`` ground-truth cost of each step (``info["cost"]``), or None when the dataset has none
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    supports: np.ndarray | None
    next_supports: np.ndarray | None
    costs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], support_key: str, supports_required: bool = True) -> "SafeTransitions":
        """
        :param arrays: a dict with the keys of :data:`REQUIRED_KEYS` (and optionally ``costs``), one row per
            transition; ``supports`` and ``next_supports`` may both be absent when ``supports_required`` is False
        :param support_key: the support kind's ``info`` key, named in the error for a dict without supports
        :param supports_required: refuse a dict without supports (False: the model estimates them)
        :return: the transitions (arrays converted with ``np.asarray``, not validated)
        :raises InvalidDatasetError: for a missing or unknown key
        """
        if not isinstance(arrays, dict):
            raise InvalidDatasetError(f"A dataset of plain arrays must be a dict, got {type(arrays).__name__}.")
        missing = [key for key in REQUIRED_KEYS if key not in arrays]
        missing_supports = [key for key in SUPPORT_KEYS if key in missing]
        if len(missing_supports) == 1:
            raise InvalidDatasetError(
                f"The dataset has {', '.join(key for key in SUPPORT_KEYS if key not in missing)} but no "
                f"{missing_supports[0]!r}: give both arrays of supports (one row per transition), or neither."
            )
        if missing_supports and supports_required:
            where = "no 'supports' / 'next_supports' arrays"
            raise InvalidDatasetError("The dataset " + NO_SUPPORT_MESSAGE.format(where=where, key=support_key))
        missing = [key for key in missing if key not in SUPPORT_KEYS]
        if missing:
            raise InvalidDatasetError(
                f"The dataset has no {', '.join(repr(key) for key in missing)} array(s): a dict of plain arrays needs "
                f"{', '.join(REQUIRED_KEYS)} (one row per transition) and optionally costs."
            )
        unknown = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise InvalidDatasetError(
                f"The dataset has unknown array(s) {unknown}: the keys are {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)} "
                "(e.g. 'dones' is split into 'terminations' and 'truncations')."
            )
        supports, next_supports, costs = (
            None if arrays.get(key) is None else np.asarray(arrays[key]) for key in (*SUPPORT_KEYS, "costs")
        )
        return cls(
            observations=np.asarray(arrays["observations"]),
            actions=np.asarray(arrays["actions"]),
            rewards=np.asarray(arrays["rewards"]),
            next_observations=np.asarray(arrays["next_observations"]),
            terminations=np.asarray(arrays["terminations"]),
            truncations=np.asarray(arrays["truncations"]),
            supports=supports,
            next_supports=next_supports,
            costs=costs,
        )


@dataclass(frozen=True)
class AgentTransitions:
    """
    Validated transitions in the replay buffer's layout and the agent's units (Box actions and boxes scaled to
    ``[-1, 1]``), ready to be written into a :class:`~sb3_safeq.SafeReplayBuffer`.

    :param observations: ``(n, *obs_shape)`` with SB3's ``get_obs_shape`` (a Discrete observation is ``(n, 1)``)
    :param actions: ``(n, action_dim)`` with SB3's ``get_action_dim`` (1 for Discrete actions)
    :param rewards: ``(n,)``
    :param next_observations: ``(n, *obs_shape)``
    :param terminations: ``(n,)`` bool
    :param truncations: ``(n,)`` bool (never set where ``terminations`` is)
    :param supports: ``(n, *support_shape)`` in agent units; None until a model that estimates supports has
        estimated them (a dataset without supports)
    :param next_supports: same layout, of the next observations (None with ``supports``)
    :param costs: ``(n,)`` or None
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    supports: np.ndarray | None
    next_supports: np.ndarray | None
    costs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rewards)
