"""
Array helpers of the ``Discrete`` support: a boolean action mask per state (``True`` = safe), exposed by the
environment as ``action_masks()``, the convention of sb3-contrib (``MaskablePPO`` and ``ActionMasker`` work on the
same environments unchanged).
"""

from typing import Any

import numpy as np

#: Name of the environment method that returns the mask of the current observation (sb3-contrib convention).
ACTION_MASKS_METHOD = "action_masks"
#: ``info`` key under which the safety wrapper writes the mask of the *returned* observation.
ACTION_MASK_INFO_KEY = "action_mask"


def empty_mask_message(where: str) -> str:
    """
    :param where: description of the state that has no safe action
    :return: the explanation shared by every empty-mask error
    """
    return (
        f"{where} has an all-False action mask: the safe set gives it no safe action, so no safe-supported "
        "behavior policy can act there. The safe set must be *invariant*: every state reachable with safe "
        "actions needs at least one safe action. For tabular models compute the maximal invariant safe set with "
        "`sb3_safeq.common.tabular.maximal_invariant_safe_set`; otherwise make the mask more conservative earlier "
        "(e.g. add a look-ahead) so that such states are never reached."
    )


def as_action_mask(mask: Any, n_actions: int, source: str = f"{ACTION_MASKS_METHOD}()") -> np.ndarray:
    """
    Convert and validate one action mask.

    :param mask: the mask as returned by the environment (array-like of bools or 0/1)
    :param n_actions: number of discrete actions
    :param source: where the mask came from, for error messages
    :return: a boolean array of shape ``(n_actions,)``
    """
    array = np.asarray(mask)
    if array.shape != (n_actions,):
        raise ValueError(
            f"{source} gave an array of shape {array.shape}, expected ({n_actions},): one boolean per action of the "
            "Discrete action space (True = safe)."
        )
    if array.dtype != np.bool_:
        numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        if not numeric or not np.all(np.isin(array, (0, 1))):
            shown = np.unique(array)[:8] if numeric else array[:8]
            raise ValueError(
                f"{source} must contain booleans (or exactly 0/1), got values {shown} (dtype {array.dtype}): a "
                "probability or NaN is not a safe/unsafe decision."
            )
        array = array.astype(bool)
    return array
