"""
Array helpers of the linear-constraint support: per-state safe sets ``{a in action box : A a <= b}`` (polytopes).

An environment exposes the constraints as ``safe_action_constraints() -> (A, b)`` in its own action units, ``A`` of
shape ``(m, action_dim)`` and ``b`` of shape ``(m,)``: the rows of the state (typically control barrier function
conditions, one per nearby obstacle), without rows for the action box, which every safe set is intersected with. The
number of rows ``m`` may change from state to state, up to the environment's ``max_constraints``.

**Storage.** One array ``[A | b]`` of shape ``(max_constraints, action_dim + 1)`` per state (:func:`pad_constraints`),
the unused rows filled with the *padding row* ``A_i = 0, b_i = 1`` (:data:`PADDING_B`), which every action satisfies
(``0 <= 1``). ``b_i = +inf`` would say the same, but infinities poison the arithmetic the rows go through (``inf - inf``
and ``0 * inf`` are NaN in the unit conversion and the gauge map); with ``b_i = 1`` a padding row has slack 1 at every
point, contributes 0 to every gauge and stays ``(0, 1)`` under the unit conversion.

**Units.** As with the actions (:class:`~sb3_safeq.common.supports.box_utils.BoxScaler`), the agent works in
``[-1, 1]^d``: ``a_env = low + (a_agent + 1) / 2 * (high - low)`` per axis. :func:`constraints_to_agent` rewrites the
rows exactly. Environment-side functions (validation, padding, linear programs, projection) are numpy / scipy and
run once per state; training-side ones (membership, uniform sampling, the gauge map) are batched torch and run on
the device of their tensors.

**Tolerance.** :data:`CONTAINS_TOLERANCE` is a *distance* in action units: a row ``A_i a <= b_i`` holds within the
tolerance when ``A_i a <= b_i + tolerance * ||A_i||``, i.e. when ``a`` is within ``tolerance`` of the half-space
(scaling a row by a positive number does not change the test); the action box likewise, per axis.

**Empty and flat sets.** A state with no safe action has constraints no action of the box satisfies (for instance
one row ``A_i = 0, b_i = -1``). :func:`chebyshev_center` tells them apart: it returns the centre and radius of the
largest ball inside the set, with a *signed* radius (the largest, over the box, of the smallest signed distance to a
row), so a radius below ``-tolerance`` means empty, within ``+-tolerance`` a flat set (non-empty without volume: no
uniform density exists there, and the gauge map needs volume) and above ``tolerance`` a set with an interior.
Axes where the action box is a single point (narrower than
:data:`~sb3_safeq.common.supports.box_utils.POINT_WIDTH`) are fixed, as the box support does: the radius is measured
in the remaining axes.
"""

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_safeq.common.supports.box_utils import POINT_WIDTH, check_box_action_space
from sb3_safeq.common.supports.errors import EmptySupportError

#: Name of the environment method that returns the linear constraints ``(A, b)`` of the current observation.
SAFE_CONSTRAINTS_METHOD = "safe_action_constraints"
#: ``info`` key under which the constraints of an observation are written (env units).
SAFE_CONSTRAINTS_INFO_KEY = "safe_action_constraints"
#: ``b`` of the padding rows (``A`` is 0 there): satisfied by every action, finite (see the module docstring).
PADDING_B = 1.0
#: Default tolerance of the membership tests, a distance in action units. It is above the float32 rounding of
#: actions up to ~16 in magnitude (half a float32 spacing there is 9.5e-7), so an action computed in float64 inside
#: the set and stored in float32 still passes; above HiGHS's default primal feasibility tolerance (1e-7), so the
#: linear programs' centres and boxes pass; and far below any physical margin a safe set is built with (the bundled
#: environments keep at least 1e-2). Environments with much larger action magnitudes should scale it.
CONTAINS_TOLERANCE = 1e-6

# Along a hit-and-run direction, rows whose value changes slower than this do not bound the chord (no division by ~0;
# the box rows always bound it).
_TINY_SLACK = 1e-12
# The gauge map divides by the slack of the interior point; a non-interior point would divide by zero.
_MIN_SLACK = 1e-12


# Reading and validation


def _real_array(value: Any, name: str, source: str) -> np.ndarray:
    """:return: ``value`` as a float64 array, if it holds real numbers (integers or floats, not booleans)"""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {name} is not an array of numbers ({error}).") from None
    if array.dtype.kind not in "iuf":
        hint = " (a boolean mask is not a constraint)" if array.dtype.kind == "b" else ""
        raise ValueError(
            f"{source}: {name} must hold real numbers (integers or floats), got dtype {array.dtype}{hint}. "
            f"Return {name} as a float array."
        )
    return array.astype(np.float64)


