"""
Offline SafeSupportQ: datasets of safe behavior (Minari, saved replay buffers, plain arrays), their validation, and
their collection inside the safe support. Training on them is ``SafeSupportQ.learn_offline``.
"""

from sb3_safeq.offline.collect import collect_safe_dataset
from sb3_safeq.offline.dataset import load_offline_dataset
from sb3_safeq.offline.errors import InvalidDatasetError
from sb3_safeq.offline.transitions import AgentTransitions, SafeTransitions

__all__ = ["AgentTransitions", "InvalidDatasetError", "SafeTransitions", "collect_safe_dataset", "load_offline_dataset"]
