"""Behavior policies supported on the safe set: the protocol (:mod:`.base`) and the behaviors of each support kind."""

from sb3_safeq.common.behaviors.base import BehaviorPolicy, import_behavior, observations_to_numpy
from sb3_safeq.common.behaviors.box import (
    BoxBehaviorPolicy,
    CallableBoxBehavior,
    TruncatedGaussianBehavior,
    UniformBoxBehavior,
)
from sb3_safeq.common.behaviors.estimated import BehaviorNotFittedError, EstimatedBehavior
from sb3_safeq.common.behaviors.estimated_box import EstimatedBoxBehavior
from sb3_safeq.common.behaviors.estimated_mask import EstimatedDiscreteBehavior
from sb3_safeq.common.behaviors.mask import CallableDiscreteBehavior, DiscreteBehaviorPolicy, MaskedUniformBehavior

__all__ = [
    "BehaviorNotFittedError",
    "BehaviorPolicy",
    "BoxBehaviorPolicy",
    "CallableBoxBehavior",
    "CallableDiscreteBehavior",
    "DiscreteBehaviorPolicy",
    "EstimatedBehavior",
    "EstimatedBoxBehavior",
    "EstimatedDiscreteBehavior",
    "MaskedUniformBehavior",
    "TruncatedGaussianBehavior",
    "UniformBoxBehavior",
    "import_behavior",
    "observations_to_numpy",
]
