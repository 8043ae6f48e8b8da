"""
Where the benchmark reads each algorithm's hyperparameters for an environment, and what it uses when no file has an
entry for it (the user's own environment).

For an algorithm on an environment, the first file that applies is read (rl-zoo3 format: environment id ->
hyperparameters, or a ``default`` entry):

1. ``--conf-file ALGO=PATH``, with ``ALGO`` the algorithm's name or the name of the file it reads (``dqn`` for
   ``dqn_shield``, ``safeq`` for the SafeSupportQ variants);
2. ``--hyperparams-dir DIR``: ``DIR/<algorithm>.yml``, else ``DIR/<file it reads>.yml``;
3. the packaged ``hyperparams/<file it reads>.yml``.

A file the user gave (1 or 2) must have the entry: its absence is an error naming the environment, the algorithm, the
file and a template entry to copy. Without an entry in the packaged file (an environment the package does not ship),
the algorithm gets the packaged entry of a bundled reference environment of the same action kind
(:data:`REFERENCE_ENVS`): the settings measured on a small task of that kind, a better start than the library defaults,
which are tuned for Atari and MuJoCo budgets (DQN updates its target every 10,000 steps, for instance).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.utils import LinearSchedule

from sb3_safeq.bench.errors import BenchConfigError
from sb3_safeq.zoo.config import (
    HYPERPARAMS_DIR,
    REFERENCE_ENVS,
    ZOO_KEYS,
    action_kind,
    entry_template,
    read_env_hyperparams,
)
from sb3_safeq.zoo.errors import ZooUsageError

if TYPE_CHECKING:
    from sb3_safeq.bench.algorithms import AlgoSpec

#: The file whose entry gives the common step budget of an environment (every algorithm trains that many steps).
BUDGET_FILE = "safeq"


@dataclass(frozen=True)
class HyperparamSources:
    """
    The user's hyperparameter files (picklable: every run process gets it).

    :param conf_files: algorithm name, or the name of the file it reads, -> a YAML file (``--conf-file ALGO=PATH``)
    :param hyperparams_dir: a folder of ``<algo>.yml`` files (``--hyperparams-dir``)
    :param packaged_dir: the packaged files (``hyperparams/`` of the package)
    """

    conf_files: dict[str, str] = field(default_factory=dict)
    hyperparams_dir: str | None = None
    packaged_dir: str = str(HYPERPARAMS_DIR)

    def file_for(self, names: tuple[str, ...]) -> tuple[Path | None, bool]:
        """
        :param names: the algorithm's name, then the name of the file it reads
        :return: the file to read (None: none exists) and whether the user gave it
        """
        for name in names:
            if name in self.conf_files:
                return Path(self.conf_files[name]), True
        if self.hyperparams_dir is not None:
            for name in names:
                path = Path(self.hyperparams_dir) / f"{name}.yml"
                if path.is_file():
                    return path, True
        packaged = Path(self.packaged_dir) / f"{names[-1]}.yml"
        return (packaged, False) if packaged.is_file() else (None, False)


def parse_conf_files(values: list[str]) -> dict[str, str]:
    """
    :param values: ``ALGO=PATH`` strings (``--conf-file``)
    :return: algorithm -> path
    :raises BenchConfigError: a value without ``=``, or a file that does not exist
    """
    files = {}
    for value in values:
        algo, separator, path = value.partition("=")
        if not separator or not algo or not path:
            raise BenchConfigError(
                f"--conf-file {value!r}: expected ALGO=PATH, e.g. --conf-file safeq=my_safeq.yml dqn=my_dqn.yml."
            )
        if not Path(path).is_file():
            raise BenchConfigError(f"--conf-file {value}: the file {path} does not exist.")
        files[algo] = path
    return files


def _names(spec: "AlgoSpec") -> tuple[str, ...]:
    assert spec.hyperparams is not None
    return (spec.name, spec.hyperparams) if spec.name != spec.hyperparams else (spec.name,)


def _entry_key(path: Path, env_id: str) -> str | None:
    """:return: the key of the file's entry for the environment (its id or ``default``), None when it has none"""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return env_id  # not valid YAML: read_env_hyperparams says so, naming the file
    if not isinstance(content, dict) or env_id in content:
        return env_id  # (not a mapping: read_env_hyperparams says what it should be)
    return "default" if "default" in content else None


