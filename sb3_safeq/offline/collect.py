"""
Collecting a safe offline dataset: a behavior acts inside the support of every state, through a strict
:class:`~sb3_safeq.SafetyWrapper`, and the transitions are written as a local Minari dataset with their supports and
costs (see :mod:`sb3_safeq.offline.minari_io` for the layout).
"""

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.utils import set_random_seed

from sb3_safeq.common.behaviors.base import BehaviorPolicy
from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.common.wrappers import SafetyWrapper
from sb3_safeq.offline.minari_io import import_minari, write_minari_dataset

#: One environment action for one observation and its raw support (environment units).
Actor = Callable[[Any, np.ndarray], Any]


def collect_safe_dataset(
    env: gym.Env | str,
    behavior: Any = "uniform",
    n_steps: int = 10_000,
    dataset_id: str = "safe/dataset-v0",
    seed: int | None = None,
    progress_bar: bool = False,
    description: str | None = None,
) -> Any:
    """
    Run a behavior inside the safe support and write what it logs as a local Minari dataset.

    Every action is checked against the support of its state before it is taken (an action outside raises), and the
    environment runs inside a strict :class:`~sb3_safeq.SafetyWrapper` (the first unsafe visit raises
    :class:`~sb3_safeq.UnsafeVisitError`): the dataset holds safe data only. An episode cut by the step budget ends
    with a truncation.

    :param env: the environment or its registered id; it must expose its safe support (``action_masks()`` or
        ``safe_action_bounds()``) and report ``info["cost"]``
    :param behavior: ``"uniform"`` (uniform over each state's support), anything ``SafeSupportQ(behavior=...)``
        accepts (a :class:`~sb3_safeq.BehaviorPolicy`, a function, an import path ``"package.module:name"``), or a
        trained model with ``predict(obs, <support keyword>=...)`` (e.g. a :class:`~sb3_safeq.SafeSupportQ`), which
        acts with the support of each state (stochastic actions)
    :param n_steps: number of environment steps to log
    :param dataset_id: id of the new local dataset (``MINARI_DATASETS_PATH``); an existing id is refused
    :param seed: seed of the first reset, of the behavior's sampling and of torch
    :param progress_bar: show a progress bar (tqdm)
    :param description: the dataset's description (default: says what collected it)
    :return: the ``minari.MinariDataset``
    """
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    # Fail before collecting, not after: a malformed or taken id.
    import_minari("minari.dataset.minari_dataset").parse_dataset_id(dataset_id)
    if dataset_id in import_minari().list_local_datasets():
        raise ValueError(
            f"A local Minari dataset {dataset_id!r} exists already: choose another id (or version, e.g. -v1)."
        )
    made = isinstance(env, str)
    base_env = gym.make(env) if isinstance(env, str) else env
    safe_env = SafetyWrapper(base_env, strict=True)
    kind = safe_env.support_kind
    if seed is not None:
        set_random_seed(seed)
    actor, behavior_name = _make_actor(behavior, kind, safe_env.observation_space, np.random.default_rng(seed))
    try:
        episodes = _run(safe_env, kind, actor, int(n_steps), seed, progress_bar)
        spec_id = base_env.spec.id if base_env.spec is not None else type(base_env.unwrapped).__name__
        return write_minari_dataset(
            dataset_id,
            episodes,
            base_env,
            kind,
            algorithm_name=f"sb3-safeq collect (behavior {behavior_name})",
            description=description
            or f"{n_steps} steps of {spec_id} by the behavior {behavior_name}, inside the safe support "
            f"(infos['{kind.info_key}']: the support of each observation; infos['cost']: the step's cost).",
        )
    finally:
        if made:
            safe_env.close()


def _make_actor(
    behavior: Any, kind: SupportKind, observation_space: gym.Space, rng: np.random.Generator
) -> tuple[Actor, str]:
    """:return: a function giving one environment action per observation and raw support, and the behavior's name"""
    if isinstance(behavior, str) and behavior == "uniform":
        return (lambda observation, support: kind.sample_uniform(support[None], rng)[0]), "uniform"
    if callable(getattr(behavior, "predict", None)) and not isinstance(behavior, BehaviorPolicy):
        model = behavior

        def predict(observation: Any, support: np.ndarray) -> Any:
            action, _ = model.predict(observation, deterministic=False, **{kind.predict_keyword: support[None]})
            return action

        return predict, type(model).__name__
    policy = kind.make_behavior(behavior)
    shape = get_obs_shape(observation_space)
    assert isinstance(shape, tuple)

    def act(observation: Any, support: np.ndarray) -> Any:
        observations = th.as_tensor(np.asarray(observation).reshape(1, *shape))
        return policy.act(observations, support[None])[0]

    return act, behavior if isinstance(behavior, str) else type(policy).__name__


def _env_action(action: Any, env: gym.Env) -> Any:
    """:return: the action as the environment takes it (a Python int for Discrete actions, as toy-text envs want)"""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=space.dtype).reshape(space.shape)


def _run(
    env: SafetyWrapper, kind: SupportKind, actor: Actor, n_steps: int, seed: int | None, progress_bar: bool
) -> list[dict[str, Any]]:
    """:return: the logged episodes (see :func:`~sb3_safeq.offline.minari_io.write_minari_dataset`)"""
    progress = None
    if progress_bar:
        from tqdm.auto import tqdm

        progress = tqdm(total=n_steps, desc="collecting", unit="step")
    episodes: list[dict[str, Any]] = []
    episode: dict[str, Any] | None = None
    observation: Any = None
    for step in range(n_steps):
        if episode is None:
            observation, info = env.reset(seed=seed if step == 0 else None)
            episode = _new_episode(observation, info[kind.info_key])
        support = episode["supports"][-1]
        kind.check_not_empty(support[None], "A state reached during collection")
        action = _env_action(actor(observation, support), env)
        if not kind.contains(action, support):
            raise ValueError(
                f"The behavior chose the action {np.asarray(action).tolist()} outside the safe support "
                f"{support.tolist()} at step {step}: a dataset for SafeSupportQ holds safe actions only. Give a "
                "behavior supported on the safe set (see docs/guide.md, section 3)."
            )
        observation, reward, terminated, truncated, info = env.step(action)
        is_last = step == n_steps - 1
        for key, value in (
            ("observations", observation),
            ("actions", action),
            ("rewards", float(reward)),
            ("terminations", bool(terminated)),
            ("truncations", bool(truncated) or (is_last and not terminated)),
            ("supports", info[kind.info_key]),
            ("costs", float(info["cost"])),
        ):
            episode[key].append(value)
        if terminated or truncated or is_last:
            episodes.append(episode)
            episode = None
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return episodes


def _new_episode(observation: Any, support: np.ndarray) -> dict[str, Any]:
    return {
        "observations": [observation],
        "actions": [],
        "rewards": [],
        "terminations": [],
        "truncations": [],
        "supports": [support],
        "costs": [0.0],
    }
