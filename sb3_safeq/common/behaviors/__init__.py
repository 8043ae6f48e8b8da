"""Behavior policies supported on the safe set: the protocol (:mod:`.base`) and the behaviors of each support kind."""

from sb3_safeq.common.behaviors.base import BehaviorPolicy, import_behavior, observations_to_numpy
from sb3_safeq.common.behaviors.box import (
    BoxBehaviorPolicy,
    CallableBoxBehavior,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.common.behaviors.mask import CallableDiscreteBehavior, DiscreteBehaviorPolicy, MaskedUniformBehavior

__all__ = [
    "BehaviorPolicy",
    "BoxBehaviorPolicy",
    "CallableBoxBehavior",
    "CallableDiscreteBehavior",
    "DiscreteBehaviorPolicy",
    "MaskedUniformBehavior",
    "TruncatedGaussianBehavior",
    "UniformBoxBehavior",
    "import_behavior",
    "observations_to_numpy",
]
