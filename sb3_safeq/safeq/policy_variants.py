"""The policy classes of SafeSupportQ behind each policy name, by support kind."""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from sb3_safeq.common.supports.base import SupportKind
from sb3_safeq.safeq.box_policies import BoxCnnPolicy, BoxMlpPolicy, BoxMultiInputPolicy, BoxSafeSupportQPolicy
from sb3_safeq.safeq.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SafeSupportQPolicy

#: The policy class behind each policy name, by support kind (``SupportKind.name``): the names resolve to the first
#: column before the action space is known, and to their kind's class in ``_setup_model``. A new kind adds a column.
POLICY_VARIANTS: dict[type[BasePolicy], dict[str, type[BasePolicy]]] = {
    MlpPolicy: {"mask": MlpPolicy, "box": BoxMlpPolicy, "polytope": BoxMlpPolicy},
    CnnPolicy: {"mask": CnnPolicy, "box": BoxCnnPolicy, "polytope": BoxCnnPolicy},
    MultiInputPolicy: {"mask": MultiInputPolicy, "box": BoxMultiInputPolicy, "polytope": BoxMultiInputPolicy},
}
#: The base class of the policies of each support kind (a user's own policy class subclasses it).
#: The polytope kind uses the box kind's policies: the kind object carries what differs (the head's map onto the set).
POLICY_BASES: dict[str, type[BasePolicy]] = {
    "mask": SafeSupportQPolicy,
    "box": BoxSafeSupportQPolicy,
    "polytope": BoxSafeSupportQPolicy,
}


def resolve_policy_class(policy_class: Any, support_kind: SupportKind, action_space: spaces.Space) -> type[BasePolicy]:
    """
    :param policy_class: the class a policy name resolved to (a first-column class of :data:`POLICY_VARIANTS`), or a
        user's policy class
    :param support_kind: the environment's support kind
    :param action_space: the environment's action space (for the error message)
    :return: the policy class for that kind
    :raises ValueError: for a class of another kind
    """
    variants = POLICY_VARIANTS.get(policy_class)
    if variants is not None:
        policy_class = variants[support_kind.name]
    expected = POLICY_BASES[support_kind.name]
    if not (isinstance(policy_class, type) and issubclass(policy_class, expected)):
        raise ValueError(
            f"The policy class {policy_class!r} does not fit the action space {action_space!r}: use 'MlpPolicy', "
            f"'CnnPolicy' or 'MultiInputPolicy', or a subclass of {expected.__name__}."
        )
    return policy_class
