"""
Safe environments: each step reports the ground-truth ``info["cost"]`` and each env exposes the safe support of the
current state: ``action_masks()`` (the sb3-contrib convention) for Discrete actions, ``safe_action_bounds()`` (a
box ``(low, high)`` inside the Box action space) for continuous ones, and ``safe_action_constraints()`` (linear
constraints ``A a <= b``, a polytope; with ``safe_action_bounds()`` its largest inner box) for the constrained ones.

Call :func:`register_envs` (the package does it on import) to make them available to ``gymnasium.make``.
"""

import gymnasium as gym

from sb3_safeq.envs.cartpole import SafeCartPoleEnv
from sb3_safeq.envs.cliff_walking import SafeCliffWalkingEnv
from sb3_safeq.envs.double_integrator import SafeDoubleIntegratorEnv
from sb3_safeq.envs.frozen_lake import SafeFrozenLakeEnv
from sb3_safeq.envs.obstacle_double_integrator import SafeObstacleDoubleIntegratorEnv
from sb3_safeq.envs.point_mass import SafePointMassEnv
from sb3_safeq.envs.unicycle import SafeUnicycleEnv

# id -> (entry point, kwargs, max_episode_steps)
_ENV_SPECS: dict[str, tuple[str, dict, int]] = {
    "SafeCliffWalking-v0": ("sb3_safeq.envs.cliff_walking:SafeCliffWalkingEnv", {"is_slippery": False}, 100),
    "SafeCliffWalkingSlippery-v0": ("sb3_safeq.envs.cliff_walking:SafeCliffWalkingEnv", {"is_slippery": True}, 100),
    "SafeFrozenLake8x8-v0": (
        "sb3_safeq.envs.frozen_lake:SafeFrozenLakeEnv",
        {"map_name": "8x8", "is_slippery": True},
        200,
    ),
    "SafeCartPole-v0": ("sb3_safeq.envs.cartpole:SafeCartPoleEnv", {"position_limit": 1.0}, 500),
}

SAFE_DISCRETE_ENV_IDS: tuple[str, ...] = tuple(_ENV_SPECS)
"""Ids of the bundled safe environments; all have a Discrete action space and ``action_masks()``."""

_CONTINUOUS_ENV_SPECS: dict[str, tuple[str, dict, int]] = {
    "SafePointMass-v0": ("sb3_safeq.envs.point_mass:SafePointMassEnv", {}, 200),
    "SafeDoubleIntegrator-v0": ("sb3_safeq.envs.double_integrator:SafeDoubleIntegratorEnv", {}, 200),
}

SAFE_CONTINUOUS_ENV_IDS: tuple[str, ...] = tuple(_CONTINUOUS_ENV_SPECS)
"""Ids of the bundled continuous safe environments; all have a Box action space and ``safe_action_bounds()``."""

_CONSTRAINED_ENV_SPECS: dict[str, tuple[str, dict, int]] = {
    "SafeObstacleDoubleIntegrator-v0": (
        "sb3_safeq.envs.obstacle_double_integrator:SafeObstacleDoubleIntegratorEnv",
        {},
        200,
    ),
    "SafeUnicycle-v0": ("sb3_safeq.envs.unicycle:SafeUnicycleEnv", {}, 200),
}

SAFE_CONSTRAINED_ENV_IDS: tuple[str, ...] = tuple(_CONSTRAINED_ENV_SPECS)
"""
Ids of the bundled environments whose safe actions are linear constraints (control barrier functions): Box action
space, ``safe_action_constraints() -> (A, b)`` with at most ``max_constraints`` rows, and ``safe_action_bounds()``
(the polytope's largest inner box).
"""


def register_envs() -> None:
    """Register the bundled safe environments with gymnasium; ids already registered are left untouched."""
    specs = {**_ENV_SPECS, **_CONTINUOUS_ENV_SPECS, **_CONSTRAINED_ENV_SPECS}
    for env_id, (entry_point, kwargs, max_episode_steps) in specs.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs, max_episode_steps=max_episode_steps)


__all__ = [
    "SAFE_CONSTRAINED_ENV_IDS",
    "SAFE_CONTINUOUS_ENV_IDS",
    "SAFE_DISCRETE_ENV_IDS",
    "SafeCartPoleEnv",
    "SafeCliffWalkingEnv",
    "SafeDoubleIntegratorEnv",
    "SafeFrozenLakeEnv",
    "SafeObstacleDoubleIntegratorEnv",
    "SafePointMassEnv",
    "SafeUnicycleEnv",
    "register_envs",
]
