"""Statistics of the benchmark: bootstrap intervals over seeds and the time to reach a target return."""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Resamples of the bootstrap intervals.
N_BOOTSTRAP = 2000
#: Seed of the bootstrap resampling (the intervals are reproducible).
BOOTSTRAP_SEED = 0


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """
    Mean and percentile bootstrap interval of the mean (NaN values are dropped), by ``scipy.stats.bootstrap``.

    :param values: one value per seed
    :param confidence: coverage of the interval
    :param n_resamples: bootstrap resamples
    :param seed: seed of the resampling
    :return: ``(mean, low, high)``; all NaN without values, ``low == high == mean`` with one value
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(array.mean())
    if array.size == 1:
        return mean, mean, mean
    # Percentile, not SciPy's default BCa: the intervals of the published report were percentile ones, and BCa is
    # undefined (NaN, with a warning) when every seed gives the same value, e.g. zero unsafe visits.
    result = stats.bootstrap(
        (array,),
        np.mean,
        n_resamples=n_resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def target_return(best: float, fraction: float = 0.9) -> float:
    """
    The return that counts as reaching ``fraction`` of the best one: ``best - (1 - fraction) * |best|``, so that it
    is also below the best for negative returns (e.g. -14.3 for a best of -13).

    :param best: best safe return of the environment
    :param fraction: the fraction (0.9: within 10% of the best)
    :return: the target
    """
    return best - (1 - fraction) * abs(best)


def time_to_target(times: Sequence[float], returns: Sequence[float], target: float) -> float:
    """
    :param times: wall time (training only) or environment steps of each point of a learning curve
    :param returns: evaluation return of each point
    :param target: the return to reach
    :return: the time (or steps) of the first point at or above the target, NaN if never reached
    """
    for time_s, value in zip(times, returns, strict=True):
        if value >= target:
            return float(time_s)
    return math.nan
