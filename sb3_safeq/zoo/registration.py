"""Add SafeSupportQ (``safeq``) and MaskablePPO (``ppo_mask``) to rl-zoo3's tables, on request only."""

from collections.abc import Callable
from typing import Any

import rl_zoo3
import rl_zoo3.hyperparams_opt
from rl_zoo3.hyperparams_opt import convert_onpolicy_params
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_safeq.safeq import SafeSupportQ
from sb3_safeq.zoo.hyperparams_opt import convert_safeq_params, sample_ppo_mask_params, sample_safeq_params

Sampler = Callable[..., dict[str, Any]]
Converter = Callable[[dict[str, Any]], dict[str, Any]]

#: The algorithms the entry points add to rl-zoo3: name -> (class, Optuna sampler, trial converter).
ZOO_ALGOS: dict[str, tuple[type[BaseAlgorithm], Sampler, Converter]] = {
    "safeq": (SafeSupportQ, sample_safeq_params, convert_safeq_params),
    "ppo_mask": (MaskablePPO, sample_ppo_mask_params, convert_onpolicy_params),
}


def register_algos() -> None:
    """
    Add :data:`ZOO_ALGOS` to ``rl_zoo3.ALGOS``, ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER`` (the pattern sbx
    uses). rl-zoo3 has no plugin mechanism, and its ``--algo`` choices are read from ``ALGOS`` when its parser is
    built, so this must run before ``rl_zoo3.train.train()`` or ``rl_zoo3.enjoy.enjoy()``. Calling it again changes
    nothing.
    """
    for name, (algo_class, sampler, converter) in ZOO_ALGOS.items():
        rl_zoo3.ALGOS[name] = algo_class
        rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER[name] = sampler
        rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER[name] = converter  # type: ignore[assignment]  # a dict of functions
