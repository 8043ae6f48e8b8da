import pytest
import torch as th

import sb3_safeq  # noqa: F401  (registers the safe environments)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    # The networks under test are tiny: one thread per pytest-xdist worker is fastest on a 2-core machine, and
    # several threads per worker make each step orders of magnitude slower when the cores are shared.
    th.set_num_threads(1)
