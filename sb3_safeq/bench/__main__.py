"""``python -m sb3_safeq.bench``: the benchmark (see :mod:`sb3_safeq.bench.cli`)."""

import sys

from sb3_safeq.bench import COMMAND
from sb3_safeq.commands import run_command
from sb3_safeq.zoo.errors import ZooUsageError

if __name__ == "__main__":
    # Through run_command, not bench.cli directly: a missing bench extra gives a one-line message, not a traceback.
    sys.exit(run_command("sb3-safeq bench", COMMAND, sys.argv[1:], usage_errors=(ZooUsageError,)))
