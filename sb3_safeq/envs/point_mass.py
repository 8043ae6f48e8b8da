"""A 2-D point mass among circular hazards, with a per-state box of velocity commands that provably stays safe."""

import math
import struct
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.envs._render import BLUE, GREEN, RED, blank_canvas, fill_disc

Disc = tuple[float, float, float]
"""A circular hazard ``(centre x, centre y, radius)``."""

# Two large discs leave a 0.08-wide gap (0.06 with the default margin) around the line from the start square's
# centre to the goal; two small ones flank the approach and the exit. Straight lines from about half of the start
# square run into a large disc, and going around the pair instead of through the gap is about a quarter longer.
DEFAULT_HAZARDS: tuple[Disc, ...] = (
    (0.0, 0.44, 0.4),
    (0.0, -0.44, 0.4),
    (-0.7, 0.55, 0.2),
    (0.7, -0.55, 0.2),
)

# A shrunk side of the box stops this far (in action units) short of the disc it would touch: far below any margin,
# far above the float64 rounding of the geometry.
_CLEARANCE_SLACK = 1e-12

_FLOAT32 = struct.Struct("f")
# A bound that float32 rounding would move outwards is pulled inwards by 2^-20 of its magnitude first: rounding to
# nearest then moves it by at most 2^-24 of its magnitude, so it cannot land outside. Below 2^-60 (still far above
# float32's subnormal range, where that relative bound fails) it is snapped inwards to 0 or 2^-60, exact in float32.
_INWARD_PULL = 2.0**-20
_TINY = 2.0**-60


def _nearest_float32(value: float) -> float:
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


def float32_at_or_above(value: float) -> float:
    """
    :param value: A float64 number within float32's range.
    :return: A float32 number (as a python float) at or above ``value``: the nearest one if it is not below, else
        one within about ``2^-19`` of ``value``'s magnitude.
    """
    nearest = _nearest_float32(value)
    if nearest >= value:
        return nearest
    if abs(value) < _TINY:
        return 0.0 if value <= 0.0 else _TINY
    return _nearest_float32(value + abs(value) * _INWARD_PULL)


