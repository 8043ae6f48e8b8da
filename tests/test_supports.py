"""
The array helpers of the Box support kind (``common/supports/box_utils.py``): validation of one safe box against the
action space, clipping into boxes, detection of empty boxes, and the scaling between environment and agent units.
"""

import numpy as np
import pytest
from gymnasium import spaces

from sb3_safeq.common.supports.box_utils import as_safe_bounds, clip_into, empty_boxes
from tests.helpers import ACTION_HIGH, ACTION_LOW, SCALER


def test_clip_into_and_scaler() -> None:
    boxes = np.array([[[-2.0, 1.0, -0.5], [0.5, 1.0, -0.25]]], dtype=np.float32)
    actions = np.array([[7.0, 0.9999, np.float32(-0.37)]], dtype=np.float64)
    clipped = clip_into(actions, boxes)
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, [[0.5, 1.0, np.float32(-0.37)]])
    np.testing.assert_array_equal(SCALER.to_agent(np.stack([ACTION_LOW, ACTION_HIGH])), [[-1, -1, -1], [1, 1, 1]])
    values = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    np.testing.assert_allclose(SCALER.to_agent(SCALER.to_env(values)), values, atol=1e-5)
    np.testing.assert_array_equal(empty_boxes(np.array([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 0.5]]])), [0, 1])


def test_bad_bounds_fail_clearly() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match="outside the action space"):
        as_safe_bounds(([-1.5, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="outside the action space"):
        as_safe_bounds(([-1.0, 0.0], [0.0, 1.01]), space)
    with pytest.raises(ValueError, match="NaN"):
        as_safe_bounds(([np.nan, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="NaN"):
        as_safe_bounds(([-np.inf, 0.0], [0.0, 0.5]), space)
    with pytest.raises(ValueError, match="shape"):
        as_safe_bounds(([0.0, 0.0, 0.0], [0.0, 0.5, 1.0]), space)
    # Rounding noise just outside the space is clipped back in; an empty box is returned as such.
    np.testing.assert_array_equal(as_safe_bounds(([-1.0 - 1e-9, 0.0], [0.0, 1.0 + 1e-9]), space), [[-1, 0], [0, 1]])
    assert empty_boxes(as_safe_bounds(([0.5, 0.0], [0.0, 0.5]), space))
