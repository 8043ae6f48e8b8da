"""
The kinds of safe support, one module each, chosen from the action space by :func:`make_support_kind`.

- :mod:`~sb3_safeq.common.supports.base`: :class:`SupportKind`, what every kind implements;
- :mod:`~sb3_safeq.common.supports.errors`: the errors of a missing or empty support;
- :mod:`~sb3_safeq.common.supports.mask`: boolean action masks of ``Discrete`` actions (``action_masks()``);
- :mod:`~sb3_safeq.common.supports.box`: per-state safe boxes of ``Box`` actions (``safe_action_bounds()``);
- :mod:`~sb3_safeq.common.supports.mask_utils`, :mod:`~sb3_safeq.common.supports.box_utils`: the array helpers of
  each kind (validation, geometry, unit conversion), which the behavior policies and the policies build on;
- :mod:`~sb3_safeq.common.supports.factory`: :func:`make_support_kind`, the map from an action space to its kind.

This ``__init__`` imports nothing: the helper modules are imported by the behavior policies, which the kind modules
import in turn.
"""
