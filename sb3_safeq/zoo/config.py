"""The packaged hyperparameter files and the checks that turn rl-zoo3's late failures into clear messages."""

import difflib
import inspect
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from gymnasium import spaces

from sb3_safeq.zoo.errors import ZooUsageError


def _hyperparams_dir() -> Path:
    """
    :return: the folder of the hyperparameter files: ``hyperparams/`` of a repository checkout (an editable install
        too), the only copy of the files; else the copy that setup.py puts into the package when it builds a wheel
    """
    # resolve(): a strict editable install runs this file through a link in build/, the checkout is where it points.
    checkout = Path(__file__).resolve().parents[2]
    # setup.py tells a checkout from the site-packages folder of an installed wheel, where no setup.py is.
    if (checkout / "setup.py").is_file() and (checkout / "hyperparams").is_dir():
        return checkout / "hyperparams"
    return Path(__file__).parent / "hyperparams"


#: The folder of the hyperparameter files shipped with the package (``hyperparams/`` at the repository root).
HYPERPARAMS_DIR = _hyperparams_dir()

#: Keys of a hyperparameter entry that rl-zoo3 consumes itself instead of passing them to the algorithm.
ZOO_KEYS = frozenset(
    {
        "n_timesteps",
        "n_envs",
        "normalize",
        "env_wrapper",
        "vec_env_wrapper",
        "callback",
        "frame_stack",
        "monitor_kwargs",
        "env_kwargs",
        "noise_type",
        "noise_std",
    }
)
#: Constructor arguments rl-zoo3 sets from its command line; a hyperparameter file must not repeat them.
COMMAND_LINE_KEYS = frozenset({"env", "seed", "verbose", "device", "tensorboard_log"})


#: The bundled environment whose packaged entries stand in for an environment no file has an entry for, per action
#: space: Discrete actions (masks) get the cliff-walking settings (20k steps), Box actions the point-mass ones (10k).
REFERENCE_ENVS = {"discrete": "SafeCliffWalking-v0", "box": "SafePointMass-v0"}


class HyperparameterFileError(ZooUsageError):
    """A hyperparameter file that rl-zoo3 could not use, with what is wrong and how to fix it."""


class MissingEntryError(HyperparameterFileError):
    """A hyperparameter file without an entry for the environment (nor a ``default`` one)."""


def action_kind(action_space: spaces.Space) -> str:
    """
    :param action_space: an environment's action space
    :return: ``"discrete"`` or ``"box"``: the key of :data:`REFERENCE_ENVS`
    """
    return "discrete" if isinstance(action_space, spaces.Discrete) else "box"


def entry_template(env_id: str, entry: dict[str, Any]) -> str:
    """
    :param env_id: the environment id
    :param entry: the hyperparameters to suggest
    :return: a one-line YAML entry to copy into a hyperparameter file
    """
    flow = yaml.safe_dump({env_id: entry}, default_flow_style=True, sort_keys=False, width=math.inf)
    return flow.strip().removeprefix("{").removesuffix("}")


def packaged_conf_file(algo: str) -> Path | None:
    """
    :param algo: rl-zoo3 algorithm name (``safeq``, ``dqn``, ...)
    :return: the packaged hyperparameter file of the algorithm, or None when the package ships none for it
    """
    path = HYPERPARAMS_DIR / f"{algo}.yml"
    return path if path.is_file() else None


def read_env_hyperparams(conf_file: str | Path, env_id: str) -> dict[str, Any] | None:
    """
    Read the entry rl-zoo3 would use for an environment from a YAML hyperparameter file and check its shape.

    :param conf_file: path of the hyperparameter file; Python files and modules (also accepted by rl-zoo3's
        ``--conf-file``) are not checked
    :param env_id: the environment id
    :return: the entry (the environment's own, else ``default``), or None for a Python configuration
    """
    path = Path(conf_file)
    if path.suffix not in (".yml", ".yaml"):
        return None
    if not path.is_file():
        raise HyperparameterFileError(f"The hyperparameter file {path} does not exist.")
    try:
        with path.open() as stream:  # a stream, so that YAML errors name the file
            content = yaml.safe_load(stream)
    except yaml.YAMLError as error:
        raise HyperparameterFileError(f"The hyperparameter file {path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise HyperparameterFileError(
            f"The hyperparameter file {path} must map environment ids to hyperparameters (e.g. "
            f"'{env_id}: {{n_timesteps: 20000, policy: MlpPolicy}}'), got {type(content).__name__}."
        )
    key = env_id if env_id in content else "default"
    if key not in content:
        raise MissingEntryError(
            f"The hyperparameter file {path} has no entry for {env_id} (nor a 'default' one); it has entries for: "
            f"{', '.join(map(str, content)) or 'nothing'}. Add one, or pass another file with --conf-file."
        )
    entry = content[key]
    if not isinstance(entry, dict):
        raise HyperparameterFileError(
            f"The entry {key!r} of {path} must be a mapping of hyperparameter names to values, got "
            f"{type(entry).__name__} ({entry!r})."
        )
    if "n_timesteps" not in entry:
        raise HyperparameterFileError(f"The entry {key!r} of {path} has no 'n_timesteps', which rl-zoo3 requires.")
    return entry


def check_hyperparameter_names(names: Iterable[str], algo: str, algo_class: type, source: str) -> None:
    """
    Check that every hyperparameter is either an rl-zoo3 key or a constructor argument of the algorithm, instead of
    letting the constructor fail with a ``TypeError`` after the environments were built.

    :param names: hyperparameter names
    :param algo: rl-zoo3 algorithm name
    :param algo_class: the algorithm class
    :param source: where the names come from (for the message)
    """
    parameters = inspect.signature(algo_class).parameters  # the constructor's, without self
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    accepted = (set(parameters) | ZOO_KEYS) - COMMAND_LINE_KEYS - {"self", "_init_setup_model"}
    for name in names:
        if name in COMMAND_LINE_KEYS:
            raise HyperparameterFileError(
                f"{source}: {name!r} is set by rl-zoo3 from its command line (e.g. --seed, --device, --verbose, "
                "--tensorboard-log); remove it from the hyperparameters."
            )
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise HyperparameterFileError(
                f"{source}: unknown hyperparameter {name!r} for {algo} ({algo_class.__name__}): it is neither a "
                f"constructor argument nor an rl-zoo3 key.{hint}"
            )