def float32_box_inside(
    low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """
    Convert a float64 box to float32, rounding towards its inside: every float32 action in the result lies in the
    float64 box. Plain round-to-nearest could move a bound outwards by half a float32 ulp and let an agent pick an
    action just outside the certified box.

    A bound that is a float32 number (such as -1, 0 or 1) or that rounds inwards is rounded to nearest; the others
    move inwards by about one part in a million.

    :param low: Lower bounds (float64, within float32's range).
    :param high: Upper bounds (float64, within float32's range), ``high >= low``.
    :return: ``(low, high)`` as float32 arrays, ``low_32 >= low`` and ``high_32 <= high``; a box narrower than about
        ``2^-19`` of its bounds' magnitude can come back with ``low_32 > high_32``.
    """
    low_32 = np.array([float32_at_or_above(value) for value in low], dtype=np.float32)
    high_32 = np.array([-float32_at_or_above(-value) for value in high], dtype=np.float32)
    return low_32, high_32


def empty_box(action_space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    """
    The empty box, returned by ``safe_action_bounds()`` in a state that has no safe action.

    :param action_space: The environment's action space.
    :return: ``(action_space.high, action_space.low)``: both inside the action space, ``low > high`` on every axis.
    """
    return action_space.high.copy(), action_space.low.copy()


def _largest_clear_scale(dx: float, ex: float, dy: float, ey: float, radius: float) -> float:
    """
    Largest ``t`` in [0, 1] such that the box reaching ``t * ex`` and ``t * ey`` towards a disc stays out of it.

    The squared distance ``f(t) = max(0, dx - t ex)^2 + max(0, dy - t ey)^2`` from the box to the disc's centre is
    non-increasing, and quadratic between the points where one term reaches 0; each piece is solved in closed form.

    :param dx: Distance of the disc's centre from the origin along x (>= 0).
    :param ex: Extent of the box from the origin towards the disc along x (>= 0).
    :param dy: Distance of the disc's centre from the origin along y (>= 0).
    :param ey: Extent of the box from the origin towards the disc along y (>= 0).
    :param radius: The disc's radius, at most its centre's distance from the origin.
    :return: The scale ``t``.
    """
    radius_2 = radius * radius
    # Where each term reaches 0: the box's side passes the centre's coordinate.
    break_x = dx / ex if ex > 0.0 else math.inf
    break_y = dy / ey if ey > 0.0 else math.inf
    start = 0.0
    for end in sorted((break_x, break_y, 1.0)):
        gap_x, gap_y = dx - end * ex, dy - end * ey
        if (gap_x * gap_x if gap_x > 0.0 else 0.0) + (gap_y * gap_y if gap_y > 0.0 else 0.0) < radius_2:
            # f(t) = a t^2 - 2 b t + c on this piece, from the terms still positive inside it.
            a = b = c = 0.0
            if dx > 0.0 and break_x >= end:
                a, b, c = a + ex * ex, b + dx * ex, c + dx * dx
            if dy > 0.0 and break_y >= end:
                a, b, c = a + ey * ey, b + dy * ey, c + dy * dy
            if a == 0.0:
                return start
            # The smaller root: f decreases on this piece, which lies left of the parabola's vertex.
            discriminant = b * b - a * (c - radius_2)
            root = (b - math.sqrt(discriminant if discriminant > 0.0 else 0.0)) / a
            return min(max(root, start), end)
        if end >= 1.0:
            break
        start = end
    return 1.0


def _box_size(width_x: float, width_y: float) -> tuple[float, float]:
    # Area first; the summed width ranks flat boxes (zero area) and keeps the longest one.
    return width_x * width_y, width_x + width_y


def _clear_disc(low: list[float], high: list[float], cx: float, cy: float, radius: float) -> None:
    """
    Shrink a box containing the origin, in place, until no point of it lies strictly inside a disc that excludes the
    origin.

    Candidates: shrink both extents towards the disc by a common factor (always possible because the origin is
    outside the disc), only the x extent, or only the y extent. The one of largest area (then largest summed width)
    is kept.

    :param low: Lower corner ``[x, y]`` of the box, ``low <= 0``.
    :param high: Upper corner ``[x, y]`` of the box, ``high >= 0``.
    :param cx: Centre of the disc along x, relative to the origin.
    :param cy: Centre of the disc along y, relative to the origin.
    :param radius: Radius of the disc, at most the distance from the origin to the centre.
    """
    dx, dy = abs(cx), abs(cy)
    # Extent of the box towards the disc (to be shrunk) and away from it (kept), per axis.
    ex, away_x = (high[0], -low[0]) if cx > 0.0 else (-low[0], high[0])
    ey, away_y = (high[1], -low[1]) if cy > 0.0 else (-low[1], high[1])
    # An axis on which the centre sits at 0 gains nothing from shrinking: it keeps its extent.
    scale = _largest_clear_scale(dx, ex if dx > 0.0 else 0.0, dy, ey if dy > 0.0 else 0.0, radius)
    new_ex, new_ey = (scale * ex if dx > 0.0 else ex), (scale * ey if dy > 0.0 else ey)
    best = _box_size(away_x + new_ex, away_y + new_ey)
    # One axis only: along it the disc begins where its chord at the other axis's gap begins.
    radius_2 = radius * radius
    gap_x, gap_y = (dx - ex if dx > ex else 0.0), (dy - ey if dy > ey else 0.0)
    if dx > 0.0 and gap_y < radius:
        only_ex = dx - math.sqrt(radius_2 - gap_y * gap_y)
        if 0.0 <= only_ex < ex and _box_size(away_x + only_ex, away_y + ey) > best:
            new_ex, new_ey, best = only_ex, ey, _box_size(away_x + only_ex, away_y + ey)
    if dy > 0.0 and gap_x < radius:
        only_ey = dy - math.sqrt(radius_2 - gap_x * gap_x)
        if 0.0 <= only_ey < ey and _box_size(away_x + ex, away_y + only_ey) > best:
            new_ex, new_ey = ex, only_ey
    # A shrunk side ends where it touches the disc, up to float rounding: backing off by _CLEARANCE_SLACK keeps the
    # next position's rounding on the safe side, even from a position exactly on the disc's edge. Clamping at 0
    # keeps the origin in the box.
    new_ex = max(new_ex - _CLEARANCE_SLACK, 0.0) if new_ex < ex else ex
    new_ey = max(new_ey - _CLEARANCE_SLACK, 0.0) if new_ey < ey else ey
    if cx > 0.0:
        high[0] = new_ex
    else:
        low[0] = -new_ex
    if cy > 0.0:
        high[1] = new_ey
    else:
        low[1] = -new_ey


class SafePointMassEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    A point mass in a square arena with circular hazards, commanded in velocity: ``x' = x + dt * a``, ``a`` in
    ``[-1, 1]^2``. It starts in a small square around ``start`` and must reach the goal disc (which terminates).

    **Cost** (ground truth, from the new position only): ``info["cost"] = 1.0`` iff the step would leave the arena
    (the wall stops the mass on the boundary: the position is clipped) or ends strictly inside a hazard disc.
    Entering a hazard does not end the episode: the mass can cross it, paying on every step inside.

    **Reward**: ``progress_scale * (previous - new distance to the goal) - time_penalty``, plus ``goal_bonus`` on
    reaching the goal. The time penalty makes detours cost: the straight line runs through the narrow gap between
    the two large hazards, so a policy that keeps a wide berth from hazards scores visibly worse.

    **Observation** (float32): position (2), goal minus position (2), then for each hazard its centre minus the
    position (2) and its clearance ``distance - radius`` (1).

    **Safe box** ``safe_action_bounds()``: an axis-aligned box of actions containing ``a = 0`` whose every point
    (not only its corners) moves the mass to a position at least ``min(r_i + margin, current distance)`` from each
    hazard centre and at least ``min(margin, current distance)`` from each wall. ``a = 0`` keeps the position, so it
    always satisfies this rule: the safe set (every position inside the arena and outside the open hazard discs) is
    invariant under in-box actions and every box in it is non-empty. The box starts as the arena's per-axis
    interval and is shrunk disc by disc (nearest first, largest of a few candidate boxes) until it clears each disc.
    In floating point, the shrunk sides stop 1e-12 short of the discs and the float32 bounds are rounded inwards, so
    the guarantees hold up to the safe set's very edge (checked by the tests); the ``margin`` keeps agents that start
    in the start square (which must clear it) ``margin`` away from that edge. In a state outside the safe set (only
    reachable with actions outside the box) no action is safe and the box is empty: ``low > high``.

    :param hazards: Hazard discs ``(x, y, radius)``, each radius > 0.
    :param goal: Centre of the goal disc, inside the arena.
    :param goal_radius: Radius of the goal disc (> 0); reaching it terminates the episode.
    :param start: Centre of the start square.
    :param start_noise: Half-width (>= 0) of the start square; the whole square must be safe.
    :param arena_half_size: The arena is ``[-arena_half_size, arena_half_size]^2``.
    :param dt: Time step (> 0): one step moves at most ``dt`` along each axis.
    :param margin: Clearance (> 0) the safe box keeps from hazards and walls.
    :param progress_scale: Reward per unit of distance gained towards the goal.
    :param time_penalty: Reward subtracted on every step.
    :param goal_bonus: Reward added on reaching the goal.
    :param render_mode: None, or ``"rgb_array"``: ``render()`` returns a top view (hazards red, goal green, mass blue).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_space: spaces.Box

    def __init__(
        self,
        hazards: Sequence[Sequence[float]] = DEFAULT_HAZARDS,
        goal: Sequence[float] = (1.2, 0.0),
        goal_radius: float = 0.1,
        start: Sequence[float] = (-1.2, 0.0),
        start_noise: float = 0.15,
        arena_half_size: float = 1.5,
        dt: float = 0.1,
        margin: float = 0.01,
        progress_scale: float = 10.0,
        time_penalty: float = 0.5,
        goal_bonus: float = 10.0,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"SafePointMassEnv renders only 'rgb_array', got render_mode={render_mode!r}.")
        for name, value in (("arena_half_size", arena_half_size), ("dt", dt), ("margin", margin)):
            if not (0.0 < value < math.inf):
                raise ValueError(f"{name} must be positive and finite, got {value}.")
        if not (0.0 < goal_radius < math.inf) or not (0.0 <= start_noise < math.inf):
            raise ValueError(f"Need goal_radius > 0 and start_noise >= 0, got {goal_radius} and {start_noise}.")
        self.hazards: tuple[Disc, ...] = tuple(self._as_disc(hazard) for hazard in hazards)
        self.goal = self._as_point(goal, "goal")
        self.start = self._as_point(start, "start")
        self.goal_radius = float(goal_radius)
        self.start_noise = float(start_noise)
        self.arena_half_size = float(arena_half_size)
        self.dt = float(dt)
        self.margin = float(margin)
        self.progress_scale = float(progress_scale)
        self.time_penalty = float(time_penalty)
        self.goal_bonus = float(goal_bonus)
        self.render_mode = render_mode
        self._check_layout()

        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = self._make_observation_space()
        # NaN until the first reset (``_has_state``).
        self._position: tuple[float, float] = (math.nan, math.nan)
        self._has_state = False
        self._bounds_position: tuple[float, float] | None = None
        self._bounds = empty_box(self.action_space)

    @staticmethod
    def _as_point(point: Sequence[float], name: str) -> tuple[float, float]:
        if len(point) != 2 or not all(math.isfinite(value) for value in point):
            raise ValueError(f"{name} must be two finite coordinates, got {point!r}.")
        return float(point[0]), float(point[1])

    @staticmethod
    def _as_disc(hazard: Sequence[float]) -> Disc:
        if len(hazard) != 3 or not all(math.isfinite(value) for value in hazard) or not hazard[2] > 0.0:
            raise ValueError(f"Each hazard must be (x, y, radius) with finite values and radius > 0, got {hazard!r}.")
        return float(hazard[0]), float(hazard[1]), float(hazard[2])

    def _check_layout(self) -> None:
        """Reject layouts whose goal or start square are not safe with the margin."""
        inner = self.arena_half_size - self.margin
        if max(abs(value) for value in self.goal) > inner:
            raise ValueError(f"The goal {self.goal} must lie in the arena, at least margin={self.margin} inside.")
        if max(abs(value) + self.start_noise for value in self.start) > inner:
            raise ValueError(
                f"The start square (centre {self.start}, half-width {self.start_noise}) must lie in the arena, at "
                f"least margin={self.margin} inside."
            )
        for x, y, radius in self.hazards:
            if math.hypot(x - self.goal[0], y - self.goal[1]) < radius + self.margin:
                raise ValueError(f"The goal {self.goal} is within margin={self.margin} of the hazard {(x, y, radius)}.")
            # The point of the start square closest to the hazard's centre must clear it.
            gaps = [max(0.0, abs(c - s) - self.start_noise) for c, s in zip((x, y), self.start, strict=True)]
            if math.hypot(*gaps) < radius + self.margin:
                raise ValueError(
                    f"The start square (centre {self.start}, half-width {self.start_noise}) comes within "
                    f"margin={self.margin} of the hazard {(x, y, radius)}."
                )

    def _make_observation_space(self) -> spaces.Box:
        half = self.arena_half_size
        low = [-half, -half, self.goal[0] - half, self.goal[1] - half]
        high = [half, half, self.goal[0] + half, self.goal[1] + half]
        for x, y, radius in self.hazards:
            farthest = math.hypot(abs(x) + half, abs(y) + half)
            # 1e-6 of slack covers the rounding of the computed distance at the far corner.
            low += [x - half, y - half, -radius]
            high += [x + half, y + half, farthest - radius + 1e-6]
        return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32)

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return (
            f"box around a=0 whose every point keeps clearance >= min({self.margin:g}, current) from hazards and walls"
        )

    @property
    def position(self) -> np.ndarray:
        """Current position (float64 copy)."""
        self._check_reset()
        return np.array(self._position, dtype=np.float64)

    def _check_reset(self) -> None:
        if not self._has_state:
            raise RuntimeError("Call reset() first: the environment has no state yet.")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        Put the mass at a uniformly random point of the start square; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: ``{"position": (x, y)}`` starts at that point instead (any point of the arena, e.g. for
            tests; it may be unsafe).
        :return: Observation and info.
        """
        super().reset(seed=seed)
        position = (options or {}).get("position")
        if position is None:
            offset = self.np_random.uniform(-self.start_noise, self.start_noise, size=2)
            position = (self.start[0] + float(offset[0]), self.start[1] + float(offset[1]))
        x, y = self._as_point(position, "options['position']")
        if max(abs(x), abs(y)) > self.arena_half_size:
            raise ValueError(f"options['position'] must lie in the arena, got {position!r}.")
        self._position = (x, y)
        self._has_state = True
        return self._observation(), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """
        Move by ``dt * action``, clipping the action to ``[-1, 1]`` and the new position to the arena.

        :param action: Velocity command of shape (2,).
        :return: Observation, reward, terminated (goal reached), truncated (always False: use a TimeLimit), info
            with ``cost`` (1.0 iff the move hits a wall or ends inside a hazard).
        """
        self._check_reset()
        array = np.asarray(action)
        if array.shape != (2,):
            raise ValueError(f"The action must have shape (2,), got {action!r}.")
        ax, ay = float(array[0]), float(array[1])
        if not (math.isfinite(ax) and math.isfinite(ay)):
            raise ValueError(f"The action must be finite, got {action!r}.")
        ax, ay = min(max(ax, -1.0), 1.0), min(max(ay, -1.0), 1.0)
        x, y = self._position
        new_x, new_y = x + self.dt * ax, y + self.dt * ay
        half = self.arena_half_size
        hits_wall = max(abs(new_x), abs(new_y)) > half
        new_x, new_y = min(max(new_x, -half), half), min(max(new_y, -half), half)
        in_hazard = any(math.hypot(new_x - cx, new_y - cy) < radius for cx, cy, radius in self.hazards)
        self._position = (new_x, new_y)

        previous_distance = math.hypot(self.goal[0] - x, self.goal[1] - y)
        distance = math.hypot(self.goal[0] - new_x, self.goal[1] - new_y)
        reached = distance <= self.goal_radius
        reward = self.progress_scale * (previous_distance - distance) - self.time_penalty
        reward += self.goal_bonus if reached else 0.0
        return self._observation(), reward, reached, False, {"cost": float(hits_wall or in_hazard)}

    def render(self) -> np.ndarray | None:
        """
        :return: with ``render_mode="rgb_array"``, a 200 x 200 RGB top view of the arena; otherwise None
        """
        if self.render_mode != "rgb_array":
            return None
        self._check_reset()
        size = 200
        scale = size / (2.0 * self.arena_half_size)

        def pixel(x: float, y: float) -> tuple[float, float]:
            return (self.arena_half_size - y) * scale, (x + self.arena_half_size) * scale

        canvas = blank_canvas(size, size)
        for x, y, radius in self.hazards:
            fill_disc(canvas, *pixel(x, y), radius * scale, RED)
        fill_disc(canvas, *pixel(*self.goal), self.goal_radius * scale, GREEN)
        fill_disc(canvas, *pixel(*self._position), 3.0, BLUE)
        return canvas

    def _observation(self) -> np.ndarray:
        x, y = self._position
        values = [x, y, self.goal[0] - x, self.goal[1] - y]
        for cx, cy, radius in self.hazards:
            values += [cx - x, cy - y, math.hypot(cx - x, cy - y) - radius]
        return np.array(values, dtype=np.float32)

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """
        Safe box of the current state (see the class docstring); computed once per state.

        :return: ``(low, high)``, float32 arrays of shape (2,) inside the action space; ``low <= 0 <= high`` in the
            safe set, ``low > high`` (empty) outside it.
        """
        self._check_reset()
        if self._position != self._bounds_position:
            self._bounds = self._compute_bounds(*self._position)
            self._bounds_position = self._position
        return self._bounds[0].copy(), self._bounds[1].copy()

    def _compute_bounds(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        """
        Compute the safe box of a position, in action units (``dt`` times an action is a displacement).

        :return: ``(low, high)`` float32 arrays.
        """
        # Only discs whose keep-out disc comes within one step's reach (dt * sqrt(2)) can constrain the box.
        reach = self.margin + self.dt * math.sqrt(2.0)
        near = []
        for cx, cy, radius in self.hazards:
            distance = math.hypot(cx - x, cy - y)
            if distance < radius:
                return empty_box(self.action_space)
            if distance < radius + reach:
                near.append((distance, cx, cy, radius))
        # Walls: per-axis interval; "min(margin, current distance)" means 0 (stay) when already within the margin.
        half, inverse_dt = self.arena_half_size - self.margin, 1.0 / self.dt
        low = [min(0.0, max(-1.0, (-half - x) * inverse_dt)), min(0.0, max(-1.0, (-half - y) * inverse_dt))]
        high = [max(0.0, min(1.0, (half - x) * inverse_dt)), max(0.0, min(1.0, (half - y) * inverse_dt))]
        # The nearest disc usually constrains the box most; shrinking for it first leaves the most room.
        for distance, cx, cy, radius in sorted(near):
            centre_x, centre_y = (cx - x) * inverse_dt, (cy - y) * inverse_dt
            keep_out = min(radius + self.margin, distance) * inverse_dt
            # Distance from the box to the centre, per axis (0 where the centre's coordinate is inside the box).
            gap_x = low[0] - centre_x if centre_x < low[0] else (centre_x - high[0] if centre_x > high[0] else 0.0)
            gap_y = low[1] - centre_y if centre_y < low[1] else (centre_y - high[1] if centre_y > high[1] else 0.0)
            if gap_x * gap_x + gap_y * gap_y < keep_out * keep_out:
                _clear_disc(low, high, centre_x, centre_y, keep_out)
        return float32_box_inside(low, high)
