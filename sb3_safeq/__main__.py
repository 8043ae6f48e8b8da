"""``python -m sb3_safeq train|enjoy|bench ...``: the ``sb3-safeq`` command (see :mod:`sb3_safeq.cli`)."""

import sys

from sb3_safeq.cli import main

if __name__ == "__main__":
    sys.exit(main())
