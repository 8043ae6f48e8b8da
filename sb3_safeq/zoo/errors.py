"""The error the entry points report as a one-line message and exit code 2, instead of a traceback."""


class ZooUsageError(ValueError):
    """A command line or hyperparameter file that cannot work, with what is wrong and how to fix it."""
