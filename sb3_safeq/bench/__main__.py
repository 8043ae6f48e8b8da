"""``python -m sb3_safeq.bench``: the benchmark (see :mod:`sb3_safeq.bench.cli`)."""

import sys

from sb3_safeq.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
