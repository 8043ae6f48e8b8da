"""A user's own safe environments, registered with gymnasium on import (``--gym-packages lava_envs``)."""

from gymnasium.envs.registration import register

from lava_envs.lava_grid import LavaGridEnv
from lava_envs.safe_reach import SafeReachEnv

register(id="LavaGrid-v0", entry_point="lava_envs.lava_grid:LavaGridEnv", max_episode_steps=50)
register(id="SafeReach-v0", entry_point="lava_envs.safe_reach:SafeReachEnv", max_episode_steps=40)

__all__ = ["LavaGridEnv", "SafeReachEnv"]