def validate_constraints(
    constraints: Any,
    action_space: spaces.Box,
    max_constraints: int,
    source: str = f"{SAFE_CONSTRAINTS_METHOD}()",
) -> tuple[np.ndarray, np.ndarray]:
    """
    The one validation gate of linear constraints: types, dtype, values and layout against the action space.
    Nothing is reshaped: a layout that differs from the expected one is an error that names the fix.

    ``b_i = +inf`` is accepted and means "no constraint": the row is replaced by the padding row ``(0, 1)``, so that
    no infinity reaches storage. NaN anywhere, an infinite entry of ``A`` and ``b_i = -inf`` are refused (to say
    that no action is safe, give a finite infeasible row, e.g. ``A_i = 0, b_i = -1``).

    :param constraints: ``(A, b)`` (a tuple or a list), ``A`` of shape ``(m, action_dim)``, ``b`` of shape ``(m,)``,
        in the environment's action units
    :param action_space: the Box action space
    :param max_constraints: the largest ``m`` the storage holds
    :param source: where the constraints came from, for error messages
    :return: ``A`` (float64, ``(m, action_dim)``) and ``b`` (float64, ``(m,)``), new arrays
    :raises ValueError: with a message naming the problem and the fix
    """
    check_box_action_space(action_space)
    action_dim = int(action_space.shape[0])
    expected = f"(A, b) with A of shape (m, {action_dim}) (one row per constraint A_i a <= b_i) and b of shape (m,)"
    if not isinstance(constraints, (tuple, list)) or len(constraints) != 2:
        got = f"a {type(constraints).__name__}" + (
            f" of length {len(constraints)}" if isinstance(constraints, (tuple, list)) else ""
        )
        raise ValueError(f"{source} must return a pair {expected}, got {got}. Return `A, b`.")
    matrix = _real_array(constraints[0], "A", source)
    offsets = _real_array(constraints[1], "b", source)
    if offsets.ndim != 1:
        hint = " Pass `b.ravel()`." if offsets.ndim == 2 and 1 in offsets.shape else ""
        raise ValueError(
            f"{source}: b must be 1-D of shape (m,), got shape {offsets.shape}; expected {expected}.{hint}"
        )
    rows = offsets.shape[0]
    if matrix.ndim != 2:
        hint = ""
        if matrix.ndim == 1 and matrix.shape[0] == action_dim and rows == 1:
            hint = " A single constraint is one row: pass `A[None, :]` (shape (1, action_dim))."
        elif matrix.ndim == 1 and action_dim == 1 and matrix.shape[0] == rows:
            hint = " With one action axis, A is a column: pass `A[:, None]` (shape (m, 1))."
        raise ValueError(f"{source}: A must be 2-D, got shape {matrix.shape}; expected {expected}.{hint}")
    if matrix.shape[1] != action_dim:
        if matrix.shape == (action_dim, rows):
            raise ValueError(
                f"{source}: A has shape {matrix.shape}, one column per constraint; the layout is (m, action_dim) = "
                f"({rows}, {action_dim}), one row per constraint. Pass `A.T`."
            )
        raise ValueError(
            f"{source}: A has {matrix.shape[1]} columns but the action space has {action_dim} axes; "
            f"expected {expected}."
        )
    if matrix.shape[0] != rows:
        raise ValueError(
            f"{source}: A has {matrix.shape[0]} rows but b has {rows} entries; expected {expected}, one b_i per row."
        )
    if rows > max_constraints:
        raise ValueError(
            f"{source} returned {rows} constraints, more than max_constraints={max_constraints}, the number of rows "
            f"stored per state. Raise the environment's `max_constraints` to at least {rows} (the argument of its "
            "ConstrainedBox action space, or SafetyWrapper(max_constraints=...)), or drop rows that no action of the "
            "action box can violate."
        )
    if not np.all(np.isfinite(matrix)):
        bad = sorted({int(row) for row in np.nonzero(~np.isfinite(matrix))[0]})
        raise ValueError(f"{source}: A has NaN or infinite entries in rows {bad}; every entry of A must be finite.")
    if np.any(np.isnan(offsets)) or np.any(offsets == -np.inf):
        bad = [int(row) for row in np.nonzero(np.isnan(offsets) | (offsets == -np.inf))[0]]
        raise ValueError(
            f"{source}: b has NaN or -inf in rows {bad}. b must be finite or +inf (no constraint); to say that no "
            "action is safe, return a finite infeasible row such as A_i = 0, b_i = -1."
        )
    inactive = offsets == np.inf
    matrix[inactive] = 0.0
    offsets[inactive] = PADDING_B
    return matrix, offsets


# Storage


def pad_constraints(matrix: np.ndarray, offsets: np.ndarray, max_constraints: int) -> np.ndarray:
    """
    :param matrix: ``A``, shape ``(m, action_dim)``, ``m <= max_constraints`` (validated)
    :param offsets: ``b``, shape ``(m,)``
    :param max_constraints: number of stored rows
    :return: ``[A | b]``, float64 of shape ``(max_constraints, action_dim + 1)``, rows ``m`` and after being the
        padding row ``(0, ..., 0, 1)``
    """
    rows, action_dim = matrix.shape
    if rows > max_constraints:
        raise ValueError(f"{rows} constraints do not fit in max_constraints={max_constraints} rows.")
    stacked = np.zeros((max_constraints, action_dim + 1), dtype=np.float64)
    stacked[:, -1] = PADDING_B
    stacked[:rows, :-1] = matrix
    stacked[:rows, -1] = offsets
    return stacked


