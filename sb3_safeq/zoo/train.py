"""
``sb3-safeq train``: rl-zoo3's training script (every option of ``python -m rl_zoo3.train``), with SafeSupportQ and
MaskablePPO registered, the packaged hyperparameter files, safety recorded for every algorithm (``safety/*`` in
TensorBoard and the CSV log, cost and unsafe visits in ``monitor.csv`` and in the evaluations of ``--eval-freq``; see
:mod:`sb3_safeq.zoo.experiment`), one torch thread unless ``--num-threads`` says otherwise, and an embedded Optuna
store by default.
"""

import argparse
import difflib
import importlib
import importlib.util
import sys
from pathlib import Path

import gymnasium as gym
import rl_zoo3
import rl_zoo3.train
from huggingface_sb3 import EnvironmentName

from sb3_safeq.zoo.config import (
    REFERENCE_ENVS,
    MissingEntryError,
    action_kind,
    check_hyperparameter_names,
    entry_template,
    packaged_conf_file,
    read_env_hyperparams,
)
from sb3_safeq.zoo.errors import ZooUsageError
from sb3_safeq.zoo.experiment import use_safe_experiment_manager
from sb3_safeq.zoo.registration import register_algos

DEFAULT_ALGO = "safeq"
DEFAULT_ENV = "SafeCliffWalking-v0"
#: torch threads when ``--num-threads`` is not given (rl-zoo3's own default, -1, keeps torch's: one per core). The
#: networks are small: extra threads only add synchronisation, and on a loaded machine they cost a factor of 10 or
#: more (README, "Threads").
DEFAULT_NUM_THREADS = 1
#: The entry point's own switch, removed before rl-zoo3 parses the command line.
NO_SAFETY_LOGGER = "--no-safety-logger"


def _known_options() -> argparse.ArgumentParser:
    """
    :return: a parser for the few rl-zoo3 options the entry point needs to look at; rl-zoo3 parses everything again
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default=DEFAULT_ALGO)
    parser.add_argument("--env", default=DEFAULT_ENV)
    parser.add_argument("-conf", "--conf-file", default=None)
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[])
    parser.add_argument("-optimize", "--optimize-hyperparameters", action="store_true")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--study-name", default=None)
    parser.add_argument("-f", "--log-folder", default="logs")
    parser.add_argument("--gym-packages", nargs="+", default=[])
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("-tb", "--tensorboard-log", default="")
    return parser


def import_env_packages(modules: list[str]) -> None:
    """
    Import ``sb3_safeq`` (which registers the bundled environment ids) and the ``--gym-packages`` modules.

    :param modules: the modules named by ``--gym-packages``
    """
    for module in ["sb3_safeq", *modules]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ZooUsageError(f"--gym-packages: cannot import {module!r} ({error}).") from error


def check_env_id(env_id: str) -> None:
    """
    :param env_id: the ``--env`` value
    """
    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ZooUsageError(
        f"unknown environment {env_id!r}: no such id is registered with gymnasium.{hint} The bundled safe "
        "environments are registered by sb3_safeq; name the module that registers any other id with --gym-packages."
    )


def check_algo(algo: str) -> None:
    """
    :param algo: the ``--algo`` value (after :func:`register_algos`)
    """
    if algo not in rl_zoo3.ALGOS:
        raise ZooUsageError(f"unknown algorithm {algo!r}: choose one of {', '.join(sorted(rl_zoo3.ALGOS))}.")


def zoo_conf_file(algo: str) -> Path:
    """
    :param algo: rl-zoo3 algorithm name
    :return: the hyperparameter file rl-zoo3 itself uses for the algorithm when no ``--conf-file`` is given
    """
    package_dir = Path(rl_zoo3.__file__).parent
    root = package_dir if (package_dir / "hyperparams").is_dir() else package_dir.parent
    return root / "hyperparams" / f"{algo}.yml"


def prepare_arguments(argv: list[str]) -> list[str]:
    """
    Check the command line and complete it for rl-zoo3: the algorithm and environment (``safeq`` on
    ``SafeCliffWalking-v0`` by default), the packaged hyperparameter file of the algorithm unless ``--conf-file`` is
    given, and for ``-optimize`` without ``--storage`` an Optuna journal file (one machine, any number of worker
    processes, no server) with a study name, so that workers started the same way share one study.

    :param argv: the arguments after ``train``
    :return: the arguments to give rl-zoo3's parser
    """
    args, _ = _known_options().parse_known_args(argv)
    import_env_packages(args.gym_packages)
    register_algos()
    check_algo(args.algo)
    check_env_id(args.env)

    if args.tensorboard_log:
        check_tensorboard()
    extra = ["--algo", args.algo, "--env", args.env]
    if args.num_threads is None:
        extra += ["--num-threads", str(DEFAULT_NUM_THREADS)]
    conf_file = args.conf_file
    packaged = packaged_conf_file(args.algo)
    if conf_file is None and packaged is not None:
        conf_file = str(packaged)
        extra += ["--conf-file", conf_file]
    conf_file = conf_file or str(zoo_conf_file(args.algo))  # the file rl-zoo3 will read
    try:
        entry = read_env_hyperparams(conf_file, args.env)
    except MissingEntryError as error:
        raise MissingEntryError(f"{error} {suggested_entry(args.env, args.algo, conf_file)}") from error
    if entry is not None:
        overrides = [override.split(":", 1)[0] for override in args.hyperparams]
        source = f"{conf_file} (entry of {args.env}) and -params"
        check_hyperparameter_names([*entry, *overrides], args.algo, rl_zoo3.ALGOS[args.algo], source)

    if args.optimize_hyperparameters:
        storage, study_name = args.storage, args.study_name
        if storage is None:
            storage = str(Path(args.log_folder) / args.algo / f"{EnvironmentName(args.env)}_study.log")
            extra += ["--storage", storage]
        elif "://" in storage:
            check_storage(storage)
        if study_name is None:
            study_name = f"{args.algo}_{EnvironmentName(args.env)}"
            extra += ["--study-name", study_name]
        print(f"Optuna study {study_name!r} in {storage}")
    return [*argv, *extra]


def suggested_entry(env_id: str, algo: str, conf_file: str) -> str:
    """
    :param env_id: an environment no entry of ``conf_file`` covers
    :param algo: rl-zoo3 algorithm name
    :param conf_file: the hyperparameter file rl-zoo3 would read
    :return: a sentence with an entry to copy: the entry, in ``conf_file`` or else in the algorithm's packaged file, of
        the bundled environment with the same kind of actions (:data:`~sb3_safeq.zoo.config.REFERENCE_ENVS`); empty
        when neither file has one
    """
    env = gym.make(env_id)
    try:
        reference = REFERENCE_ENVS[action_kind(env.action_space)]
    finally:
        env.close()
    packaged = packaged_conf_file(algo)
    for path in (conf_file, packaged):
        if path is None:
            continue
        try:
            entry = read_env_hyperparams(path, reference)
        except MissingEntryError:
            continue
        if entry is not None:
            # The safety wrapper and its monitor columns are added by the experiment manager where the environment
            # has a support; copied to an environment without one, the wrapper would refuse it.
            kept = {key: value for key, value in entry.items() if key not in ("env_wrapper", "monitor_kwargs")}
            return (
                f"For example (the entry of {reference}, a bundled environment with the same kind of actions, in "
                f"{path}): {entry_template(env_id, kept)}"
            )
    return ""


def check_tensorboard() -> None:
    """
    :raises ZooUsageError: when ``-tb`` is given and TensorBoard is not installed (SB3 would fail with a traceback
        after the environments were built)
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ZooUsageError(
            "-tb/--tensorboard-log needs TensorBoard, which is not installed: install the 'zoo' extra "
            '(pip install "sb3-safeq[zoo]") or pip install tensorboard.'
        )


