"""
Optuna samplers and converters for rl-zoo3's ``-optimize`` (the ``HYPERPARAMS_SAMPLER`` and
``HYPERPARAMS_CONVERTER`` entries of ``safeq`` and ``ppo_mask``).

A sampler suggests raw parameters (``batch_size_pow``, ``net_arch`` names, ...) and returns constructor arguments; the
converter turns the raw parameters stored in a study back into constructor arguments, which is how rl-zoo3 reloads a
trial (``--storage ... --study-name ... --trial-id N``). Importing this module does not import rl-zoo3.
"""

import os
import socket
from typing import Any

import optuna

from sb3_safeq.safeq.arguments import EXPLORATION_MODES, EXTRACTIONS

#: Network sizes the search chooses from (critic and extraction head alike).
NET_ARCHS: dict[str, list[int]] = {"tiny": [64], "small": [64, 64], "medium": [256, 256]}
#: Trial user attribute naming the process that ran the trial (``host:pid``): tells the workers of a shared study apart.
WORKER_ATTR = "worker"


def record_worker(trial: optuna.Trial) -> None:
    """
    Store which process runs the trial (``hostname:pid``) as a user attribute, so the trials of a study shared by
    several workers (one machine or many) can be traced back to them.

    :param trial: the trial being sampled
    """
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


def convert_safeq_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw parameters of a SafeSupportQ trial into constructor arguments.

    :param sampled_params: the trial's parameters, as stored in the study (``trial.params``)
    :return: keyword arguments of :class:`~sb3_safeq.SafeSupportQ`
    """
    hyperparams = dict(sampled_params)
    hyperparams["batch_size"] = 2 ** hyperparams.pop("batch_size_pow")
    hyperparams["policy_kwargs"] = {"net_arch": NET_ARCHS[hyperparams.pop("net_arch")]}
    return hyperparams


def sample_safeq_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """
    Sample SafeSupportQ hyperparameters.

    The KL temperature ``alpha`` and the learning rate are searched on a log scale, together with the batch size,
    the network size, the target-update coefficient ``tau`` and the collecting policy (``exploration``). For Box
    actions the number of behavior samples of the sampled soft backup and the extraction objective are searched too.
    rl-zoo3 passes ``n_actions`` = the action dimension for Box action spaces and 0 for the others (it sizes DDPG/TD3
    noise with it), which is how the sampler tells them apart.

    :param trial: the Optuna trial
    :param n_actions: action dimension for Box action spaces, 0 otherwise
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused: SafeSupportQ has no HER variant)
    :return: keyword arguments of :class:`~sb3_safeq.SafeSupportQ`
    """
    record_worker(trial)
    batch_size_pow = trial.suggest_int("batch_size_pow", 5, 9)  # 32 to 512
    sampled_params: dict[str, Any] = {
        "alpha": trial.suggest_float("alpha", 1e-3, 1.0, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "batch_size_pow": batch_size_pow,
        "tau": trial.suggest_float("tau", 1e-3, 0.1, log=True),
        "net_arch": trial.suggest_categorical("net_arch", list(NET_ARCHS)),
        "exploration": trial.suggest_categorical("exploration", list(EXPLORATION_MODES)),
    }
    if n_actions > 0:
        sampled_params["n_behavior_samples"] = trial.suggest_int("n_behavior_samples", 4, 64, log=True)
        sampled_params["extraction"] = trial.suggest_categorical("extraction", list(EXTRACTIONS))
    trial.set_user_attr("batch_size", 2**batch_size_pow)
    return convert_safeq_params(sampled_params)


def sample_ppo_mask_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """
    Sample MaskablePPO hyperparameters: rl-zoo3's PPO search (MaskablePPO takes the same arguments), with the worker
    recorded as for SafeSupportQ. Trials are reloaded with rl-zoo3's on-policy converter.

    :param trial: the Optuna trial
    :param n_actions: action dimension for Box action spaces, 0 otherwise
    :param n_envs: number of environments
    :param additional_args: rl-zoo3's extra arguments
    :return: keyword arguments of ``sb3_contrib.MaskablePPO``
    """
    # Imported here: importing rl_zoo3 patches gymnasium's TimeLimit, which only the entry points may do.
    from rl_zoo3.hyperparams_opt import sample_ppo_params

    record_worker(trial)
    return sample_ppo_params(trial, n_actions, n_envs, additional_args)


__all__ = [
    "NET_ARCHS",
    "WORKER_ATTR",
    "convert_safeq_params",
    "record_worker",
    "sample_ppo_mask_params",
    "sample_safeq_params",
]
