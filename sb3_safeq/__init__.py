"""sb3-safeq: Safe-Support Q-Learning for Stable-Baselines3."""

import os

from sb3_safeq.common.behaviors import (
    BehaviorPolicy,
    BoxBehaviorPolicy,
    CallableBoxBehavior,
    CallableDiscreteBehavior,
    DiscreteBehaviorPolicy,
    MaskedUniformBehavior,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.common.behaviors.polytope import PolytopeBehaviorPolicy, UniformPolytopeBehavior
from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer
from sb3_safeq.common.callbacks import SafetyLoggerCallback
from sb3_safeq.common.eval_callback import SafeEvalCallback
from sb3_safeq.common.safety_record import RecoveredSafetyRecord, recover_safety_record
from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.common.supports.constrained_box import ConstrainedBox
from sb3_safeq.common.supports.errors import (
    EmptySupportError,
    MissingSupportError,
    PredictWithoutSupportWarning,
    acting_without_support,
)
from sb3_safeq.common.supports.factory import make_support_kind
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper, UnsafeVisitError
from sb3_safeq.envs import register_envs
from sb3_safeq.safeq import InducedActions, SafeSupportQ

# Registering the bundled environments only adds new ids to gymnasium's registry; nothing else is changed.
register_envs()

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "BehaviorPolicy",
    "BoxBehaviorPolicy",
    "CallableBoxBehavior",
    "CallableDiscreteBehavior",
    "ConstrainedBox",
    "DiscreteBehaviorPolicy",
    "EmptySupportError",
    "InducedActions",
    "MaskedUniformBehavior",
    "MissingSupportError",
    "PolytopeBehaviorPolicy",
    "PredictWithoutSupportWarning",
    "RecoveredSafetyRecord",
    "SafeDictReplayBuffer",
    "SafeEvalCallback",
    "SafeReplayBuffer",
    "SafeSupportQ",
    "SafetyCounters",
    "SafetyLoggerCallback",
    "SafetyWrapper",
    "SupportKind",
    "TruncatedGaussianBehavior",
    "UniformBoxBehavior",
    "UniformPolytopeBehavior",
    "UnsafeVisitError",
    "acting_without_support",
    "make_support_kind",
    "recover_safety_record",
    "register_envs",
]
