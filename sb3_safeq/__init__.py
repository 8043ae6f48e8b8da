"""sb3-safeq: Safe-Support Q-Learning for Stable-Baselines3."""

import os

from sb3_safeq.common.behavior import (
    BehaviorPolicy,
    CallableDiscreteBehavior,
    DiscreteBehaviorPolicy,
    MaskedUniformBehavior,
)
from sb3_safeq.common.box_behavior import (
    BoxBehaviorPolicy,
    CallableBoxBehavior,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.common.buffers import SafeDictReplayBuffer, SafeReplayBuffer
from sb3_safeq.common.callbacks import SafetyLoggerCallback
from sb3_safeq.common.support import EmptySupportError, MissingSupportError
from sb3_safeq.common.wrappers import SafetyCounters, SafetyWrapper, UnsafeVisitError
from sb3_safeq.envs import register_envs
from sb3_safeq.safeq import SafeSupportQ

# Registering the bundled environments only adds new ids to gymnasium's registry; nothing else is changed.
register_envs()

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "BehaviorPolicy",
    "BoxBehaviorPolicy",
    "CallableBoxBehavior",
    "CallableDiscreteBehavior",
    "DiscreteBehaviorPolicy",
    "EmptySupportError",
    "MaskedUniformBehavior",
    "MissingSupportError",
    "SafeDictReplayBuffer",
    "SafeReplayBuffer",
    "SafeSupportQ",
    "SafetyCounters",
    "SafetyLoggerCallback",
    "SafetyWrapper",
    "TruncatedGaussianBehavior",
    "UniformBoxBehavior",
    "UnsafeVisitError",
    "register_envs",
]
