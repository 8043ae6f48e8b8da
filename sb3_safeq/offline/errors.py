"""The error raised for a dataset that offline training cannot use as it is."""


class InvalidDatasetError(ValueError):
    """
    Raised when an offline dataset is malformed or breaks the safe-support contract (a missing array, a wrong shape,
    a NaN, an action outside its stored support, a dataset without supports). The message names the fix.
    """


#: What every refusal of a dataset without supports says (a model with ``behavior="estimated"`` accepts one).
NO_SUPPORT_MESSAGE = (
    "carries no safe supports ({where}). Offline SafeSupportQ needs the support of every observation: its soft target "
    "only bootstraps from actions inside the support of the next observation. Collect the data through "
    "sb3_safeq.SafetyWrapper (e.g. with `sb3-safeq collect` or `sb3_safeq.offline.collect_safe_dataset`), which writes "
    "the support of each observation into info['{key}']. If the logging policy is unknown and no supports were "
    'recorded, build the model with behavior="estimated": it clones the logging policy and estimates the supports '
    "from the data, which guarantees no more than the data do (docs/offline.md, Estimated behavior)."
)
