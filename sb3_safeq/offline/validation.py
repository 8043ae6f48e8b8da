"""
Validation of offline transitions by meaning: shapes and dtypes against the spaces, NaN, supports through the support
kind's gate, every action inside its stored support, and a safe action in every non-terminal next state. Each error
names the first offending transition and the fix.
"""

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim, get_obs_shape

from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.offline.errors import InvalidDatasetError
from sb3_safeq.offline.transitions import AgentTransitions, SafeTransitions


def validate_transitions(
    transitions: SafeTransitions, kind: SupportKind, observation_space: spaces.Space
) -> AgentTransitions:
    """
    Check transitions in environment units and convert them to the replay buffer's layout and the agent's units.

    :param transitions: the dataset's transitions (environment units); without supports, the rest is checked and
        the supports stay None (the caller accepts that only for a model that estimates them)
    :param kind: the support kind of the model's action space
    :param observation_space: the model's observation space
    :return: the validated transitions in agent units
    :raises InvalidDatasetError: naming the problem, the first offending transition and the fix
    """
    n_transitions = len(transitions.rewards) if np.ndim(transitions.rewards) > 0 else 0
    if n_transitions == 0:
        raise InvalidDatasetError("The dataset holds no transition: offline training needs at least one.")
    observations = _observations(transitions.observations, observation_space, n_transitions, "observations")
    next_observations = _observations(
        transitions.next_observations, observation_space, n_transitions, "next_observations"
    )
    rewards = _finite_vector(transitions.rewards, n_transitions, "rewards")
    terminations = _flags(transitions.terminations, n_transitions, "terminations")
    truncations = _flags(transitions.truncations, n_transitions, "truncations") & ~terminations
    costs = None
    if transitions.costs is not None:
        costs = _finite_vector(transitions.costs, n_transitions, "costs")
        if (costs < 0).any():
            first = int(np.flatnonzero(costs < 0)[0])
            raise InvalidDatasetError(
                f"costs[{first}] = {costs[first]}: a cost is >= 0 (> 0 marks an unsafe step), as info['cost']."
            )
    actions = _actions(transitions.actions, kind, n_transitions)
    supports = next_supports = None
    if transitions.supports is not None and transitions.next_supports is not None:
        raw_supports = _supports(transitions.supports, kind, n_transitions, "supports")
        raw_next_supports = _supports(transitions.next_supports, kind, n_transitions, "next_supports")
        check_actions_inside(actions, raw_supports, kind, "environment")
        check_next_supports(raw_next_supports, terminations, kind)
        supports, next_supports = kind.to_agent(raw_supports), kind.to_agent(raw_next_supports)
    elif transitions.supports is not None or transitions.next_supports is not None:
        raise InvalidDatasetError(
            "The dataset has supports but no next_supports, or the reverse: give both or neither."
        )
    buffer_action_dim = get_action_dim(kind.action_space)
    return AgentTransitions(
        observations=observations,
        actions=np.asarray(kind.actions_to_agent(actions)).reshape(n_transitions, buffer_action_dim),
        rewards=rewards.astype(np.float32),
        next_observations=next_observations,
        terminations=terminations,
        truncations=truncations,
        supports=supports,
        next_supports=next_supports,
        costs=costs,
    )


def check_agent_transitions(data: AgentTransitions, kind: SupportKind) -> None:
    """
    Check transitions already in agent units (e.g. read from a saved replay buffer): NaN, actions inside their stored
    supports, a safe action in every non-terminal next state.

    :param data: the transitions
    :param kind: the support kind of the model's action space
    :raises InvalidDatasetError: naming the problem and the first offending transition
    """
    assert data.supports is not None and data.next_supports is not None  # a replay buffer always stores them
    for name in ("observations", "next_observations", "actions", "rewards", "supports", "next_supports"):
        values = getattr(data, name)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            first = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0])
            raise InvalidDatasetError(f"The replay buffer's {name} hold NaN or infinite values (first at {first}).")
    check_actions_inside(data.actions, data.supports, kind, "agent")
    check_next_supports(data.next_supports, data.terminations, kind)


def check_actions_inside(actions: np.ndarray, supports: np.ndarray, kind: SupportKind, units: str) -> None:
    """
    :param actions: one action per transition
    :param supports: the support of each transition's observation, in the same units as the actions
    :param kind: the support kind
    :param units: ``"environment"`` or ``"agent"``, for the message
    :raises InvalidDatasetError: if an action lies outside its stored support (count and first index)
    """
    outside = np.fromiter(
        (not kind.contains(action, support) for action, support in zip(actions, supports, strict=True)),
        dtype=bool,
        count=len(actions),
    )
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise InvalidDatasetError(
            f"{int(outside.sum())} of {len(actions)} actions lie outside the support stored for their observation "
            f"(first at transition {first}: action {np.asarray(actions[first]).tolist()}, support "
            f"{np.asarray(supports[first]).tolist()}, {units} units). Offline SafeSupportQ learns only inside the "
            "stored supports, so they must hold the support of the state each action was taken in: fix the logging "
            "(the support of observation t is info[key][t], before step t) or drop those transitions."
        )


