"""``python -m sb3_safeq.zoo train|enjoy ...``: see :mod:`sb3_safeq.zoo.cli`."""

import sys

from sb3_safeq.zoo.cli import main

sys.exit(main())
