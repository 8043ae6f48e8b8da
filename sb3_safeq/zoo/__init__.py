"""
rl-zoo3 integration: ``python -m sb3_safeq.zoo train|enjoy ...`` and the ``sb3-safeq`` console script.

Importing this package changes nothing: SafeSupportQ (``safeq``) and MaskablePPO (``ppo_mask``) are added to
rl-zoo3's algorithm, sampler and converter tables only by :func:`sb3_safeq.zoo.registration.register_algos`, which the
entry points (:mod:`sb3_safeq.zoo.cli`) call before they hand over to rl-zoo3.
"""
