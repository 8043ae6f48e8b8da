from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy
from sb3_safeq.safeq.safeq import SafeSupportQ

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "SafeSupportQ", "SafeSupportQPolicy"]
