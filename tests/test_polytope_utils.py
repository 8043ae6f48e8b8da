"""
The geometry of the linear-constraint support (``sb3_safeq.common.supports.polytope_utils``): validation, storage,
units, membership, the linear programs, the projection, uniform sampling and the gauge map, on hand-made cases and
on random polytopes of every shape (thin, flat, one row, many rows, box only, empty).
"""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb3_safeq.common.supports import polytope_utils as pu
from sb3_safeq.common.supports.errors import EmptySupportError

SQUARE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
ONES = np.ones(2)
KINDS = ("box_only", "one_row", "many_rows", "thin", "flat", "empty")
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_polytope(kind: str, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    :return: ``A``, ``b``, ``low``, ``high`` of a random polytope of the given kind inside a random action box
    """
    rng = np.random.default_rng(seed)
    low = rng.uniform(-3.0, 0.0, dim)
    high = low + rng.uniform(0.5, 4.0, dim)
    centre = rng.uniform(low + 0.2 * (high - low), high - 0.2 * (high - low))
    normal = rng.normal(size=dim)
    normal /= np.linalg.norm(normal)
    if kind == "box_only":
        return np.zeros((0, dim)), np.zeros(0), low, high
    if kind == "one_row":
        return normal[None, :], np.array([normal @ centre]), low, high
    if kind == "many_rows":
        normals = rng.normal(size=(int(rng.integers(5, 13)), dim))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        width = np.min(high - low)
        return normals, normals @ centre + rng.uniform(0.05, 0.5, normals.shape[0]) * width, low, high
    if kind in ("thin", "flat", "empty"):
        half_width = {"thin": rng.uniform(1e-4, 1e-2), "flat": 0.0, "empty": -rng.uniform(1e-3, 0.1)}[kind]
        rows = np.stack([normal, -normal])
        return rows, np.array([normal @ centre + half_width, -(normal @ centre) + half_width]), low, high
    raise ValueError(kind)


def polygon_area_and_centroid(vertices: np.ndarray) -> tuple[float, np.ndarray]:
    """Shoelace formula for a convex polygon given counter-clockwise."""
    x, y = vertices[:, 0], vertices[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2.0
    centroid = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6.0 * area)
    return float(area), centroid


def box_corners(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.array(np.meshgrid(*zip(low, high, strict=True))).T.reshape(-1, len(low))


def as_tensors(*arrays: np.ndarray) -> list[th.Tensor]:
    """Batch of one, float64."""
    return [th.as_tensor(np.asarray(array), dtype=th.float64).unsqueeze(0) for array in arrays]


# Validation


def test_valid_constraints_come_back_as_float64_copies() -> None:
    matrix, offsets = np.array([[1, 2]]), [3]
    got_matrix, got_offsets = pu.validate_constraints((matrix, offsets), SQUARE, max_constraints=4)
    assert got_matrix.dtype == got_offsets.dtype == np.float64
    np.testing.assert_array_equal(got_matrix, [[1.0, 2.0]])
    got_matrix[0, 0] = 7.0
    assert matrix[0, 0] == 1  # a copy
    # A list pair and no rows at all are fine too.
    empty_matrix, empty_offsets = pu.validate_constraints([np.zeros((0, 2)), np.zeros(0)], SQUARE, 4)
    assert empty_matrix.shape == (0, 2) and empty_offsets.shape == (0,)


def test_plus_infinity_means_no_constraint() -> None:
    matrix, offsets = pu.validate_constraints((np.array([[1.0, 1.0], [3.0, 0.0]]), [0.5, np.inf]), SQUARE, 4)
    np.testing.assert_array_equal(matrix, [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(offsets, [0.5, pu.PADDING_B])


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        (np.zeros((2, 3)), "must return a pair"),
        ((np.zeros((1, 2)),), "of length 1"),
        ((np.zeros((2, 3)), np.zeros(3)), "Pass `A.T`"),
        ((np.zeros((3, 3)), np.zeros(3)), "3 columns but the action space has 2 axes"),
        ((np.zeros((2, 2)), np.zeros(3)), "A has 2 rows but b has 3"),
        ((np.zeros(2), np.zeros(1)), "A[None, :]"),
        ((np.zeros((1, 2)), np.zeros((1, 1))), "b.ravel()"),
        ((np.zeros((1, 2), dtype=bool), np.zeros(1)), "boolean mask"),
        ((np.zeros((1, 2), dtype=complex), np.zeros(1)), "real numbers"),
        ((np.array([["a", "b"]]), np.zeros(1)), "real numbers"),
        (([[1.0, 2.0], [3.0]], np.zeros(2)), "not an array of numbers"),
        ((np.array([[np.nan, 0.0]]), np.zeros(1)), "NaN or infinite entries in rows [0]"),
        ((np.array([[0.0, 0.0], [np.inf, 0.0]]), np.zeros(2)), "rows [1]"),
        ((np.zeros((1, 2)), np.array([np.nan])), "b has NaN or -inf"),
        ((np.zeros((1, 2)), np.array([-np.inf])), "A_i = 0, b_i = -1"),
        ((np.zeros((5, 2)), np.zeros(5)), "more than max_constraints=4"),
    ],
)
def test_bad_constraints_name_the_problem_and_the_fix(constraints: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^safe_action_constraints\(\)") as error:
        pu.validate_constraints(constraints, SQUARE, max_constraints=4)
    assert message in str(error.value)


def test_transposed_matrix_names_the_layout() -> None:
    with pytest.raises(ValueError) as error:
        pu.validate_constraints((np.zeros((2, 5)), np.zeros(5)), SQUARE, max_constraints=8, source="env.constraints()")
    assert "(m, action_dim) = (5, 2)" in str(error.value) and "A.T" in str(error.value)
    assert str(error.value).startswith("env.constraints()")


def test_one_axis_column_and_too_many_rows_say_how_to_fix() -> None:
    line = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    with pytest.raises(ValueError, match=r"A\[:, None\]"):
        pu.validate_constraints((np.zeros(3), np.zeros(3)), line, max_constraints=4)
    with pytest.raises(ValueError, match="Raise the environment's `max_constraints` to at least 9 "):
        pu.validate_constraints((np.zeros((9, 1)), np.zeros(9)), line, max_constraints=4)


def test_the_action_space_is_checked() -> None:
    with pytest.raises(ValueError, match="infinite bounds"):
        pu.validate_constraints((np.zeros((1, 2)), np.zeros(1)), spaces.Box(-np.inf, np.inf, (2,)), 4)


# Storage and units


def test_padding_round_trip_and_padding_rows_hold_everywhere() -> None:
    matrix, offsets = np.array([[1.0, -2.0], [0.5, 0.5]]), np.array([0.3, -0.1])
    stacked = pu.pad_constraints(matrix, offsets, max_constraints=5)
    assert stacked.shape == (5, 3) and stacked.dtype == np.float64
    np.testing.assert_array_equal(stacked[2:], [[0.0, 0.0, pu.PADDING_B]] * 3)
    back_matrix, back_offsets = pu.unpad_constraints(stacked)
    np.testing.assert_array_equal(back_matrix, matrix)
    np.testing.assert_array_equal(back_offsets, offsets)
    actions = np.random.default_rng(0).uniform(-1e6, 1e6, (100, 2))
    padding_matrix, padding_offsets = pu.split_constraints(stacked[2:])
    assert pu.contains(padding_matrix, padding_offsets, actions, tolerance=0.0).all()
    # An infeasible zero row (no safe action) survives the round trip.
    kept = pu.unpad_constraints(pu.pad_constraints(np.zeros((1, 2)), np.array([-1.0]), 3))
    np.testing.assert_array_equal(kept[1], [-1.0])
    with pytest.raises(ValueError, match="do not fit"):
        pu.pad_constraints(np.zeros((4, 2)), np.zeros(4), max_constraints=3)


def test_split_is_a_batched_view_of_tensors() -> None:
    stacked = th.arange(2 * 3 * 4, dtype=th.float32).reshape(2, 3, 4)
    matrix, offsets = pu.split_constraints(stacked)
    assert matrix.shape == (2, 3, 3) and offsets.shape == (2, 3)
    assert th.equal(offsets, stacked[..., 3]) and matrix.data_ptr() == stacked.data_ptr()


@given(seed=st.integers(0, 2**31), dim=st.integers(1, 4), degenerate=st.booleans())
@PROPERTY_SETTINGS
def test_agent_units_are_exact(seed: int, dim: int, degenerate: bool) -> None:
    rng = np.random.default_rng(seed)
    low = rng.uniform(-5.0, 1.0, dim)
    high = low + rng.uniform(0.1, 6.0, dim)
    if degenerate:
        high[0] = low[0]  # a single-point axis: its column becomes 0
    matrix, offsets = rng.normal(size=(4, dim)), rng.normal(size=4)
    stacked = pu.pad_constraints(matrix, offsets, max_constraints=6)
    agent = pu.constraints_to_agent(stacked, low, high)
    agent_actions = rng.uniform(-1.0, 1.0, (50, dim))
    env_actions = low + (agent_actions + 1.0) / 2.0 * (high - low)
    agent_matrix, agent_offsets = pu.split_constraints(agent)
    env_residuals = env_actions @ stacked[:, :-1].T - stacked[:, -1]
    agent_residuals = agent_actions @ agent_matrix.T - agent_offsets
    np.testing.assert_allclose(agent_residuals, env_residuals, atol=1e-9 * (1.0 + np.abs(env_residuals).max()))
    np.testing.assert_array_equal(agent[4:], [[0.0] * dim + [pu.PADDING_B]] * 2)
    if degenerate:
        np.testing.assert_array_equal(agent[:, 0], 0.0)
    # Batched: the leading dimensions are kept.
    assert pu.constraints_to_agent(np.stack([stacked, stacked]), low, high).shape == (2, 6, dim + 1)


# Membership


def test_tolerance_is_a_distance_invariant_to_row_scaling() -> None:
    for scale in (1e-3, 1.0, 1e4):
        matrix, offsets = scale * np.array([[1.0, 1.0]]) / math.sqrt(2.0), np.array([0.0])
        outward = np.array([1.0, 1.0]) / math.sqrt(2.0)
        assert pu.contains(matrix, offsets, 0.5e-6 * outward)
        assert not pu.contains(matrix, offsets, 2e-6 * outward)
        assert not pu.contains(matrix, offsets, 0.5e-6 * outward, tolerance=0.0)
    # The box: per axis, the same tolerance.
    assert pu.contains(np.zeros((0, 2)), np.zeros(0), np.array([1.0 + 5e-7, 0.0]), -ONES, ONES)
    assert not pu.contains(np.zeros((0, 2)), np.zeros(0), np.array([1.0 + 5e-6, 0.0]), -ONES, ONES)


def test_membership_is_batched_and_the_torch_twin_agrees() -> None:
    rng = np.random.default_rng(1)
    matrix, offsets = rng.normal(size=(8, 3, 2)), rng.normal(size=(8, 3))
    actions = rng.uniform(-1.5, 1.5, (8, 20, 2))
    numpy_inside = pu.contains(matrix[:, None], offsets[:, None], actions, -ONES, ONES)
    assert numpy_inside.shape == (8, 20) and 0 < numpy_inside.sum() < numpy_inside.size
    torch_inside = pu.contains_mask(*(th.as_tensor(x) for x in (actions, matrix, offsets, -ONES, ONES)))
    np.testing.assert_array_equal(torch_inside.numpy(), numpy_inside)


# Linear programs


def test_chebyshev_ball_of_known_sets() -> None:
    box = pu.chebyshev_center(np.zeros((0, 2)), np.zeros(0), -ONES, ONES)
    np.testing.assert_allclose(box.center, [0.0, 0.0], atol=1e-9)
    assert box.radius == pytest.approx(1.0)
    # Half of the square below the diagonal: the ball touches the diagonal and two sides.
    half = pu.chebyshev_center(np.array([[1.0, 1.0]]), np.array([0.0]), -ONES, ONES)
    assert half.radius == pytest.approx(2.0 / (2.0 + math.sqrt(2.0)), abs=1e-7)
    assert not half.is_empty() and not half.is_flat()
    # Outside the box: empty, with the signed radius giving how far.
    outside = pu.chebyshev_center(np.array([[1.0, 0.0]]), np.array([-2.0]), -ONES, ONES)
    assert outside.is_empty() and outside.radius == pytest.approx(-1.0, abs=1e-7)
    assert pu.chebyshev_center(np.zeros((1, 2)), np.array([-1.0]), -ONES, ONES).radius == -np.inf
    # A segment (two opposite rows): flat.
    segment = pu.chebyshev_center(np.array([[1.0, 1.0], [-1.0, -1.0]]), np.zeros(2), -ONES, ONES)
    assert segment.is_flat() and not segment.is_empty()


def test_single_point_axes_are_fixed() -> None:
    low, high = np.array([-1.0, 0.25]), np.array([1.0, 0.25])
    ball = pu.chebyshev_center(np.array([[1.0, 1.0]]), np.array([0.75]), low, high)
    assert ball.center[1] == 0.25 and ball.radius == pytest.approx(0.75, abs=1e-7)  # [-1, 0.5] on the free axis
    box_low, box_high = pu.largest_inner_box(np.array([[1.0, 1.0]]), np.array([0.75]), low, high)
    np.testing.assert_allclose([box_low, box_high], [[-1.0, 0.25], [0.5, 0.25]], atol=1e-7)
    point = pu.chebyshev_center(np.array([[1.0, 1.0]]), np.array([0.0]), np.full(2, 0.5), np.full(2, 0.5))
    assert point.radius == -np.inf  # every axis fixed, and the point violates the row


def test_inner_box_is_the_largest_on_a_grid() -> None:
    # Every box with corners on a 0.05 grid that fits: the returned one is at least as large.
    grid = np.linspace(-1.0, 1.0, 41)
    low_x, high_x, low_y, high_y = (g.ravel() for g in np.meshgrid(grid, grid, grid, grid, indexing="ij"))
    proper = (low_x < high_x) & (low_y < high_y)
    low_x, high_x, low_y, high_y = low_x[proper], high_x[proper], low_y[proper], high_y[proper]
    rng = np.random.default_rng(3)
    for m in (1, 1, 2, 3, 3):
        matrix = rng.normal(size=(m, 2))
        offsets = matrix @ rng.uniform(-0.5, 0.5, 2) + rng.uniform(0.2, 0.6, m)
        box_low, box_high = pu.largest_inner_box(matrix, offsets, -ONES, ONES)
        assert pu.contains(matrix, offsets, box_corners(box_low, box_high), tolerance=0.0).all()
        worst = np.maximum(matrix[:, :1] * low_x, matrix[:, :1] * high_x)
        worst = worst + np.maximum(matrix[:, 1:] * low_y, matrix[:, 1:] * high_y)
        fits = np.all(worst <= offsets[:, None], axis=0)
        assert np.prod(box_high - box_low) >= ((high_x - low_x) * (high_y - low_y))[fits].max() - 1e-9


def test_inner_box_of_empty_and_box_only_sets() -> None:
    box_low, box_high = pu.largest_inner_box(np.array([[1.0, 0.0]]), np.array([-2.0]), -ONES, ONES)
    assert np.all(box_low == np.inf) and np.all(box_high == -np.inf)
    box_low, box_high = pu.largest_inner_box(np.zeros((0, 2)), np.zeros(0), -ONES, 2 * ONES)
    np.testing.assert_allclose([box_low, box_high], [-ONES, 2 * ONES], atol=1e-7)


# Projection


def test_projection_of_known_cases() -> None:
    matrix, offsets = np.array([[1.0, 1.0]]), np.array([0.0])
    np.testing.assert_allclose(pu.project_onto_polytope(matrix, offsets, -ONES, ONES, ONES), [0.0, 0.0], atol=1e-12)
    # Past the end of the diagonal: the nearest point is the corner where the diagonal meets the box.
    np.testing.assert_allclose(
        pu.project_onto_polytope(matrix, offsets, -ONES, ONES, np.array([3.0, -0.5])), [1.0, -1.0], atol=1e-12
    )
    inside = np.array([-0.3, 0.1])
    assert np.array_equal(pu.project_onto_polytope(matrix, offsets, -ONES, ONES, inside), inside)
    with pytest.raises(EmptySupportError):
        pu.project_onto_polytope(np.array([[1.0, 0.0]]), np.array([-2.0]), -ONES, ONES, inside)
    with pytest.raises(EmptySupportError):
        pu.project_onto_polytope(np.zeros((1, 2)), np.array([-1.0]), -ONES, ONES, inside)
    batch = pu.project_onto_polytopes(
        np.stack([pu.pad_constraints(matrix, offsets, 3)] * 2), -ONES, ONES, np.array([[1.0, 1.0], [-0.3, 0.1]])
    )
    np.testing.assert_allclose(batch, [[0.0, 0.0], [-0.3, 0.1]], atol=1e-12)


@given(kind=st.sampled_from(KINDS), dim=st.integers(1, 4), seed=st.integers(0, 2**31))
@PROPERTY_SETTINGS
def test_random_polytopes_linear_programs_and_projection(kind: str, dim: int, seed: int) -> None:
    matrix, offsets, low, high = random_polytope(kind, dim, seed)
    ball = pu.chebyshev_center(matrix, offsets, low, high)
    assert ball.is_empty() == (kind == "empty")
    assert ball.is_flat() == (kind == "flat")
    if kind == "thin":
        assert 1e-5 < ball.radius < 1.1e-2
    rng = np.random.default_rng(seed)
    points = rng.uniform(low - (high - low), high + (high - low), (5, dim))
    box_low, box_high = pu.largest_inner_box(matrix, offsets, low, high)
    if kind == "empty":
        assert np.all(box_low > box_high)
        with pytest.raises(EmptySupportError):
            pu.project_onto_polytope(matrix, offsets, low, high, points[0])
        return
    assert pu.contains(matrix, offsets, ball.center, low, high)
    # The ball is inside: points at the radius in random directions.
    directions = rng.normal(size=(8, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert pu.contains(matrix, offsets, ball.center + ball.radius * directions, low, high).all()
    assert np.all(box_low <= box_high)
    # Exactly inside; a flat set's box is a point of it only within the tolerance (no box with volume fits).
    exact = 0.0 if kind != "flat" else pu.CONTAINS_TOLERANCE
    assert pu.contains(matrix, offsets, box_corners(box_low, box_high), low, high, tolerance=exact).all()
    for point in points:
        projected = pu.project_onto_polytope(matrix, offsets, low, high, point)
        assert pu.contains(matrix, offsets, projected, low, high)
        # The nearest point: no point of the set is on the far side of the normal at the projection.
        if kind != "flat":
            others = pu.sample_uniform(*as_tensors(matrix, offsets, low, high), 20)[0].numpy()
            assert np.all((point - projected) @ (others - projected).T <= 1e-6 * (1.0 + np.abs(point).max()))


def test_projection_cost_per_call_is_small() -> None:
    # A loose bound (the measured median is tens of microseconds): catches an accidental solver switch or a loop.
    import time

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(200):
        dim, rows = int(rng.integers(2, 5)), int(rng.integers(2, 9))
        matrix = rng.normal(size=(rows, dim))
        cases.append((matrix, rng.uniform(0.0, 1.0, rows), -np.ones(dim), np.ones(dim), rng.uniform(-3, 3, dim)))
    durations = []
    for case in cases:
        start = time.perf_counter()
        projected = pu.project_onto_polytope(*case)
        durations.append(time.perf_counter() - start)
        assert pu.contains(case[0], case[1], projected, case[2], case[3])
    assert np.median(durations) < 2e-3


# Uniform sampling


def test_rejection_samples_are_uniform() -> None:
    # The square cut by a slanted row: sample mean against the exact centroid, acceptance against the area.
    matrix, offsets = np.array([[1.0, 2.0]]), np.array([0.5])
    area, centroid = polygon_area_and_centroid(pu.polygon_vertices(matrix, offsets, -ONES, ONES))
    generator = th.Generator().manual_seed(0)
    samples, stats = pu.sample_uniform(
        *as_tensors(matrix, offsets, -ONES, ONES), 4000, generator=generator, return_stats=True
    )
    assert samples.shape == (1, 4000, 2) and int(stats.from_hit_and_run[0]) == 0
    assert pu.contains_mask(samples, *as_tensors(matrix, offsets), tolerance=0.0).all()
    assert float(stats.acceptance[0]) == pytest.approx(area / 4.0, abs=0.02)
    spread = samples[0].std(dim=0).numpy() / math.sqrt(4000)
    assert np.all(np.abs(samples[0].mean(dim=0).numpy() - centroid) < 4.0 * spread)


def test_thin_sets_are_sampled_by_hit_and_run_uniformly() -> None:
    # A thin triangle (1:20): rejection accepts ~2% of the box, too few for 64 samples; chains from the accepted
    # samples fill the rest, exactly uniform in law. The mean of many states' samples is the centroid.
    matrix = np.array([[-1.0, 0.0], [0.05, -1.0], [0.05, 1.0]])
    offsets = np.array([0.9, 0.0, 0.0])
    _, centroid = polygon_area_and_centroid(pu.polygon_vertices(matrix, offsets, -ONES, ONES))
    batch = 64
    tensors = [t.expand(batch, *t.shape[1:]) for t in as_tensors(matrix, offsets)]
    samples, stats = pu.sample_uniform(
        *tensors, -th.ones(2), th.ones(2), 64, generator=th.Generator().manual_seed(1), return_stats=True
    )
    assert pu.contains_mask(samples, *tensors, -th.ones(2), th.ones(2), tolerance=0.0).all()
    assert int(stats.from_hit_and_run.min()) > 0
    assert float(stats.acceptance.mean()) == pytest.approx(0.9 * 0.045 / 4.0, rel=0.25)
    mean = samples.reshape(-1, 2).mean(dim=0).numpy()
    assert np.linalg.norm(mean - centroid) < 0.02


def test_hit_and_run_from_the_centre_mixes_within_the_burn_in() -> None:
    # No rejection at all: chains start at the Chebyshev centre, at the wide end of a 1:50 triangle, 0.29 from the
    # centroid; the default burn-in brings their mean within 1% of the triangle's length (measured: 255 steps).
    matrix = np.array([[-1.0, 0.0], [0.01, -1.0], [0.01, 1.0]])
    offsets = np.array([0.9, 0.0, 0.0])
    _, centroid = polygon_area_and_centroid(pu.polygon_vertices(matrix, offsets, -ONES, ONES))
    samples, stats = pu.sample_uniform(
        *as_tensors(matrix, offsets, -ONES, ONES),
        4000,
        generator=th.Generator().manual_seed(2),
        rejection_rounds=0,
        return_stats=True,
    )
    assert int(stats.from_hit_and_run[0]) == 4000
    assert pu.contains_mask(samples, *as_tensors(matrix, offsets), tolerance=0.0).all()
    assert np.linalg.norm(samples[0].mean(dim=0).numpy() - centroid) / 0.9 < 0.015


@given(kind=st.sampled_from(KINDS), dim=st.integers(1, 4), seed=st.integers(0, 2**31))
@PROPERTY_SETTINGS
def test_random_polytopes_samples_are_inside(kind: str, dim: int, seed: int) -> None:
    matrix, offsets, low, high = random_polytope(kind, dim, seed)
    tensors = as_tensors(matrix, offsets, low, high)
    if kind == "empty":
        with pytest.raises(EmptySupportError):
            pu.sample_uniform(*tensors, 8, generator=th.Generator().manual_seed(seed))
        return
    samples = pu.sample_uniform(*tensors, 8, generator=th.Generator().manual_seed(seed), burn_in_steps=20)
    assert samples.shape == (1, 8, dim)
    assert pu.contains(matrix, offsets, samples[0].numpy(), low, high).all()


def test_sampling_is_reproducible_and_keeps_dtype() -> None:
    tensors = [t.float() for t in as_tensors(np.array([[1.0, 1.0]]), np.array([0.0]), -ONES, ONES)]
    first = pu.sample_uniform(*tensors, 16, generator=th.Generator().manual_seed(5))
    second = pu.sample_uniform(*tensors, 16, generator=th.Generator().manual_seed(5))
    assert first.dtype == th.float32 and th.equal(first, second)


def test_sampling_a_given_interior_point_and_a_flat_set() -> None:
    # A segment has no uniform law: its samples are its centre, within the tolerance.
    matrix, offsets = np.array([[1.0, 1.0], [-1.0, -1.0]]), np.array([0.0, 0.0])
    samples = pu.sample_uniform(*as_tensors(matrix, offsets, -ONES, ONES), 4, burn_in_steps=5)
    assert pu.contains(matrix, offsets, samples[0].numpy(), -ONES, ONES).all()
    # With an interior point given, no linear program is solved for states without accepted candidates.
    matrix, offsets = np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([-0.999, 0.9995])
    interior = th.tensor([[-0.99925, 0.0]], dtype=th.float64)
    samples = pu.sample_uniform(*as_tensors(matrix, offsets, -ONES, ONES), 4, interior=interior, rejection_rounds=1)
    assert pu.contains(matrix, offsets, samples[0].numpy(), -ONES, ONES, tolerance=0.0).all()


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_training_side_functions_run_on_cuda() -> None:
    device = th.device("cuda")
    matrix, offsets, low, high = (
        t.to(device) for t in as_tensors(np.array([[1.0, 1.0]]), np.array([0.2]), -ONES, ONES)
    )
    samples = pu.sample_uniform(matrix, offsets, low, high, 32, generator=th.Generator(device).manual_seed(0))
    assert samples.device.type == "cuda" and pu.contains_mask(samples, matrix, offsets, low, high).all()
    centre = th.tensor([[-0.3, -0.3]], dtype=th.float64, device=device)
    actions, log_det = pu.gauge_map(th.rand(1, 8, 2, dtype=th.float64, device=device) * 2 - 1, matrix, offsets, centre)
    assert actions.device.type == "cuda" and th.isfinite(log_det).all()


# The gauge map


def gauge_case(seed: int, dim: int, rows: int) -> tuple[th.Tensor, th.Tensor, th.Tensor, np.ndarray, np.ndarray]:
    """A random polytope in ``[-1, 1]^dim`` (agent units) with an interior centre."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, dim))
    offsets = matrix @ rng.uniform(-0.4, 0.4, dim) + rng.uniform(0.1, 0.8, rows)
    ball = pu.chebyshev_center(matrix, offsets, -np.ones(dim), np.ones(dim))
    assert ball.radius > 1e-3
    matrix_t, offsets_t, centre_t = as_tensors(matrix, offsets, ball.center)
    return matrix_t, offsets_t, centre_t, matrix, offsets


@pytest.mark.parametrize(("dim", "rows"), [(1, 1), (2, 1), (2, 4), (3, 6), (4, 2), (4, 8)])
def test_gauge_log_det_matches_autograd(dim: int, rows: int) -> None:
    matrix, offsets, centre, *_ = gauge_case(dim * 10 + rows, dim, rows)
    generator = th.Generator().manual_seed(dim)
    for z in th.rand(10, dim, generator=generator, dtype=th.float64) * 2.0 - 1.0:
        _, log_det = pu.gauge_map(z[None], matrix, offsets, centre)
        jacobian = th.autograd.functional.jacobian(lambda x: pu.gauge_map(x[None], matrix, offsets, centre)[0][0], z)
        assert float(log_det[0]) == pytest.approx(float(th.linalg.slogdet(jacobian).logabsdet), abs=1e-8)


@given(dim=st.integers(1, 4), rows=st.integers(1, 8), seed=st.integers(0, 2**31))
@PROPERTY_SETTINGS
def test_gauge_image_is_inside_and_the_box_boundary_goes_to_the_boundary(dim: int, rows: int, seed: int) -> None:
    matrix, offsets, centre, matrix_np, offsets_np = gauge_case(seed, dim, rows)
    z = th.rand(1, 64, dim, generator=th.Generator().manual_seed(seed % 2**31), dtype=th.float64) * 2.0 - 1.0
    actions, log_det = pu.gauge_map(z, matrix, offsets, centre)
    assert actions.shape == (1, 64, dim) and log_det.shape == (1, 64) and th.isfinite(log_det).all()
    assert pu.contains(matrix_np, offsets_np, actions[0].numpy(), -np.ones(dim), np.ones(dim)).all()
    # Pushed to the box's boundary, z lands on the polytope's: some row or box face is active.
    on_face = z / z.abs().amax(dim=-1, keepdim=True)
    boundary = pu.gauge_map(on_face, matrix, offsets, centre)[0][0].numpy()
    slack = np.concatenate([offsets_np - boundary @ matrix_np.T, 1.0 - np.abs(boundary)], axis=1)
    assert np.all(np.abs(slack).min(axis=1) < 1e-9)


def test_gauge_map_is_onto_every_vertex_and_fixes_the_centre() -> None:
    matrix, offsets, centre, matrix_np, offsets_np = gauge_case(7, 2, 5)
    grid = th.linspace(-1.0, 1.0, 201, dtype=th.float64)
    z = th.cartesian_prod(grid, grid).unsqueeze(0)
    image = pu.gauge_map(z, matrix, offsets, centre)[0][0].numpy()
    vertices = pu.polygon_vertices(matrix_np, offsets_np, -ONES, ONES)
    assert len(vertices) >= 3
    nearest = np.linalg.norm(image[:, None, :] - vertices[None], axis=-1).min(axis=0)
    assert nearest.max() < 0.02
    at_zero, log_det = pu.gauge_map(th.zeros(1, 2, dtype=th.float64), matrix, offsets, centre)
    assert th.equal(at_zero, centre) and th.isfinite(log_det).all()


def test_gauge_map_directions_bounded_only_by_the_box_and_gradients() -> None:
    # One row: most directions leave the polytope through the action box only.
    matrix, offsets = th.tensor([[[1.0, 0.0]]], dtype=th.float64), th.tensor([[0.5]], dtype=th.float64)
    centre = th.tensor([[-0.25, 0.0]], dtype=th.float64)
    z = th.tensor([[[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]], dtype=th.float64, requires_grad=True)
    actions, log_det = pu.gauge_map(z, matrix, offsets, centre)
    expected = th.tensor([[[-1.0, 0.0], [-0.25, 1.0], [0.5, 0.0], [0.5, 0.75]]], dtype=th.float64)
    assert th.allclose(actions, expected, atol=1e-12)
    (actions.sum() + log_det.sum()).backward()
    assert th.isfinite(z.grad).all()
