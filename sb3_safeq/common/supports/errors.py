"""The errors raised, and the warning given, when a safe support is missing or empty."""

import contextlib
import warnings
from collections.abc import Iterator


class EmptySupportError(RuntimeError):
    """Raised when a state that must be acted in has no safe action (an all-False mask, an empty box)."""


class MissingSupportError(ValueError):
    """Raised when an environment exposes no safe support (no ``action_masks()`` / ``safe_action_bounds()``)."""


class PredictWithoutSupportWarning(UserWarning):
    """
    Given by ``SafeSupportQ.predict`` called without the safe support of the observations: the action is then the
    extraction head's alone, which nothing restricts to the safe set.
    """


@contextlib.contextmanager
def acting_without_support() -> Iterator[None]:
    """Silence :class:`PredictWithoutSupportWarning` in the block: for code that leaves the support out on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictWithoutSupportWarning)
        yield
