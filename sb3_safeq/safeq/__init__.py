from sb3_safeq.common.supports.base import InducedActions
from sb3_safeq.safeq.box_policies import BoxCnnPolicy, BoxMlpPolicy, BoxMultiInputPolicy, BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy
from sb3_safeq.safeq.safeq import SafeSupportQ

__all__ = [
    "BoxCnnPolicy",
    "BoxMlpPolicy",
    "BoxMultiInputPolicy",
    "BoxSafeSupportQPolicy",
    "CnnPolicy",
    "InducedActions",
    "MlpPolicy",
    "MultiInputPolicy",
    "SafeSupportQ",
    "SafeSupportQPolicy",
]