def _read_entry(path: Path, env_id: str) -> dict[str, Any]:
    try:
        entry = read_env_hyperparams(path, env_id)
    except ZooUsageError as error:  # one line and exit code 2 also when the benchmark is called from Python
        raise BenchConfigError(str(error)) from error
    assert entry is not None  # a YAML file
    return dict(entry)


@dataclass(frozen=True)
class ResolvedEntry:
    """
    An algorithm's hyperparameter entry for an environment and where it came from.

    :param entry: the entry (rl-zoo3 keys included)
    :param origin: ``"<file> (entry <key>)"``, or the defaults it stands for
    """

    entry: dict[str, Any]
    origin: str


def fallback_entry(
    spec: "AlgoSpec", sources: HyperparamSources, env_spaces: tuple[spaces.Space, spaces.Space]
) -> ResolvedEntry:
    """
    The hyperparameters of an algorithm on an environment no file has an entry for: the packaged entry of the
    reference environment of the same action kind; for an algorithm without a packaged file (a user's own), its
    constructor defaults with ``MlpPolicy`` and the reference budget. ``MlpPolicy`` becomes ``MultiInputPolicy`` for
    Dict observations.

    :param spec: the algorithm
    :param sources: the hyperparameter files
    :param env_spaces: the environment's observation and action spaces
    :return: the entry (rl-zoo3 keys included) and which defaults it is
    """
    observation_space, action_space = env_spaces
    reference = REFERENCE_ENVS[action_kind(action_space)]
    packaged = Path(sources.packaged_dir)
    own = packaged / f"{spec.hyperparams}.yml"
    if own.is_file() and _entry_key(own, reference) is not None:
        entry = _read_entry(own, reference)
        origin = f"defaults: {own.name} entry {reference}"
    else:  # the constructor's defaults, trained as long as SafeSupportQ on the reference environment
        entry = {"n_timesteps": _read_entry(packaged / f"{BUDGET_FILE}.yml", reference)["n_timesteps"]}
        origin = f"defaults: the constructor's, {BUDGET_FILE}.yml budget of {reference}"
    entry.setdefault("policy", "MlpPolicy")
    if isinstance(observation_space, spaces.Dict) and entry["policy"] == "MlpPolicy":
        entry["policy"] = "MultiInputPolicy"
    return ResolvedEntry(entry, origin)


def benchmark_entry_template(env_id: str, entry: dict[str, Any]) -> str:
    """
    :param env_id: the environment id
    :param entry: the hyperparameters to suggest (the fallback entry)
    :return: a one-line YAML entry to copy into a hyperparameter file (the keys the benchmark reads: it adds the
        safety wrapper and the monitor itself)
    """
    return entry_template(
        env_id, {key: value for key, value in entry.items() if key == "n_timesteps" or key not in ZOO_KEYS}
    )


def resolve_entry(
    spec: "AlgoSpec",
    env_id: str,
    sources: HyperparamSources,
    env_spaces: "tuple[spaces.Space, spaces.Space] | None" = None,
) -> ResolvedEntry | None:
    """
    :param spec: the algorithm (with a hyperparameter file name)
    :param env_id: the environment id
    :param sources: the hyperparameter files
    :param env_spaces: the environment's observation and action spaces, for the fallback (None: made here when needed)
    :return: the entry; None for an untrained algorithm whose file has no entry (its options have defaults)
    :raises BenchConfigError: a file the user gave has no entry for the environment (with a template to copy)
    """
    path, user_given = sources.file_for(_names(spec))
    key = None if path is None else _entry_key(path, env_id)
    if path is not None and key is not None:
        return ResolvedEntry(_read_entry(path, env_id), f"{path} (entry {key})")
    if spec.class_path is None:
        return None
    if env_spaces is None:
        env_spaces = make_env_spaces(env_id)
    fallback = fallback_entry(spec, sources, env_spaces)
    if user_given:
        raise BenchConfigError(
            f"{path} has no entry for {env_id} (nor a 'default' one), and the algorithm {spec.name} reads it. Add "
            f"one, e.g. {benchmark_entry_template(env_id, fallback.entry)} (the settings the benchmark uses for an "
            "environment without entry), or pass another file."
        )
    return ResolvedEntry(fallback.entry, f"{fallback.origin} ({env_id} has none)")


