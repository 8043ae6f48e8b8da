"""
A unicycle (speed and turn rate) in a walled arena with circular obstacles, whose safe commands are a polytope: one
control barrier function (CBF) half-space per nearby obstacle or wall, on a look-ahead point that couples both axes.
"""

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.common.supports.constrained_box import ConstrainedBox
from sb3_safeq.common.supports.polytope_utils import largest_inner_box
from sb3_safeq.envs._constrained import as_disc, as_point, rows_cutting_box
from sb3_safeq.envs._render import BLUE, GREEN, GREY, RED, blank_canvas, fill_disc, fill_rect
from sb3_safeq.envs.point_mass import Disc, empty_box, float32_box_inside

# A large obstacle on the diagonal from the start to the goal and two smaller ones beside it: the shortest ways
# pass through the narrow gaps between them (along slanted faces of the polytope), the longer ones around the
# small obstacles, by the walls.
DEFAULT_OBSTACLES: tuple[Disc, ...] = (
    (0.0, 0.0, 0.45),
    (-1.0, 1.0, 0.3),
    (1.0, -1.0, 0.3),
)


class SafeUnicycleEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    A unicycle at ``p`` with heading ``theta``, commanded in speed ``v`` (in ``[min_speed, max_speed]``, reversing
    slowly allowed) and turn rate ``omega`` (in ``[-max_turn_rate, max_turn_rate]``), in the arena
    ``[-arena_half_size, arena_half_size]^2`` with circular obstacles; it must reach ``goal``.

    The body's velocity ``v e`` does not involve ``omega``, so a barrier on ``p`` would give rows in ``v`` alone
    (``omega`` acts only at relative degree 2). As is usual for CBFs of unicycles, the barriers are put on the
    *look-ahead point* ``l = p + lookahead (cos theta, sin theta)``, which moves with ``l' = v e + lookahead omega n``
    (``e = (cos theta, sin theta)``, ``n = (-sin theta, cos theta)``): affine in both commands, so every row couples
    speed and turn rate. The simulation integrates exactly that: ``l_{k+1} = l_k + dt (v e + lookahead omega n)``,
    ``theta_{k+1} = theta_k + dt omega``, and the body follows as ``p = l - lookahead e`` (to first order in ``dt``
    the unicycle ``p' = v e``).

    **Cost** (ground truth, from the new body position only): ``info["cost"] = 1.0`` iff ``p`` is inside an obstacle
    (``||p - c|| < r``) or outside the arena.

    **Reward**: ``progress_scale`` times the decrease of the body's distance to the goal, minus ``time_penalty``,
    plus ``goal_bonus`` on reaching the goal (which terminates the episode).

    **Observation** (float32): ``p``, ``cos theta``, ``sin theta``, ``goal - p``, and for each obstacle ``c - p`` and
    ``||c - p|| - r``.

    **Safe set** ``safe_action_constraints()``: CBF rows ``grad h(l) . (v e + lookahead omega n) >= -cbf_gain h(l)``
    for ``h = ||l - c||^2 - (r + lookahead + margin)^2`` (each obstacle) and
    ``h = arena_half_size - lookahead - margin -+ l_x`` (or ``l_y``; each wall), keeping only the rows that cut the
    action box. Since ``h`` is convex (affine for walls), ``h(l_{k+1}) >= h(l_k) + dt grad h . l' >=
    (1 - cbf_gain dt) h(l_k)``: in-polytope commands keep every ``h >= 0`` exactly in the simulation's discrete time,
    and then the body is ``margin`` away from every obstacle and wall. The commands ``(0, 0)`` satisfy every row
    (``b = cbf_gain h >= 0``) and lie in the action box, so the polytope is never empty.

    **Inner box** ``safe_action_bounds()``: the largest inner box of that polytope
    (:func:`~sb3_safeq.common.supports.polytope_utils.largest_inner_box`), rounded inwards to float32.

    :param obstacles: ``(x, y, radius)`` of each obstacle.
    :param goal: Goal position of the body.
    :param goal_radius: Reaching within this distance of the goal ends the episode.
    :param start: Centre of the square the body starts in, with a uniformly random heading.
    :param start_noise: Half-width of that square.
    :param arena_half_size: The arena is ``[-arena_half_size, arena_half_size]^2``.
    :param dt: Time step (> 0).
    :param speed_range: ``(min_speed, max_speed)``, ``min_speed <= 0 < max_speed``.
    :param max_turn_rate: Largest ``|omega|`` (> 0).
    :param lookahead: Distance of the look-ahead point ahead of the body (> 0).
    :param cbf_gain: ``gamma`` of the barriers, ``0 < cbf_gain <= 1 / dt``.
    :param margin: Clearance (> 0) kept from obstacles and walls.
    :param progress_scale: Reward per unit of distance gained towards the goal.
    :param time_penalty: Reward subtracted on every step.
    :param goal_bonus: Reward added on reaching the goal.
    :param render_mode: None, or ``"rgb_array"``: a top view (walls grey, obstacles red, goal green, body blue).
    :param support: ``"polytope"``: the action space is a :class:`~sb3_safeq.ConstrainedBox` and SafeSupportQ learns
        inside the CBF polytope (``safe_action_constraints()``); ``"box"``: a plain ``Box``, and SafeSupportQ learns
        inside the largest box in the polytope (``safe_action_bounds()``). Both methods exist either way.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_space: spaces.Box

    def __init__(
        self,
        obstacles: Sequence[Sequence[float]] = DEFAULT_OBSTACLES,
        goal: Sequence[float] = (1.4, 1.4),
        goal_radius: float = 0.15,
        start: Sequence[float] = (-1.3, -1.3),
        start_noise: float = 0.2,
        arena_half_size: float = 2.0,
        dt: float = 0.1,
        speed_range: Sequence[float] = (-0.25, 1.0),
        max_turn_rate: float = 2.0,
        lookahead: float = 0.2,
        cbf_gain: float = 2.0,
        margin: float = 0.02,
        progress_scale: float = 10.0,
        time_penalty: float = 0.1,
        goal_bonus: float = 10.0,
        render_mode: str | None = None,
        support: str = "polytope",
    ) -> None:
        if support not in ("polytope", "box"):
            raise ValueError(f"support must be 'polytope' or 'box', got {support!r}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"{type(self).__name__} renders only 'rgb_array', got render_mode={render_mode!r}.")
        for name, value in (
            ("arena_half_size", arena_half_size),
            ("dt", dt),
            ("max_turn_rate", max_turn_rate),
            ("lookahead", lookahead),
            ("cbf_gain", cbf_gain),
            ("margin", margin),
            ("goal_radius", goal_radius),
        ):
            if not (0.0 < value < math.inf):
                raise ValueError(f"{name} must be positive and finite, got {value}.")
        if cbf_gain * dt > 1.0:
            raise ValueError(f"Need cbf_gain * dt <= 1 (got {cbf_gain} * {dt}): the barrier would overshoot.")
        if len(speed_range) != 2 or not (-math.inf < speed_range[0] <= 0.0 < speed_range[1] < math.inf):
            raise ValueError(f"speed_range must be (min_speed <= 0, max_speed > 0), finite, got {speed_range!r}.")
        if not (0.0 <= start_noise < math.inf):
            raise ValueError(f"start_noise must be >= 0, got {start_noise}.")
        self.obstacles: tuple[Disc, ...] = tuple(as_disc(obstacle) for obstacle in obstacles)
        self.goal = as_point(goal, "goal")
        self.start = as_point(start, "start")
        self.goal_radius = float(goal_radius)
        self.start_noise = float(start_noise)
        self.arena_half_size = float(arena_half_size)
        self.dt, self.lookahead, self.cbf_gain, self.margin = (
            float(dt),
            float(lookahead),
            float(cbf_gain),
            float(margin),
        )
        self.progress_scale = float(progress_scale)
        self.time_penalty = float(time_penalty)
        self.goal_bonus = float(goal_bonus)
        self.render_mode = render_mode
        self._centres = np.array([obstacle[:2] for obstacle in self.obstacles], dtype=np.float64).reshape(-1, 2)
        self._radii = np.array([obstacle[2] for obstacle in self.obstacles], dtype=np.float64)
        # Barriers are on the look-ahead point: obstacles grow by the look-ahead distance, the walls move in by it.
        self._keep_out = self._radii + self.lookahead + self.margin
        self._wall = self.arena_half_size - self.lookahead - self.margin
        self._check_layout()

        #: Rows stored per state: one per obstacle and one per wall.
        self.max_constraints = len(self.obstacles) + 4
        box = spaces.Box(
            np.array([speed_range[0], -max_turn_rate], dtype=np.float32),
            np.array([speed_range[1], max_turn_rate], dtype=np.float32),
            dtype=np.float32,
        )
        # The polytope is the support SafeSupportQ learns with; the inner box is the alternative to compare with.
        self.support = support
        self.action_space = ConstrainedBox.from_box(box, self.max_constraints) if support == "polytope" else box
        self.observation_space = self._make_observation_space()
        # NaN until the first reset (``_has_state``).
        self._lookahead_point = np.full(2, np.nan)
        self._has_state = False
        self._heading = 0.0
        self._cache_key: tuple[bytes, float] | None = None
        self._constraints: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 2)), np.zeros(0))
        self._bounds_key: tuple[bytes, float] | None = None
        self._bounds: tuple[np.ndarray, np.ndarray] = (np.zeros(2, np.float32), np.zeros(2, np.float32))

    def _check_layout(self) -> None:
        """Reject layouts whose goal or start square (with any heading) are not safe for the look-ahead point."""
        if self._wall <= 0.0:
            raise ValueError(f"The arena (half-size {self.arena_half_size}) is too small for lookahead and margin.")
        if max(abs(value) for value in self.goal) > self.arena_half_size - self.margin:
            raise ValueError(f"The goal {self.goal} must lie in the arena, at least margin={self.margin} inside.")
        # Any heading puts the look-ahead point within `lookahead` of the body.
        if max(abs(value) for value in self.start) + self.start_noise + self.lookahead > self._wall:
            raise ValueError(
                f"The start square (centre {self.start}, half-width {self.start_noise}) must lie at least "
                f"lookahead + margin = {self.lookahead + self.margin} inside the arena's walls, for any heading."
            )
        for obstacle, keep_out in zip(self.obstacles, self._keep_out, strict=True):
            x, y, _ = obstacle
            if math.hypot(x - self.goal[0], y - self.goal[1]) < obstacle[2] + self.margin:
                raise ValueError(f"The goal {self.goal} is within margin={self.margin} of the obstacle {obstacle}.")
            gaps = [max(0.0, abs(c - s) - self.start_noise) for c, s in zip((x, y), self.start, strict=True)]
            if math.hypot(*gaps) < keep_out + self.lookahead:
                raise ValueError(
                    f"The start square (centre {self.start}, half-width {self.start_noise}) comes within "
                    f"2 lookahead + margin of the obstacle {obstacle}: some headings would start unsafe."
                )

    def _make_observation_space(self) -> spaces.Box:
        half = self.arena_half_size
        low = [-half, -half, -1.0, -1.0, self.goal[0] - half, self.goal[1] - half]
        high = [half, half, 1.0, 1.0, self.goal[0] + half, self.goal[1] + half]
        for x, y, radius in self.obstacles:
            farthest = math.hypot(abs(x) + half, abs(y) + half)
            # 1e-6 of slack covers the rounding of the computed distance at the far corner.
            low += [x - half, y - half, -radius]
            high += [x + half, y + half, farthest - radius + 1e-6]
        return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32)

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return (
            f"CBF rows dh/dt >= -{self.cbf_gain:g} h on the look-ahead point {self.lookahead:g} ahead, per obstacle "
            f"(clearance r + {self.lookahead:g} + {self.margin:g}) and wall, kept where they cut the action box"
        )

    @property
    def heading(self) -> float:
        """Current heading ``theta`` (radians, wrapped to ``[-pi, pi)``)."""
        self._check_reset()
        return self._heading

    @property
    def position(self) -> np.ndarray:
        """Current body position ``p`` (float64 copy)."""
        self._check_reset()
        return self._body()

    def _body(self) -> np.ndarray:
        return self._lookahead_point - self.lookahead * np.array([math.cos(self._heading), math.sin(self._heading)])

    def _check_reset(self) -> None:
        if not self._has_state:
            raise RuntimeError("Call reset() first: the environment has no state yet.")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        Put the body at a uniformly random point of the start square with a uniformly random heading.

        :param seed: Seed of the environment's random generator.
        :param options: ``{"state": (x, y, theta)}`` starts there instead (body position and heading; e.g. for tests,
            it may be unsafe).
        :return: Observation and info (``cost`` 0).
        """
        super().reset(seed=seed)
        state = (options or {}).get("state")
        if state is None:
            offset = self.np_random.uniform(-self.start_noise, self.start_noise, size=2)
            body = np.array(self.start, dtype=np.float64) + offset
            heading = float(self.np_random.uniform(-math.pi, math.pi))
        else:
            values = np.asarray(state, dtype=np.float64)
            if values.shape != (3,) or not np.all(np.isfinite(values)):
                raise ValueError(f"options['state'] must be three finite numbers (x, y, theta), got {state!r}.")
            body, heading = values[:2].copy(), float(values[2])
        self._heading = _wrap(heading)
        self._lookahead_point = body + self.lookahead * np.array([math.cos(self._heading), math.sin(self._heading)])
        self._has_state = True
        return self._observation(), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """
        Move the look-ahead point and turn by one step, clipping the commands to the action space.

        :param action: ``(v, omega)``, shape (2,).
        :return: Observation, reward, terminated (goal reached), truncated (always False: use a TimeLimit), info with
            ``cost`` (1.0 iff the body ends inside an obstacle or outside the arena).
        """
        self._check_reset()
        array = np.asarray(action, dtype=np.float64)
        if array.shape != (2,):
            raise ValueError(f"The action must have shape (2,), got {action!r}.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"The action must be finite, got {action!r}.")
        speed, turn_rate = np.clip(array, self.action_space.low, self.action_space.high)
        previous_distance = math.dist(self._body(), self.goal)
        self._lookahead_point = self._lookahead_point + self.dt * (self._frame() @ np.array([speed, turn_rate]))
        self._heading = _wrap(self._heading + self.dt * float(turn_rate))
        body = self._body()
        in_obstacle = bool(np.any(np.linalg.norm(body - self._centres, axis=1) < self._radii))
        outside = bool(np.max(np.abs(body)) > self.arena_half_size)
        distance = math.dist(body, self.goal)
        reached = distance <= self.goal_radius
        reward = self.progress_scale * (previous_distance - distance) - self.time_penalty
        reward += self.goal_bonus if reached else 0.0
        return self._observation(), reward, reached, False, {"cost": float(in_obstacle or outside)}

    def _frame(self) -> np.ndarray:
        """:return: ``B`` with ``l' = B (v, omega)``: columns ``e`` and ``lookahead n``, shape (2, 2)"""
        cos, sin = math.cos(self._heading), math.sin(self._heading)
        return np.array([[cos, -self.lookahead * sin], [sin, self.lookahead * cos]])

    def _observation(self) -> np.ndarray:
        body = self._body()
        relative = self._centres - body
        gaps = np.linalg.norm(relative, axis=1) - self._radii
        obstacle_part = np.column_stack([relative, gaps]).ravel()
        heading = [math.cos(self._heading), math.sin(self._heading)]
        values = np.concatenate([body, heading, np.array(self.goal) - body, obstacle_part])
        return values.astype(np.float32)

    def _key(self) -> tuple[bytes, float]:
        return self._lookahead_point.tobytes(), self._heading

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """
        The CBF polytope of the current state (see the class docstring); computed once per state.

        :return: ``A`` (float64, ``(m, 2)``) and ``b`` (``(m,)``), ``m <= max_constraints``, in action units
            ``(v, omega)``: the rows of the obstacles and walls that cut the action box.
        """
        self._check_reset()
        key = self._key()
        if key != self._cache_key:
            frame, point = self._frame(), self._lookahead_point
            # Obstacles: grad h = 2 (l - c); the row -grad h . B u <= gain h.
            relative = point - self._centres
            obstacle_rows = -2.0 * relative @ frame
            obstacle_offsets = self.cbf_gain * (np.sum(relative**2, axis=1) - self._keep_out**2)
            # Walls: h = wall - s l_k (s = +-1, k = x, y), grad h = -s e_k; the row s (B u)_k <= gain h.
            signs = np.array([1.0, -1.0, 1.0, -1.0])
            axes = np.array([0, 0, 1, 1])
            wall_rows = signs[:, None] * frame[axes]
            wall_offsets = self.cbf_gain * (self._wall - signs * point[axes])
            matrix = np.vstack([obstacle_rows, wall_rows])
            offsets = np.concatenate([obstacle_offsets, wall_offsets])
            self._constraints = rows_cutting_box(matrix, offsets, self.action_space.low, self.action_space.high)
            self._cache_key = key
        return self._constraints[0].copy(), self._constraints[1].copy()

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """
        The largest inner box of the CBF polytope (see the class docstring); computed once per state.

        :return: ``(low, high)``, float32 arrays of shape (2,) inside the action space and inside the polytope.
        """
        self._check_reset()
        key = self._key()
        if key != self._bounds_key:
            matrix, offsets = self.safe_action_constraints()
            low, high = largest_inner_box(matrix, offsets, self.action_space.low, self.action_space.high)
            # An empty polytope (reachable only by leaving it) is signalled as the box support expects: low > high,
            # inside the action space (largest_inner_box says it with infinities).
            empty = not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)))
            self._bounds = empty_box(self.action_space) if empty else float32_box_inside(low, high)
            self._bounds_key = key
        return self._bounds[0].copy(), self._bounds[1].copy()

    def render(self) -> np.ndarray | None:
        """
        :return: with ``render_mode="rgb_array"``, a 200 x 200 RGB top view of the arena; otherwise None
        """
        if self.render_mode != "rgb_array":
            return None
        self._check_reset()
        size, wall = 200, 4
        scale = (size - 2 * wall) / (2.0 * self.arena_half_size)

        def pixel(x: float, y: float) -> tuple[float, float]:
            return wall + (self.arena_half_size - y) * scale, wall + (x + self.arena_half_size) * scale

        canvas = blank_canvas(size, size)
        for top, left, bottom, right in ((0, 0, wall, size), (size - wall, 0, size, size)):
            fill_rect(canvas, top, left, bottom, right, GREY)
        for top, left, bottom, right in ((0, 0, size, wall), (0, size - wall, size, size)):
            fill_rect(canvas, top, left, bottom, right, GREY)
        for x, y, radius in self.obstacles:
            fill_disc(canvas, *pixel(x, y), radius * scale, RED)
        fill_disc(canvas, *pixel(*self.goal), self.goal_radius * scale, GREEN)
        fill_disc(canvas, *pixel(*self._body()), 3.0, BLUE)
        return canvas


def _wrap(angle: float) -> float:
    """:return: ``angle`` wrapped to ``[-pi, pi)``"""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi
