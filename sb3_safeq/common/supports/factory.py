"""The map from an action space to its kind of safe support, as sb3-contrib maps an action space to a distribution."""

from gymnasium import spaces

from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.common.supports.box import BoxSupport
from sb3_safeq.common.supports.mask import MaskSupport
from sb3_safeq.common.supports.polytope import PolytopeSupport

#: The registered support kinds, tried in order (a ``ConstrainedBox`` is a ``Box`` too: the polytope kind comes first):
#: a new kind is one module plus an entry here.
SUPPORT_KINDS: tuple[type[SupportKind], ...] = (MaskSupport, PolytopeSupport, BoxSupport)
#: The action-space classes some kind describes (what SB3 checks the environment against).
SUPPORTED_ACTION_SPACES: tuple[type[spaces.Space], ...] = tuple(kind.action_space_type for kind in SUPPORT_KINDS)


def find_support_kind(action_space: spaces.Space) -> SupportKind | None:
    """
    :param action_space: an action space
    :return: the kind of safe support of that action space, None when no kind describes it
    """
    for kind in SUPPORT_KINDS:
        if kind.accepts(action_space):
            return kind(action_space)
    return None


def make_support_kind(action_space: spaces.Space) -> SupportKind:
    """
    :param action_space: the environment's action space
    :return: the kind of safe support of that action space
    :raises ValueError: for action spaces SafeSupportQ does not handle, with what to do instead
    """
    kind = find_support_kind(action_space)
    if kind is None:
        raise ValueError(
            f"SafeSupportQ does not support the action space {action_space!r}: it supports "
            "`gymnasium.spaces.Discrete` actions with an `action_masks()` method giving the safe actions, and "
            "`gymnasium.spaces.Box` actions with a `safe_action_bounds()` method giving the box of safe actions, and "
            "`sb3_safeq.ConstrainedBox` actions with a `safe_action_constraints()` method giving linear constraints "
            "A a <= b on the safe actions. For "
            "MultiDiscrete or MultiBinary actions, flatten them into one Discrete space (and its mask)."
        )
    return kind