def unpad_constraints(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Inverse of :func:`pad_constraints` for one state: drops the rows that every action satisfies (``A_i = 0`` and
    ``b_i >= 0``), the padding rows and any such row of the environment's, which carry no information.

    :param stacked: ``[A | b]``, shape ``(rows, action_dim + 1)``
    :return: ``A`` of shape ``(m, action_dim)`` and ``b`` of shape ``(m,)``
    """
    matrix, offsets = stacked[:, :-1], stacked[:, -1]
    keep = ~(np.all(matrix == 0.0, axis=-1) & (offsets >= 0.0))
    return matrix[keep].copy(), offsets[keep].copy()


def split_constraints(stacked: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    Batched accessor of the stored layout (numpy arrays work too).

    :param stacked: ``[A | b]``, shape ``(..., max_constraints, action_dim + 1)``
    :return: views ``A`` of shape ``(..., max_constraints, action_dim)`` and ``b`` of shape ``(..., max_constraints)``
    """
    return stacked[..., :-1], stacked[..., -1]


def constraints_to_agent(stacked: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    Rewrite constraints from env units to the agent's ``[-1, 1]`` units, exactly.

    With ``a_env = mid + half_width * a_agent`` (``mid = (low + high) / 2``, ``half_width = (high - low) / 2``),
    ``A a_env <= b`` iff ``(A diag(half_width)) a_agent <= b - A mid``. On an axis where ``low == high`` every agent
    value gives the same env action, and the column becomes 0 accordingly. Padding rows stay ``(0, 1)``.

    :param stacked: ``[A | b]`` in env units, shape ``(..., rows, action_dim + 1)``
    :param low: lower bounds of the action space, shape ``(action_dim,)``
    :param high: upper bounds of the action space, shape ``(action_dim,)``
    :return: ``[A_agent | b_agent]``, float64, same shape
    """
    stacked = np.asarray(stacked, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    matrix, offsets = stacked[..., :-1], stacked[..., -1]
    middle, half_width = (low + high) / 2.0, (high - low) / 2.0
    agent = np.empty_like(stacked)
    agent[..., :-1] = matrix * half_width
    agent[..., -1] = offsets - matrix @ middle
    return agent


# Membership


def contains(
    matrix: np.ndarray,
    offsets: np.ndarray,
    actions: np.ndarray,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    tolerance: float = CONTAINS_TOLERANCE,
) -> np.ndarray:
    """
    :param matrix: ``A``, shape ``(..., m, action_dim)``
    :param offsets: ``b``, shape ``(..., m)``
    :param actions: shape ``(..., action_dim)``, broadcasting with the leading dimensions of the constraints
    :param low: lower bounds of the action box, shape ``(action_dim,)`` or broadcasting; None: no box test
    :param high: upper bounds, likewise
    :param tolerance: distance in action units (see the module docstring)
    :return: boolean array of the leading shape: the action satisfies every row (and the box) within the tolerance
    """
    matrix, offsets = np.asarray(matrix, dtype=np.float64), np.asarray(offsets, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    residuals = np.einsum("...md,...d->...m", matrix, actions) - offsets
    inside = np.all(residuals <= tolerance * np.linalg.norm(matrix, axis=-1), axis=-1)
    if low is not None:
        inside &= np.all(actions >= np.asarray(low) - tolerance, axis=-1)
    if high is not None:
        inside &= np.all(actions <= np.asarray(high) + tolerance, axis=-1)
    return inside


def contains_mask(
    actions: th.Tensor,
    matrix: th.Tensor,
    offsets: th.Tensor,
    low: th.Tensor | None = None,
    high: th.Tensor | None = None,
    tolerance: float = CONTAINS_TOLERANCE,
) -> th.Tensor:
    """
    Batched torch membership test (the training-side twin of :func:`contains`).

    :param actions: ``(batch, n, action_dim)``
    :param matrix: ``A``, ``(batch, m, action_dim)``
    :param offsets: ``b``, ``(batch, m)``
    :param low: lower bounds of the action box, ``(batch, action_dim)`` or ``(action_dim,)``; None: no box test
    :param high: upper bounds, likewise
    :param tolerance: distance in action units; 0 for the exact test
    :return: boolean ``(batch, n)``
    """
    residuals = actions @ matrix.transpose(-1, -2) - offsets.unsqueeze(-2)
    inside = (residuals <= tolerance * matrix.norm(dim=-1).unsqueeze(-2)).all(dim=-1)
    if low is not None:
        inside &= (actions >= _per_item(low, actions) - tolerance).all(dim=-1)
    if high is not None:
        inside &= (actions <= _per_item(high, actions) + tolerance).all(dim=-1)
    return inside


def _per_item(bounds: th.Tensor, like: th.Tensor) -> th.Tensor:
    """:return: ``(d,)`` or ``(batch, d)`` bounds shaped ``(batch, 1, d)`` to broadcast with ``(batch, n, d)``"""
    bounds = bounds.to(dtype=like.dtype, device=like.device)
    return bounds.expand(like.shape[0], like.shape[-1]).unsqueeze(1)


# Linear programs (HiGHS through scipy)


class ChebyshevBall(NamedTuple):
    """The largest ball inside ``{a in [low, high] : A a <= b}``, from :func:`chebyshev_center`."""

    center: np.ndarray
    """Its centre, shape ``(action_dim,)``; for an empty set, the point of the box whose worst row is least violated."""
    radius: float
    """Signed radius: ``> 0`` interior, ``~0`` flat, ``< 0`` empty (``-inf``: a row ``0 a <= b_i < 0``)."""

    def is_empty(self, tolerance: float = CONTAINS_TOLERANCE) -> bool:
        """:return: no action satisfies the constraints (within the tolerance)"""
        return self.radius < -tolerance

    def is_flat(self, tolerance: float = CONTAINS_TOLERANCE) -> bool:
        """:return: the set is non-empty (within the tolerance) but has no interior: no uniform density there"""
        return -tolerance <= self.radius <= tolerance


def _fixed_axes(
    matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """
    Substitute the axes where the box is a point and drop the rows that become ``0 <= b_i``.

    :return: the free-axis mask, the point of the fixed axes (NaN on free ones), the free-axis ``A`` and ``b``,
        and whether a row became ``0 <= b_i`` with ``b_i < 0`` (the set is empty)
    """
    free = (high - low) > POINT_WIDTH
    fixed_point = np.where(free, np.nan, (low + high) / 2.0)
    offsets = offsets - matrix[:, ~free] @ fixed_point[~free]
    matrix = matrix[:, free]
    zero = np.all(matrix == 0.0, axis=1)
    infeasible = bool(np.any(offsets[zero] < 0.0))
    return free, fixed_point, matrix[~zero], offsets[~zero], infeasible


def _as_problem(
    matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return matrix.reshape(-1, low.shape[0]), np.asarray(offsets, dtype=np.float64).reshape(-1), low, high


def _solve_lp(cost: np.ndarray, a_ub: np.ndarray | None, b_ub: np.ndarray | None, bounds: Sequence[tuple]) -> Any:
    # Imported here, not at the top: `import sb3_safeq` registers the environments, which import this module, and
    # scipy.optimize alone would add a quarter of a second to every import of the package.
    from scipy.optimize import linprog

    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status not in (0, 2):  # 2: infeasible, which the callers report as an empty set
        raise RuntimeError(f"HiGHS could not solve a linear program of the polytope support: {result.message}")
    return result


def chebyshev_center(matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray) -> ChebyshevBall:
    """
    Centre and signed radius of the largest Euclidean ball inside ``{a in [low, high] : A a <= b}``, one linear
    program (HiGHS): maximise ``r`` subject to ``A_i a + r ||A_i|| <= b_i``, ``low_j + r <= a_j <= high_j - r`` and
    ``low <= a <= high``, with ``r`` free. For a non-empty set ``r >= 0`` is the radius; for an empty one the optimum
    is negative: minus the smallest, over the box, of the largest distance to a violated row. Axes where the box is a
    point are fixed (see the module docstring).

    :param matrix: ``A``, shape ``(m, action_dim)``
    :param offsets: ``b``, shape ``(m,)``
    :param low: lower bounds of the action box, shape ``(action_dim,)``
    :param high: upper bounds, ``low <= high``
    :return: the :class:`ChebyshevBall`; ``ball.is_empty()`` / ``ball.is_flat()`` classify the set
    """
    matrix, offsets, low, high = _as_problem(matrix, offsets, low, high)
    free, fixed_point, free_matrix, free_offsets, infeasible = _fixed_axes(matrix, offsets, low, high)
    center = fixed_point.copy()
    center[free] = (low[free] + high[free]) / 2.0
    if infeasible:
        return ChebyshevBall(center, -np.inf)
    n_free = int(free.sum())
    if n_free == 0:
        return ChebyshevBall(center, 0.0)  # a single point, and no row left to violate
    norms = np.linalg.norm(free_matrix, axis=1)
    identity, ones = np.eye(n_free), np.ones((n_free, 1))
    a_ub = np.vstack(
        [np.hstack([free_matrix, norms[:, None]]), np.hstack([identity, ones]), np.hstack([-identity, ones])]
    )
    b_ub = np.concatenate([free_offsets, high[free], -low[free]])
    cost = np.zeros(n_free + 1)
    cost[-1] = -1.0
    bounds = [*zip(low[free], high[free], strict=True), (None, None)]
    result = _solve_lp(cost, a_ub, b_ub, bounds)
    if result.status != 0:  # cannot happen with a free radius; kept so that a solver surprise is not a wrong centre
        return ChebyshevBall(center, -np.inf)
    center[free] = result.x[:-1]
    return ChebyshevBall(center, float(result.x[-1]))


def _empty_inner_box(action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(action_dim, np.inf), np.full(action_dim, -np.inf)


def largest_inner_box(
    matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """
    The largest-volume axis-aligned box inside ``{a in [low, high] : A a <= b}``: the alternative
    ``safe_action_bounds()`` support of a polytope.

    A box ``[l, u]`` lies in the half-space ``A_i a <= b_i`` iff its worst corner does:
    ``sum_j (max(A_ij, 0) u_j - max(-A_ij, 0) l_j) <= b_i``, linear in ``(l, u)``; its log-volume
    ``sum_j log(u_j - l_j)`` is concave. Maximising it is a convex program, whose local optimum is the global one:

    1. a linear program (HiGHS) gives a starting box with volume: the largest scaled copy of the action box (a cube
       in the agent's ``[-1, 1]`` units), ``l = c - t w``, ``u = c + t w``, ``w = (high - low) / 2``, maximising
       ``t``. ``t = 0`` means the set is flat (no box with volume fits) and infeasible means empty;
    2. scipy's SLSQP maximises the log-volume from there (analytic gradients; about a millisecond in 2-D). If it
       fails, or for a flat set, a second linear program stands in: the box maximising ``sum_j (u_j - l_j) / w_j``
       among those containing the step-1 box (maximal: no axis can be lengthened alone).

    The result is then shrunk about its centre, if needed, so that it satisfies every row exactly in float64 (the
    solvers' tolerances are about 1e-7); a flat set's box has no volume and lies on the set only within
    :data:`CONTAINS_TOLERANCE`. Axes where the action box is a point stay that point.

    :param matrix: ``A``, shape ``(m, action_dim)``
    :param offsets: ``b``, shape ``(m,)``
    :param low: lower bounds of the action box, shape ``(action_dim,)``
    :param high: upper bounds, ``low <= high``
    :return: ``(box_low, box_high)``, float64 of shape ``(action_dim,)``, inside the action box; for an empty set
        ``box_low = +inf > box_high = -inf`` on every axis
    """
    matrix, offsets, low, high = _as_problem(matrix, offsets, low, high)
    action_dim = low.shape[0]
    free, fixed_point, free_matrix, free_offsets, infeasible = _fixed_axes(matrix, offsets, low, high)
    if infeasible:
        return _empty_inner_box(action_dim)
    box_low, box_high = fixed_point.copy(), fixed_point.copy()
    n_free = int(free.sum())
    if n_free == 0:
        return box_low, box_high
    f_low, f_high = low[free], high[free]
    half = (f_high - f_low) / 2.0
    # Containment of [l, u] in every row, as one linear map of x = (l, u): corner_rows @ x <= free_offsets.
    corner_rows = np.hstack([-np.maximum(-free_matrix, 0.0), np.maximum(free_matrix, 0.0)])

    # 1. Largest scaled action box: variables (c, t).
    identity = np.eye(n_free)
    a_ub = np.vstack(
        [
            np.hstack([free_matrix, (np.abs(free_matrix) @ half)[:, None]]),
            np.hstack([identity, half[:, None]]),
            np.hstack([-identity, half[:, None]]),
        ]
    )
    b_ub = np.concatenate([free_offsets, f_high, -f_low])
    cost = np.zeros(n_free + 1)
    cost[-1] = -1.0
    result = _solve_lp(cost, a_ub, b_ub, [*zip(f_low, f_high, strict=True), (0.0, 1.0)])
    if result.status != 0:
        return _empty_inner_box(action_dim)
    center, scale = result.x[:-1], float(result.x[-1])
    start_low, start_high = center - scale * half, center + scale * half

    # 2. Largest volume from there; the sum of widths if that fails or the set is flat.
    best = _largest_volume(corner_rows, free_offsets, f_low, f_high, start_low, start_high) if scale > 1e-9 else None
    if best is None:
        bounds = [*zip(f_low, np.minimum(start_low, f_high), strict=True)]
        bounds += [*zip(np.maximum(start_high, f_low), f_high, strict=True)]
        rows = corner_rows.shape[0]
        grown = _solve_lp(
            np.concatenate([1.0 / half, -1.0 / half]),
            corner_rows if rows else None,
            free_offsets if rows else None,
            bounds,
        )
        best = (grown.x[:n_free], grown.x[n_free:]) if grown.status == 0 else (start_low, start_high)
    inner_low, inner_high = _shrunk_inside(free_matrix, free_offsets, f_low, f_high, *best)
    box_low[free], box_high[free] = inner_low, inner_high
    return box_low, box_high


def _largest_volume(
    corner_rows: np.ndarray,
    offsets: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    start_low: np.ndarray,
    start_high: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """
    Maximise ``sum_j log((u_j - l_j) / (high_j - low_j))`` subject to ``corner_rows @ (l, u) <= offsets`` and
    ``low <= l, u <= high`` with SLSQP, from a feasible box with volume.

    :return: ``(l, u)``, or None if SLSQP failed or did not improve on the start
    """
    from scipy.optimize import minimize  # not at the top: see _solve_lp

    n_free = low.shape[0]
    width = high - low
    # Widths are floored inside the logarithm: SLSQP's line search may try boxes that are turned inside out.
    floor = 1e-12 * width

    def negative_log_volume(x: np.ndarray) -> float:
        return -float(np.sum(np.log(np.maximum(x[n_free:] - x[:n_free], floor) / width)))

    def gradient(x: np.ndarray) -> np.ndarray:
        inverse = 1.0 / np.maximum(x[n_free:] - x[:n_free], floor)
        return np.concatenate([inverse, -inverse])

    orientation = np.hstack([-np.eye(n_free), np.eye(n_free)])
    constraints = [{"type": "ineq", "fun": lambda x: offsets - corner_rows @ x, "jac": lambda x: -corner_rows}]
    constraints.append({"type": "ineq", "fun": lambda x: orientation @ x - floor, "jac": lambda x: orientation})
    start = np.concatenate([start_low, start_high])
    result = minimize(
        negative_log_volume,
        start,
        jac=gradient,
        bounds=[*zip(low, high, strict=True)] * 2,
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-10, "maxiter": 200},
    )
    if not result.success or not np.all(np.isfinite(result.x)):
        return None
    found = np.clip(result.x, np.tile(low, 2), np.tile(high, 2))
    if negative_log_volume(found) > negative_log_volume(start):
        return None
    return found[:n_free], found[n_free:]


def _shrunk_inside(
    matrix: np.ndarray,
    offsets: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    box_low: np.ndarray,
    box_high: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:return: the box clipped into ``[low, high]`` and shrunk about its centre until every row holds exactly"""
    box_low, box_high = np.clip(box_low, low, high), np.clip(np.maximum(box_high, box_low), low, high)
    middle, radius = (box_low + box_high) / 2.0, (box_high - box_low) / 2.0
    if matrix.shape[0]:
        reach = np.abs(matrix) @ radius
        # A few ulps of room are kept, so that each corner, evaluated on its own, satisfies every row too.
        rounding = 8.0 * np.finfo(np.float64).eps * (np.abs(offsets) + np.abs(matrix) @ (np.abs(middle) + radius))
        room = offsets - rounding - matrix @ middle
        over = reach > room
        if np.any(over):
            factor = np.where(over, np.clip(room / np.where(reach > 0, reach, 1.0), 0.0, 1.0), 1.0)
            radius = radius * float(factor.min())
    # Rounding of middle +- radius must not step out of the action box either.
    return np.maximum(middle - radius, box_low), np.minimum(middle + radius, box_high)


# Projection (the shield)


def _least_distance(rows: np.ndarray, offsets: np.ndarray, action: np.ndarray) -> np.ndarray | None:
    """
    Euclidean projection of ``action`` onto ``{a : rows a <= offsets}`` as a least-distance program solved by
    non-negative least squares (Lawson and Hanson, *Solving Least Squares Problems*, ch. 23): with ``x = a - action``,
    minimise ``||x||`` subject to ``G x >= h``, ``G = -rows``, ``h = rows action - offsets``. The NNLS problem
    ``min ||E u - f||, u >= 0`` with ``E = [G^T; h^T]``, ``f = (0, ..., 0, 1)`` has residual ``r``; the answer is
    ``x = -r[:-1] / r[-1]``, and ``r = 0`` means the constraints are inconsistent. NNLS is an active-set method: it
    ends on the exact active set, like a dual active-set QP solver.

    :return: the projection, or None when NNLS reports inconsistent constraints
    """
    from scipy.optimize import nnls  # not at the top: see _solve_lp

    residual_of = rows @ action - offsets
    system = np.vstack([-rows.T, residual_of[None, :]])
    target = np.zeros(system.shape[0])
    target[-1] = 1.0
    weights, _ = nnls(system, target)
    residual = system @ weights - target
    if residual[-1] > -1e-12:
        return None
    return action - residual[:-1] / residual[-1]


def project_onto_polytope(
    matrix: np.ndarray,
    offsets: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    action: np.ndarray,
    tolerance: float = CONTAINS_TOLERANCE,
) -> np.ndarray:
    """
    Euclidean projection of an action onto ``{a in [low, high] : A a <= b}`` (the shield of the polytope support).

    An action already inside (exactly) is returned as is. Otherwise the projection is a small quadratic program,
    solved exactly by a least-distance program (scipy's NNLS; see :func:`_least_distance`): a median of about 45
    microseconds per call for 2-8 rows in 2 and 4 dimensions, about half of it in NNLS. Rows are normalised first,
    so the solver works with distances. If rounding leaves the result outside by more than the tolerance (nearly
    flat sets), it is moved along the segment towards the Chebyshev centre until every row holds: still inside,
    though no longer exactly the nearest point.

    :param matrix: ``A``, shape ``(m, action_dim)``
    :param offsets: ``b``, shape ``(m,)``
    :param low: lower bounds of the action box, shape ``(action_dim,)``
    :param high: upper bounds, ``low <= high``
    :param action: shape ``(action_dim,)``
    :param tolerance: distance in action units that the result may be outside by
    :return: the projected action, float64 of shape ``(action_dim,)``, inside the box and satisfying every row
        within the tolerance
    :raises EmptySupportError: if no action satisfies the constraints
    """
    matrix, offsets, low, high = _as_problem(matrix, offsets, low, high)
    action = np.asarray(action, dtype=np.float64).reshape(low.shape)
    # Numpy's per-call overhead dominates at this size: the fast path avoids the generic helpers.
    free = (high - low) > POINT_WIDTH
    if bool(free.all()):
        fixed_point, free_matrix, free_offsets = np.full_like(low, np.nan), matrix, offsets
    else:
        free, fixed_point, free_matrix, free_offsets, infeasible = _fixed_axes(matrix, offsets, low, high)
        if infeasible:
            raise EmptySupportError("The linear constraints have a row 0 a <= b_i < 0: no action is safe.")
    norms = np.sqrt(np.einsum("md,md->m", free_matrix, free_matrix))
    if not bool(np.all(norms > 0.0)):
        if bool(np.any(free_offsets[norms == 0.0] < 0.0)):
            raise EmptySupportError("The linear constraints have a row 0 a <= b_i < 0: no action is safe.")
        free_matrix, free_offsets, norms = free_matrix[norms > 0.0], free_offsets[norms > 0.0], norms[norms > 0.0]
    unit_rows, unit_offsets = free_matrix / norms[:, None], free_offsets / norms  # rows as signed distances
    free_low, free_high, free_action = low[free], high[free], action[free]
    in_box = bool(np.all(free_low <= free_action) and np.all(free_action <= free_high))
    if (
        in_box
        and bool(np.all(unit_rows @ free_action <= unit_offsets))
        and bool(np.all(action[~free] == fixed_point[~free]))
    ):
        return action.copy()
    projected = fixed_point.copy()
    if free_action.size:
        identity = np.eye(free_action.size)
        rows = np.concatenate([unit_rows, identity, -identity])
        bounds = np.concatenate([unit_offsets, free_high, -free_low])
        solution = _least_distance(rows, bounds, free_action)
        projected[free] = np.clip(free_action if solution is None else solution, free_low, free_high)
        excess = unit_rows @ projected[free] - unit_offsets
        if solution is not None and (excess.size == 0 or float(excess.max()) <= tolerance):
            return projected
    elif free_offsets.size == 0 or float(free_offsets.min()) >= 0.0:
        return projected
    ball = chebyshev_center(matrix, offsets, low, high)
    if ball.is_empty(tolerance):
        raise EmptySupportError(
            f"The linear constraints leave no safe action (Chebyshev radius {ball.radius:.3g}): nothing to project on."
        )
    return _towards(matrix, offsets, low, high, projected, ball.center)


def _towards(
    matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray, start: np.ndarray, inside: np.ndarray
) -> np.ndarray:
    """:return: the first point of the segment from ``start`` to ``inside`` (a point of the set) that satisfies
    every row"""
    start_excess = matrix @ start - offsets
    inside_excess = matrix @ inside - offsets
    violated = start_excess > 0.0
    fraction = 1.0
    if np.any(violated):
        drop = start_excess[violated] - np.minimum(inside_excess[violated], 0.0)
        fraction = float(np.clip(np.max(start_excess[violated] / np.where(drop > 0, drop, 1.0)), 0.0, 1.0))
    return np.clip(start + fraction * (inside - start), low, high)


def project_onto_polytopes(
    stacked: np.ndarray, low: np.ndarray, high: np.ndarray, actions: np.ndarray, tolerance: float = CONTAINS_TOLERANCE
) -> np.ndarray:
    """
    :func:`project_onto_polytope` over a batch (a loop: each call is a few microseconds of NNLS).

    :param stacked: ``[A | b]``, shape ``(batch, rows, action_dim + 1)`` (padding rows are harmless)
    :param low: lower bounds of the action box, ``(action_dim,)``
    :param high: upper bounds, ``(action_dim,)``
    :param actions: ``(batch, action_dim)``
    :param tolerance: see :func:`project_onto_polytope`
    :return: projected actions, float64 ``(batch, action_dim)``
    """
    return np.stack(
        [
            project_onto_polytope(*unpad_constraints(item), low, high, action, tolerance)
            for item, action in zip(np.asarray(stacked, dtype=np.float64), actions, strict=True)
        ]
    )


def polygon_vertices(matrix: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    Vertices of ``{a in [low, high] : A a <= b}`` by enumeration: every point where ``action_dim`` of the rows (box
    faces included) meet, kept if it satisfies all of them. For small problems only (rendering, tests, exact areas
    in 2-D): the cost grows as ``C(m + 2 d, d)``.

    :param matrix: ``A``, shape ``(m, action_dim)``
    :param offsets: ``b``, shape ``(m,)``
    :param low: lower bounds of the action box, shape ``(action_dim,)``
    :param high: upper bounds
    :return: the distinct vertices, shape ``(n_vertices, action_dim)`` (empty for an empty set); in 2-D in
        counter-clockwise order around their mean
    """
    matrix, offsets, low, high = _as_problem(matrix, offsets, low, high)
    action_dim = low.shape[0]
    identity = np.eye(action_dim)
    rows = np.vstack([matrix, identity, -identity])
    bounds = np.concatenate([offsets, high, -low])
    scale = np.maximum(np.linalg.norm(rows, axis=1), 1e-300)
    found: list[np.ndarray] = []
    for subset in itertools.combinations(range(rows.shape[0]), action_dim):
        system = rows[list(subset)]
        if abs(np.linalg.det(system)) < 1e-12 * np.prod(scale[list(subset)]):
            continue
        point = np.linalg.solve(system, bounds[list(subset)])
        if np.all(rows @ point - bounds <= 1e-9 * scale) and not any(np.allclose(point, v, atol=1e-9) for v in found):
            found.append(point)
    if not found:
        return np.zeros((0, action_dim))
    vertices = np.array(found)
    if action_dim == 2:
        offset = vertices - vertices.mean(axis=0)
        vertices = vertices[np.argsort(np.arctan2(offset[:, 1], offset[:, 0]))]
    return vertices


# Training side (torch, batched)


def _with_box_rows(
    matrix: th.Tensor, offsets: th.Tensor, low: th.Tensor, high: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """:return: ``A`` and ``b`` with the box's ``2 d`` rows appended: ``(batch, m + 2 d, d)``, ``(batch, m + 2 d)``"""
    batch, _, action_dim = matrix.shape
    identity = th.eye(action_dim, dtype=matrix.dtype, device=matrix.device).expand(batch, action_dim, action_dim)
    low = low.to(matrix).expand(batch, action_dim)
    high = high.to(matrix).expand(batch, action_dim)
    return th.cat([matrix, identity, -identity], dim=1), th.cat([offsets, high, -low], dim=1)


def hit_and_run(
    matrix: th.Tensor,
    offsets: th.Tensor,
    low: th.Tensor,
    high: th.Tensor,
    start: th.Tensor,
    n_steps: int,
    generator: th.Generator | None = None,
) -> th.Tensor:
    """
    Hit-and-run chains inside ``{a in [low, high] : A a <= b}``: each step draws a uniform direction, the chord
    through the current point along it (a ratio test over the rows and the box faces) and a uniform point of the
    chord. The uniform distribution is stationary: chains started from uniform points stay uniform at every step.
    A move that rounding would put outside the set is refused (the point stays), so every point stays inside.

    :param matrix: ``A``, ``(batch, m, d)``
    :param offsets: ``b``, ``(batch, m)``
    :param low: lower bounds of the box, ``(batch, d)`` or ``(d,)``
    :param high: upper bounds, likewise
    :param start: points inside the set, ``(batch, n, d)``
    :param n_steps: number of steps
    :param generator: torch random generator (on the tensors' device), or None for the global one
    :return: the chains' last points, ``(batch, n, d)``
    """
    rows, bounds = _with_box_rows(matrix, offsets, low, high)
    points = start.clone()
    for _ in range(n_steps):
        direction = th.randn(points.shape, generator=generator, dtype=points.dtype, device=points.device)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        speed = direction @ rows.transpose(-1, -2)  # (batch, n, rows): how fast each row's value grows along the chord
        room = (bounds.unsqueeze(1) - points @ rows.transpose(-1, -2)).clamp_min(0.0)
        ahead = th.where(speed > _TINY_SLACK, room / speed.clamp_min(_TINY_SLACK), th.full_like(room, th.inf))
        behind = th.where(speed < -_TINY_SLACK, room / speed.clamp_max(-_TINY_SLACK), th.full_like(room, -th.inf))
        upper, lower = ahead.amin(dim=-1), behind.amax(dim=-1)
        fraction = th.rand(upper.shape, generator=generator, dtype=points.dtype, device=points.device)
        moved = points + (lower + (upper - lower) * fraction).unsqueeze(-1) * direction
        keep = (moved @ rows.transpose(-1, -2) <= bounds.unsqueeze(1)).all(dim=-1) & th.isfinite(moved).all(dim=-1)
        points = th.where(keep.unsqueeze(-1), moved, points)
    return points


class UniformSampleStats(NamedTuple):
    """What :func:`sample_uniform` did, for logging and tests."""

    acceptance: th.Tensor
    """Per state, the fraction of box candidates that rejection accepted, ``(batch,)``."""
    from_hit_and_run: th.Tensor
    """Per state, the number of samples that came from hit-and-run chains, ``(batch,)``."""


def sample_uniform(
    matrix: th.Tensor,
    offsets: th.Tensor,
    low: th.Tensor,
    high: th.Tensor,
    n_samples: int,
    generator: th.Generator | None = None,
    interior: th.Tensor | None = None,
    rejection_rounds: int = 4,
    oversample: int = 4,
    mixing_steps: int = 10,
    burn_in_steps: int = 300,
    return_stats: bool = False,
) -> th.Tensor | tuple[th.Tensor, UniformSampleStats]:
    """
    Uniform samples inside each state's ``{a in [low, high] : A a <= b}``, batched.

    1. *Rejection* from the action box: ``rejection_rounds`` rounds of ``oversample * n_samples`` uniform candidates
       per state; the accepted ones (in order) fill the slots. Exact uniform samples; while the polytope fills more
       than about ``1 / (rejection_rounds * oversample)`` of the box, every slot is filled this way.
    2. *Hit-and-run* for the slots still empty (thin polytopes): chains started at accepted samples of the same state,
       picked uniformly, run ``mixing_steps`` steps. Started from uniform points, their samples are exactly uniform
       too (the uniform law is stationary); the steps only decorrelate them from their starts. A state without any
       accepted candidate starts its chains at ``interior`` (or, if None, at its Chebyshev centre, one CPU linear
       program per such state) and runs ``burn_in_steps`` steps: approximately uniform. Measured from the Chebyshev
       centre (at the wide end): the chains' mean comes within 1% of the length from the centroid after ~25 steps in
       a 1:5 triangle and ~250 in a 1:50 one, hence the default 300.

    Every sample satisfies every row and the box exactly in the tensors' arithmetic (rejection tests exactly, and
    hit-and-run refuses moves that rounding would put outside), except that a chain start given by a linear program
    is inside only within :data:`CONTAINS_TOLERANCE`. A flat set (no interior) has no uniform law: its chains stay
    at the centre. An empty set raises.

    :param matrix: ``A``, ``(batch, m, d)``
    :param offsets: ``b``, ``(batch, m)``
    :param low: lower bounds of the box, ``(batch, d)`` or ``(d,)``
    :param high: upper bounds, likewise
    :param n_samples: samples per state
    :param generator: torch random generator (on the tensors' device), or None for the global one
    :param interior: points strictly inside each set, ``(batch, d)``, used only for states where rejection accepted
        nothing; None: Chebyshev centres, computed when needed
    :param rejection_rounds: rounds of rejection
    :param oversample: candidates per sample and round
    :param mixing_steps: hit-and-run steps from an accepted (uniform) start
    :param burn_in_steps: hit-and-run steps from ``interior``
    :param return_stats: also return :class:`UniformSampleStats`
    :return: samples ``(batch, n_samples, d)`` (and the stats)
    :raises EmptySupportError: if a state's set is empty
    """
    batch, _, action_dim = matrix.shape
    dtype, device = matrix.dtype, matrix.device
    low = low.to(dtype=dtype, device=device).expand(batch, action_dim)
    high = high.to(dtype=dtype, device=device).expand(batch, action_dim)
    samples = low.unsqueeze(1).expand(batch, n_samples, action_dim).clone()
    filled = th.zeros(batch, dtype=th.long, device=device)
    accepted = th.zeros(batch, dtype=th.long, device=device)
    n_candidates = oversample * n_samples
    slots = th.arange(n_samples, device=device).unsqueeze(0)
    rounds = 0
    for _ in range(rejection_rounds):
        if bool((filled >= n_samples).all()):
            break
        rounds += 1
        fraction = th.rand((batch, n_candidates, action_dim), generator=generator, dtype=dtype, device=device)
        candidates = low.unsqueeze(1) + (high - low).unsqueeze(1) * fraction
        inside = contains_mask(candidates, matrix, offsets, low, high, tolerance=0.0)
        # Accepted candidates first, in their drawn order (a stable sort), then slot j takes the (j - filled)-th.
        order = th.argsort((~inside).to(th.uint8), dim=1, stable=True)
        ordered = candidates.gather(1, order.unsqueeze(-1).expand(-1, -1, action_dim))
        n_inside = inside.sum(dim=1)
        source = slots - filled.unsqueeze(1)
        take = (source >= 0) & (source < n_inside.unsqueeze(1))
        picked = ordered.gather(1, source.clamp(0, n_candidates - 1).unsqueeze(-1).expand(-1, -1, action_dim))
        samples = th.where(take.unsqueeze(-1), picked, samples)
        filled = (filled + n_inside).clamp(max=n_samples)
        accepted += n_inside
    missing = filled < n_samples
    from_chains = (n_samples - filled).clamp(min=0)
    if bool(missing.any()):
        samples = _fill_with_chains(
            samples,
            filled,
            matrix,
            offsets,
            low,
            high,
            generator,
            interior,
            mixing_steps,
            burn_in_steps,
        )
    if not return_stats:
        return samples
    # Rounds stop once every state is full, so the acceptance counts the candidates of the rounds that ran.
    acceptance = accepted.to(dtype) / max(n_candidates * rounds, 1)
    return samples, UniformSampleStats(acceptance=acceptance, from_hit_and_run=from_chains)


def _fill_with_chains(
    samples: th.Tensor,
    filled: th.Tensor,
    matrix: th.Tensor,
    offsets: th.Tensor,
    low: th.Tensor,
    high: th.Tensor,
    generator: th.Generator | None,
    interior: th.Tensor | None,
    mixing_steps: int,
    burn_in_steps: int,
) -> th.Tensor:
    """Fill the slots ``j >= filled`` of the states that rejection left short, with hit-and-run chains."""
    _, n_samples, action_dim = samples.shape
    dtype, device = samples.dtype, samples.device
    rows = th.nonzero(filled < n_samples).squeeze(-1)
    some = filled[rows] > 0
    starts = th.empty((rows.shape[0], n_samples, action_dim), dtype=dtype, device=device)
    if bool(some.any()):
        # A uniformly chosen accepted sample of the same state: a uniform start.
        with_samples = rows[some]
        pick = th.rand((with_samples.shape[0], n_samples), generator=generator, device=device, dtype=dtype)
        index = (pick * filled[with_samples].unsqueeze(1).to(dtype)).long().clamp(max=n_samples - 1)
        index = th.minimum(index, (filled[with_samples] - 1).unsqueeze(1))
        starts[some] = samples[with_samples].gather(1, index.unsqueeze(-1).expand(-1, -1, action_dim))
    none = ~some
    if bool(none.any()):
        without = rows[none]
        if interior is None:
            centres = []
            for state in without.tolist():
                parts = [
                    t.detach().cpu().double().numpy() for t in (matrix[state], offsets[state], low[state], high[state])
                ]
                ball = chebyshev_center(*parts)
                if ball.is_empty():
                    raise EmptySupportError(
                        f"State {state} of the batch has an empty polytope of safe actions (Chebyshev radius "
                        f"{ball.radius:.3g}): there is nothing to sample."
                    )
                centres.append(ball.center)
            points = th.as_tensor(np.array(centres), dtype=dtype, device=device)
        else:
            points = interior[without].to(dtype=dtype, device=device)
        starts[none] = points.unsqueeze(1).expand(-1, n_samples, -1)
    chains = starts.clone()
    if bool(some.any()):
        chains[some] = hit_and_run(
            matrix[rows[some]],
            offsets[rows[some]],
            low[rows[some]],
            high[rows[some]],
            starts[some],
            mixing_steps,
            generator,
        )
    if bool(none.any()):
        chains[none] = hit_and_run(
            matrix[rows[none]],
            offsets[rows[none]],
            low[rows[none]],
            high[rows[none]],
            starts[none],
            burn_in_steps,
            generator,
        )
    keep = th.arange(n_samples, device=device).unsqueeze(0) < filled[rows].unsqueeze(1)
    samples = samples.clone()
    samples[rows] = th.where(keep.unsqueeze(-1), samples[rows], chains)
    return samples


def gauge_map(
    z: th.Tensor,
    matrix: th.Tensor,
    offsets: th.Tensor,
    center: th.Tensor,
    low: th.Tensor | None = None,
    high: th.Tensor | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """
    The gauge (radial) map from the box ``[-1, 1]^d`` onto ``P = {a in [low, high] : A a <= b}`` around an interior
    point ``a0``: ``a = a0 + s(z) z`` with ``s(z) = g_box(z) / g_P(z)``, where ``g_box(z) = max_j |z_j|`` is the gauge
    of ``[-1, 1]^d`` and ``g_P(z) = max(max_i A_i z / (b_i - A_i a0), max_j z_j / (high_j - a0_j),
    max_j -z_j / (a0_j - low_j), 0)`` that of ``P - a0`` (the box faces bound the directions the rows leave open).
    Each ray from 0 in the box is mapped linearly onto the ray from ``a0`` in ``P``, the box's boundary onto ``P``'s:
    a bijection of the box onto ``P``. ``s`` is homogeneous of degree 0 (``grad s . z = 0``), so
    ``det(s I + z grad s^T) = s^d`` and ``log |det J| = d log s(z)``.

    ``z = 0`` maps to ``a0``; there the map is continuous but not differentiable (a null set), and the returned
    log-determinant is the one of the direction ``(1, ..., 1)``. Differentiable in ``z`` (and in the constraints and
    ``a0``) elsewhere, for reparameterised extraction.

    :param z: points of ``[-1, 1]^d``, ``(batch, d)`` or ``(batch, n, d)``
    :param matrix: ``A``, ``(batch, m, d)`` (padding rows contribute nothing)
    :param offsets: ``b``, ``(batch, m)``
    :param center: ``a0``, ``(batch, d)``, strictly inside every row and the box (e.g. the Chebyshev centre with a
        positive radius); slacks are floored at 1e-12 to stay finite otherwise
    :param low: lower bounds of the box, ``(batch, d)`` or ``(d,)``; None: ``-1`` (agent units)
    :param high: upper bounds, likewise; None: ``1``
    :return: the actions (same shape as ``z``) and ``log |det da/dz|`` (``(batch,)`` or ``(batch, n)``)
    """
    action_dim = matrix.shape[-1]
    low = -th.ones(action_dim, dtype=z.dtype, device=z.device) if low is None else low
    high = th.ones(action_dim, dtype=z.dtype, device=z.device) if high is None else high
    rows, bounds = _with_box_rows(matrix, offsets, low.to(z), high.to(z))
    single = z.dim() == 2
    points = z.unsqueeze(1) if single else z
    origin = center.unsqueeze(1)
    slack = (bounds - (center.unsqueeze(1) @ rows.transpose(-1, -2)).squeeze(1)).clamp_min(_MIN_SLACK)
    box_gauge = points.abs().amax(dim=-1)
    at_origin = box_gauge <= 0.0
    # At z = 0 both gauges vanish; the ratio is then taken along (1, ..., 1), and multiplies z = 0 anyway.
    direction = th.where(at_origin.unsqueeze(-1), th.ones_like(points), points)
    box_gauge = th.where(at_origin, th.ones_like(box_gauge), box_gauge)
    polytope_gauge = ((direction @ rows.transpose(-1, -2)) / slack.unsqueeze(1)).amax(dim=-1).clamp_min(1e-30)
    scale = box_gauge / polytope_gauge
    actions = origin + scale.unsqueeze(-1) * points
    log_det = action_dim * scale.log()
    if single:
        return actions.squeeze(1), log_det.squeeze(1)
    return actions, log_det