def check_next_supports(next_supports: np.ndarray, terminations: np.ndarray, kind: SupportKind) -> None:
    """
    :param next_supports: the supports of the next observations
    :param terminations: whether each next observation is terminal
    :param kind: the support kind
    :raises InvalidDatasetError: if a non-terminal next observation has no safe action (its soft value is -inf)
    """
    stuck = kind.empty(next_supports) & ~terminations
    if stuck.any():
        first = int(np.flatnonzero(stuck)[0])
        raise InvalidDatasetError(
            f"{int(stuck.sum())} non-terminal next observations have an empty support (first at transition {first}). "
            + kind.empty_message("Such a state")
        )


def _rows(array: Any, n_transitions: int, name: str) -> np.ndarray:
    values = np.asarray(array)
    if values.ndim == 0 or len(values) != n_transitions:
        found = "a scalar" if values.ndim == 0 else f"{len(values)} rows"
        raise InvalidDatasetError(
            f"{name} has {found}, expected {n_transitions} (one row per transition, as rewards has): every array of "
            "the dataset is indexed by the transition first."
        )
    return values


def _finite_vector(array: Any, n_transitions: int, name: str) -> np.ndarray:
    values = _rows(array, n_transitions, name)
    if values.shape not in ((n_transitions,), (n_transitions, 1)):
        raise InvalidDatasetError(f"{name} has shape {values.shape}, expected ({n_transitions},): one number per step.")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise InvalidDatasetError(f"{name} must be numbers, got dtype {values.dtype}.")
    values = values.reshape(n_transitions).astype(np.float64)
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidDatasetError(
            f"{name}[{first}] is {values[first]}: NaN or infinite values would poison every Q-value they reach. "
            "Drop or repair those transitions."
        )
    return values


def _flags(array: Any, n_transitions: int, name: str) -> np.ndarray:
    values = _finite_vector(array, n_transitions, name)
    if not np.isin(values, (0.0, 1.0)).all():
        first = int(np.flatnonzero(~np.isin(values, (0.0, 1.0)))[0])
        raise InvalidDatasetError(f"{name}[{first}] is {values[first]}: {name} are booleans (or 0/1).")
    return values.astype(bool)


def _observations(array: Any, space: spaces.Space, n_transitions: int, name: str) -> np.ndarray:
    if isinstance(space, spaces.Dict):
        raise InvalidDatasetError(
            "Offline training does not read Dict observations yet: flatten them (gymnasium's FlattenObservation) "
            "before collecting, or fill a SafeDictReplayBuffer and pass it as the dataset."
        )
    values = _rows(array, n_transitions, name)
    shape = get_obs_shape(space)
    assert isinstance(shape, tuple)
    space_shape = tuple(space.shape or ())
    accepted = {(n_transitions, *shape), (n_transitions, *space_shape)}
    if values.shape not in accepted:
        raise InvalidDatasetError(
            f"{name} has shape {values.shape}, expected {(n_transitions, *space_shape)} for the observation space "
            f"{space!r}: the dataset must come from the model's environment."
        )
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise InvalidDatasetError(f"{name} must be numbers, got dtype {values.dtype}.")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values.reshape(n_transitions, -1)).all(axis=1))[0])
        raise InvalidDatasetError(f"{name}[{first}] holds NaN or infinite values: drop or repair that transition.")
    if isinstance(space, spaces.Discrete):
        outside = (values < space.start) | (values >= space.start + space.n) | (values != np.round(values))
        if outside.any():
            first = int(np.flatnonzero(outside.reshape(n_transitions, -1).any(axis=1))[0])
            raise InvalidDatasetError(f"{name}[{first}] = {values[first]} is not an element of {space!r}.")
    return values.reshape(n_transitions, *shape).astype(space.dtype)


def _supports(array: Any, kind: SupportKind, n_transitions: int, name: str) -> np.ndarray:
    values = _rows(array, n_transitions, name)
    # The kind's own gate, one observation at a time: it names the layout it expects and the offending row.
    try:
        return np.stack([kind.validate(row, f"The dataset's {name}[{index}]") for index, row in enumerate(values)])
    except ValueError as error:
        raise InvalidDatasetError(str(error)) from None


def _actions(array: Any, kind: SupportKind, n_transitions: int) -> np.ndarray:
    values = _rows(array, n_transitions, "actions")
    space = kind.action_space
    if isinstance(space, spaces.Discrete):
        if values.shape not in ((n_transitions,), (n_transitions, 1)):
            raise InvalidDatasetError(
                f"actions has shape {values.shape}, expected ({n_transitions},): one action index per transition."
            )
        values = values.reshape(n_transitions)
        if not np.issubdtype(values.dtype, np.integer):
            integral = np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all()
            if not integral or (values != np.round(values)).any():
                raise InvalidDatasetError(
                    f"actions must be integer indices of {space!r}, got dtype {values.dtype} with non-integral values."
                )
        return values.astype(np.int64)
    expected = (n_transitions, *tuple(space.shape or ()))
    if values.shape != expected:
        raise InvalidDatasetError(
            f"actions has shape {values.shape}, expected {expected} for the action space {space!r}."
        )
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise InvalidDatasetError(f"actions[{first}] = {values[first].tolist()} is NaN or infinite.")
    return values
