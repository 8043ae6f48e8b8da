"""The error of a benchmark configuration that cannot run, reported as one line and exit code 2."""


class BenchConfigError(ValueError):
    """A benchmark configuration that cannot run (unknown algorithm or environment, missing hyperparameters)."""


__all__ = ["BenchConfigError"]
