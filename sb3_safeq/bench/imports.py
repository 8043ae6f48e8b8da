"""
The user's own code the benchmark imports by name: packages that register environments (``--gym-packages``, as
rl-zoo3) and modules that register algorithms (``--algo-module``).
"""

import importlib
from collections.abc import Iterable

from sb3_safeq.bench.errors import BenchConfigError


def import_user_modules(names: Iterable[str], option: str) -> None:
    """
    Import modules for their side effects (gymnasium registrations, :func:`~sb3_safeq.bench.algorithms.register_algo`
    calls). The benchmark calls it in the invoking process and, for ``--gym-packages``, again in every run process,
    which starts fresh and would not know the environments otherwise.

    :param names: module names (``my_envs``, ``my_pkg.bench_algos``)
    :param option: the command-line option that named them (for the message)
    :raises BenchConfigError: a module that cannot be imported, naming it and the fix
    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise BenchConfigError(
                f"{option}: cannot import {name!r} ({type(error).__name__}: {error}); install the package, or add the "
                "folder that holds it to PYTHONPATH."
            ) from error


__all__ = ["import_user_modules"]