def check_storage(url: str) -> None:
    """
    Open a database storage before rl-zoo3 does, so that a wrong URL, a server that is down or a missing driver is
    one line naming the fix instead of an SQLAlchemy traceback.

    :param url: the ``--storage`` URL
    :raises ZooUsageError: when the storage cannot be opened
    """
    import optuna

    try:
        optuna.storages.RDBStorage(url)
    except Exception as error:  # SQLAlchemy and driver errors have no common base class worth naming here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ZooUsageError(
            f"--storage {url!r}: cannot open the Optuna storage ({type(error).__name__}: {reason}). Check the URL "
            "(dialect+driver://user:password@host:port/database), that the database server runs and accepts "
            'connections, and that its driver is installed (PostgreSQL: pip install "sb3-safeq[postgres]").'
        ) from error


def train(argv: list[str]) -> None:
    """
    Run rl-zoo3's training script.

    :param argv: the arguments after ``train`` (any option of ``python -m rl_zoo3.train``)
    """
    log_safety = NO_SAFETY_LOGGER not in argv
    argv = [argument for argument in argv if argument != NO_SAFETY_LOGGER]
    if "-h" in argv or "--help" in argv:
        register_algos()
        zoo_argv = argv
        print(
            f"sb3-safeq train: rl-zoo3's options below, and {NO_SAFETY_LOGGER} (do not add the SafetyLoggerCallback: "
            "no safety/* keys in TensorBoard and the CSV log for algorithms other than safeq). Default here: "
            f"--num-threads {DEFAULT_NUM_THREADS}.\n"
        )
    else:
        zoo_argv = prepare_arguments(argv)
    use_safe_experiment_manager(log_safety)
    sys.argv = ["sb3-safeq train", *zoo_argv]
    rl_zoo3.train.train()