def make_env_spaces(env_id: str) -> tuple[spaces.Space, spaces.Space]:
    """
    :param env_id: a registered environment id
    :return: its observation and action spaces
    """
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _schedule(value: Any) -> Any:
    # rl-zoo3's "lin_<initial value>" schedules.
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    return value


def constructor_kwargs(entry: dict[str, Any], origin: str) -> dict[str, Any]:
    """
    Turn an rl-zoo3 entry into constructor arguments, as rl-zoo3 would: string ``*_kwargs`` values are evaluated
    (``dict(net_arch=[64, 64])``), ``lin_<x>`` schedules become linear schedules, the rl-zoo3-only keys are dropped
    (the benchmark adds the safety wrapper itself).

    :param entry: the entry
    :param origin: where it came from (for the message)
    :return: the constructor arguments
    """
    if entry.get("normalize"):
        raise BenchConfigError(f"{origin}: 'normalize' is not supported by the benchmark.")
    kwargs: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ZOO_KEYS:
            continue
        if key.endswith("_kwargs") and isinstance(value, str):
            value = eval(value, {"th": th, "nn": th.nn, "np": np})  # rl-zoo3 evaluates these strings too
        elif key in ("learning_rate", "clip_range"):
            value = _schedule(value)
        elif key == "train_freq" and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return kwargs


def load_hyperparams(
    spec: "AlgoSpec",
    env_id: str,
    sources: HyperparamSources | None = None,
    env_spaces: "tuple[spaces.Space, spaces.Space] | None" = None,
) -> tuple[int, int, dict[str, Any]]:
    """
    Read the algorithm's entry for the environment (see the module docstring for which file), as rl-zoo3 would.

    :param spec: the algorithm
    :param env_id: the environment id
    :param sources: the user's hyperparameter files (None: the packaged ones only)
    :param env_spaces: the environment's observation and action spaces (None: made when the fallback needs them)
    :return: ``(n_timesteps, n_envs, constructor kwargs)``, the spec's ``extra_kwargs`` applied last
    """
    if spec.hyperparams is None:
        return 0, 1, {}
    resolved = resolve_entry(spec, env_id, sources or HyperparamSources(), env_spaces)
    if resolved is None:  # an untrained policy only reads options there: the defaults will do
        return 0, 1, dict(spec.extra_kwargs)
    kwargs = constructor_kwargs(resolved.entry, resolved.origin)
    kwargs.update(spec.extra_kwargs)
    return int(resolved.entry["n_timesteps"]), int(resolved.entry.get("n_envs", 1)), kwargs


def step_budget(
    spec: "AlgoSpec",
    env_id: str,
    common: bool = True,
    sources: HyperparamSources | None = None,
    env_spaces: "tuple[spaces.Space, spaces.Space] | None" = None,
) -> int:
    """
    The number of training steps of an algorithm on an environment.

    :param spec: the algorithm
    :param env_id: the environment id
    :param common: one budget for every algorithm: the ``n_timesteps`` of the environment's entry in the ``safeq``
        file (falls back to the algorithm's own entry when that file has none), so that the comparison is at equal
        numbers of environment steps; False: each algorithm's own ``n_timesteps``
    :param sources: the user's hyperparameter files (None: the packaged ones only)
    :param env_spaces: the environment's observation and action spaces (None: made when the fallback needs them)
    :return: the budget (the common one also for the untrained behavior policy, which makes it part of the run key)
    """
    sources = sources or HyperparamSources()
    if common:
        path, _ = sources.file_for((BUDGET_FILE,))
        if path is not None and _entry_key(path, env_id) is not None:
            return int(_read_entry(path, env_id)["n_timesteps"])
    if spec.hyperparams is not None:
        resolved = resolve_entry(spec, env_id, sources, env_spaces)
        if resolved is not None:
            return int(resolved.entry["n_timesteps"])
    # The untrained behavior policy on an environment without entry: the reference budget of the safeq file.
    path = Path(sources.packaged_dir) / f"{BUDGET_FILE}.yml"
    reference = REFERENCE_ENVS[action_kind((env_spaces or make_env_spaces(env_id))[1])]
    return int(_read_entry(path, reference)["n_timesteps"])


__all__ = [
    "REFERENCE_ENVS",
    "HyperparamSources",
    "ResolvedEntry",
    "benchmark_entry_template",
    "constructor_kwargs",
    "fallback_entry",
    "load_hyperparams",
    "parse_conf_files",
    "resolve_entry",
    "step_budget",
]
