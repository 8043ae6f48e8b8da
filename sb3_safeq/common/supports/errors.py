"""The errors raised when a safe support is missing or empty."""


class EmptySupportError(RuntimeError):
    """Raised when a state that must be acted in has no safe action (an all-False mask, an empty box)."""


class MissingSupportError(ValueError):
    """Raised when an environment exposes no safe support (no ``action_masks()`` / ``safe_action_bounds()``)."""
