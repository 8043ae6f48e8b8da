"""
Benchmarks of sb3-safeq: ``sb3-safeq bench`` (also ``python -m sb3_safeq.bench``), see :mod:`sb3_safeq.bench.cli`.

Importing this package imports none of the benchmark's dependencies: the entry points check the ``bench`` extra
(:data:`COMMAND`) before they import :mod:`sb3_safeq.bench.cli`.
"""

from sb3_safeq.commands import EXTRA_MODULES, Command

#: The ``bench`` sub-command. Every module of the extra is checked first: the report imports pandas and matplotlib
#: only once the runs are done, which must not be the first time a missing one is noticed.
COMMAND = Command("sb3_safeq.bench.cli:main", extra="bench", requires=EXTRA_MODULES["bench"])
