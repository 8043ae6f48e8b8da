from sb3_safeq.safeq.box_policies import BoxCnnPolicy, BoxMlpPolicy, BoxMultiInputPolicy, BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy
from sb3_safeq.safeq.safeq import InducedActions, SafeSupportQ

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
