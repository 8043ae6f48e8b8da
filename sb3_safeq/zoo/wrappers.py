"""
``env_wrapper`` hooks for rl-zoo3 hyperparameter files that put the :class:`~sb3_safeq.SafetyWrapper` *inside*
SB3's ``Monitor``.

rl-zoo3 builds each environment with ``make_vec_env(..., wrapper_class=env_wrapper)``, which applies ``env_wrapper``
*outside* the ``Monitor``. ``Monitor(info_keywords=("episode_cost", "episode_unsafe_visits"))`` reads those keys from
the ``info`` of the last step of an episode as the step passes through it, so a ``SafetyWrapper`` outside it writes
them too late (``Monitor`` raises ``KeyError``). These hooks insert the ``SafetyWrapper`` between the ``Monitor`` and
the environment instead, so the episode cost and unsafe visits reach ``monitor.csv``::

    SafeCliffWalking-v0:
      env_wrapper: sb3_safeq.zoo.wrappers.safety_wrapper
      monitor_kwargs: dict(info_keywords=("episode_cost", "episode_unsafe_visits"))
"""

import gymnasium as gym
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor

from sb3_safeq.common.wrappers import SafetyWrapper


def safety_wrapper(env: gym.Env, shield: bool = False, strict: bool = False) -> gym.Env:
    """
    Add a :class:`~sb3_safeq.SafetyWrapper` to an environment, inside its ``Monitor`` when it has one.

    The wrapper only counts (unsafe visits, costs, out-of-support actions) unless ``shield`` is set: unshielded
    baselines (DQN, SAC, ...) then act freely and pay for it in unsafe visits.

    :param env: the environment, as rl-zoo3 passes it to ``env_wrapper`` (a ``Monitor`` around the registered env)
    :param shield: replace actions outside the safe support by safe ones (counted as shielded actions)
    :param strict: raise :class:`~sb3_safeq.UnsafeVisitError` on the first unsafe visit
    :return: the same ``Monitor`` with the ``SafetyWrapper`` inside it, or the wrapped environment when there is no
        ``Monitor`` on top; an environment that already has a ``SafetyWrapper`` is returned unchanged
    """
    if is_wrapped(env, SafetyWrapper):
        return env
    if isinstance(env, Monitor):
        # Nothing has stepped the Monitor yet (rl-zoo3 wraps right after creation), so swapping its inner
        # environment is invisible to it; the safety wrapper then sits below the Monitor's episode bookkeeping.
        env.env = SafetyWrapper(env.env, shield=shield, strict=strict)
        return env
    return SafetyWrapper(env, shield=shield, strict=strict)


def shielded_safety_wrapper(env: gym.Env) -> gym.Env:
    """
    :func:`safety_wrapper` with ``shield=True``: out-of-support actions are replaced by safe ones. Select it from the
    command line with ``-params env_wrapper:"'sb3_safeq.zoo.wrappers.shielded_safety_wrapper'"``.

    :param env: the environment, as rl-zoo3 passes it to ``env_wrapper``
    :return: the environment with a shielding ``SafetyWrapper`` inside its ``Monitor``
    """
    return safety_wrapper(env, shield=True)
