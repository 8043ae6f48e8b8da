"""
A 2-D double integrator with drag among circular obstacles, whose safe accelerations are a polytope: one discrete-time
high-order control barrier function (CBF) half-space per nearby obstacle.
"""

import itertools
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.common.supports.constrained_box import ConstrainedBox
from sb3_safeq.common.supports.polytope_utils import largest_inner_box
from sb3_safeq.envs._constrained import as_disc, as_point, rows_cutting_box
from sb3_safeq.envs._render import BLUE, GREEN, RED, blank_canvas, fill_disc
from sb3_safeq.envs.point_mass import Disc, empty_box, float32_box_inside

# Two obstacles sit across the straight line from the start to the goal, each a little off it so that the two ways
# around differ; two more bound the detours. Every pair is farther apart than the sum of their influence radii (see
# `influence_radius`), which the constructor checks.
DEFAULT_OBSTACLES: tuple[Disc, ...] = (
    (-1.0, 0.1, 0.45),
    (1.0, -0.1, 0.45),
    (0.0, 1.9, 0.4),
    (0.0, -1.9, 0.4),
)


def hocbf_rows(
    position: np.ndarray,
    velocity: np.ndarray,
    centre: np.ndarray,
    keep_out: float | np.ndarray,
    dt: float,
    drag: float,
    gain: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    The discrete-time high-order CBF half-space of one obstacle, vectorised over states.

    With ``h(x) = ||x - c||^2 - R^2`` (``R`` the keep-out radius), the dynamics ``p' = p + dt v``,
    ``v' = (1 - drag dt) v + dt a`` and ``psi_k = (h(p_{k+1}) - h(p_k)) / dt + gain h(p_k)`` (the discrete
    ``psi_1 = h' + gamma_1 h``; ``p_{k+1}`` does not depend on ``a_k``), the row asks ``psi_{k+1} >= 0``: the discrete
    ``psi_1' + gamma_2 psi_1 >= 0`` with ``gamma_2 = 1 / dt``. ``p_{k+2} = q + dt^2 a`` with
    ``q = p + dt v + dt (1 - drag dt) v``, and since ``h`` is convex, ``h(q + dt^2 a) >= h(q) + 2 dt^2 (q - c) . a``;
    asking this lower bound to keep ``psi_{k+1} >= 0`` is linear in ``a`` and sufficient:

        -2 dt (q - c) . a <= (h(q) - h(p_{k+1})) / dt + gain h(p_{k+1})

    :param position: ``p``, shape ``(..., 2)``
    :param velocity: ``v``, shape ``(..., 2)``
    :param centre: ``c``, shape ``(..., 2)`` (broadcasting: one state against many obstacles works too)
    :param keep_out: ``R``, the obstacle's radius plus the margin, shape ``(...)`` or a number
    :param dt: time step
    :param drag: linear drag coefficient
    :param gain: ``gamma_1``
    :return: ``A`` of shape ``(..., 2)`` and ``b`` of shape ``(...)``
    """
    next_position = position + dt * velocity
    ahead = next_position + dt * (1.0 - drag * dt) * velocity - centre
    h_next = np.sum((next_position - centre) ** 2, axis=-1) - keep_out**2
    h_ahead = np.sum(ahead**2, axis=-1) - keep_out**2
    return -2.0 * dt * ahead, (h_ahead - h_next) / dt + gain * h_next


def influence_radius(keep_out: float, dt: float, drag: float, gain: float) -> float:
    """
    A bound on how far from an obstacle's centre the next position ``p + dt v`` can be while its row cuts the
    action box ``[-1, 1]^2`` (``b < ||A||_1``), for any speed the drag allows (``|v_j| <= 1 / drag``).

    With ``D = ||p_{k+1} - c||`` and ``W = (1 - drag dt) sqrt(2) / drag`` (the largest ``||(1 - drag dt) v||``):
    ``b >= gain (D^2 - R^2) - 2 D W`` and ``||A||_1 <= 2 sqrt(2) dt (D + dt W)``, so a cutting row has ``D`` below
    the positive root of ``gain D^2 - (2 W + 2 sqrt(2) dt) D - (gain R^2 + 2 sqrt(2) dt^2 W) = 0``.

    :return: that root
    """
    reach = (1.0 - drag * dt) * math.sqrt(2.0) / drag
    linear = 2.0 * reach + 2.0 * math.sqrt(2.0) * dt
    constant = gain * keep_out**2 + 2.0 * math.sqrt(2.0) * dt * dt * reach
    return (linear + math.sqrt(linear * linear + 4.0 * gain * constant)) / (2.0 * gain)


class SafeObstacleDoubleIntegratorEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    A puck on a plane (position ``p``, velocity ``v``), pushed by a 2-D acceleration ``a`` in ``[-1, 1]^2`` against
    linear drag: ``p' = p + dt v``, ``v' = (1 - drag dt) v + dt a``. The drag caps each velocity component at
    ``1 / drag``. It starts at rest in a square around ``start`` and must reach ``goal`` past circular obstacles.

    **Cost** (ground truth, from the new position only): ``info["cost"] = 1.0`` iff the puck is inside an obstacle
    (``||p' - c|| < r``).

    **Reward**: ``progress_scale`` times the decrease of the distance to the goal, minus ``time_penalty``, plus
    ``goal_bonus`` on reaching the goal (which terminates the episode). Leaving the field
    ``[-field_half_size, field_half_size]^2`` also terminates the episode (without cost: the plane has no walls).

    **Observation** (float32): ``p``, ``v``, ``goal - p``, and for each obstacle ``c - p`` and ``||c - p|| - r``.

    **Safe set** ``safe_action_constraints()``: one discrete-time high-order CBF row per obstacle whose row cuts
    the action box (:func:`hocbf_rows`; ``R = r + margin``): ``psi_{k+1} >= 0``. Any action inside the polytope
    keeps ``psi >= 0``, hence ``h(p_{k+1}) >= (1 - gain dt) h(p_k) >= 0``: the puck stays ``margin`` outside every
    obstacle, exactly in the discrete time of the simulation (no discretisation margin needed: the rows are derived
    for the Euler steps themselves, and the tangent bound is conservative).

    *Never empty.* With ``gain <= drag`` and ``drag dt <= 1``, on every state with ``h >= 0`` and ``psi >= 0`` (all
    the states reachable with in-polytope actions from rest), one row alone is satisfied by the corner
    ``a = -sign(A)`` of the action box with slack at least ``2 dt ||q - c||_1 > 0``: writing ``psi_k >= 0`` as a
    bound on ``(p - c) . v`` and ``h(p_{k+1}) >= (1 - gain dt) h(p_k)`` gives
    ``b + ||A||_1 >= gain dt (drag - gain) h(p_k) + 2 dt ||q - c||_1``. Rows cut the box only within
    :func:`influence_radius` of their obstacle (of ``p_{k+1}``), and the constructor refuses layouts whose obstacles
    are closer than the sum of their radii of influence: at most one row is ever present. The starting states are
    at rest (``psi = gain h >= 0``).

    **Inner box** ``safe_action_bounds()``: the largest inner box of that polytope
    (:func:`~sb3_safeq.common.supports.polytope_utils.largest_inner_box`), rounded inwards to float32: the box
    support's view of the same safe set, smaller where a slanted row cuts the square.

    :param obstacles: ``(x, y, radius)`` of each obstacle.
    :param goal: Goal position.
    :param goal_radius: Reaching within this distance of the goal ends the episode.
    :param start: Centre of the square the puck starts in, at rest.
    :param start_noise: Half-width of that square.
    :param field_half_size: The episode ends when the puck leaves ``[-field_half_size, field_half_size]^2``.
    :param dt: Time step (> 0).
    :param drag: Linear drag coefficient, ``0 < drag <= 1 / dt``; the speed per axis stays below ``1 / drag``.
    :param cbf_gain: ``gamma_1`` of the barrier, ``0 < cbf_gain <= drag`` (the condition for never being empty).
    :param margin: Clearance (> 0) kept from the obstacles, on top of their radii.
    :param progress_scale: Reward per unit of distance gained towards the goal.
    :param time_penalty: Reward subtracted on every step.
    :param goal_bonus: Reward added on reaching the goal.
    :param render_mode: None, or ``"rgb_array"``: a top view (obstacles red, goal green, puck blue).
    :param support: ``"polytope"``: the action space is a :class:`~sb3_safeq.ConstrainedBox` and SafeSupportQ learns
        inside the CBF polytope (``safe_action_constraints()``); ``"box"``: a plain ``Box``, and SafeSupportQ learns
        inside the largest box in the polytope (``safe_action_bounds()``). Both methods exist either way.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_space: spaces.Box

    def __init__(
        self,
        obstacles: Sequence[Sequence[float]] = DEFAULT_OBSTACLES,
        goal: Sequence[float] = (2.2, 0.0),
        goal_radius: float = 0.15,
        start: Sequence[float] = (-2.2, 0.0),
        start_noise: float = 0.2,
        field_half_size: float = 4.0,
        dt: float = 0.1,
        drag: float = 2.0,
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
            ("field_half_size", field_half_size),
            ("dt", dt),
            ("drag", drag),
            ("cbf_gain", cbf_gain),
            ("margin", margin),
        ):
            if not (0.0 < value < math.inf):
                raise ValueError(f"{name} must be positive and finite, got {value}.")
        if drag * dt > 1.0 or cbf_gain > drag:
            raise ValueError(
                f"Need drag * dt <= 1 and cbf_gain <= drag (got drag={drag}, dt={dt}, cbf_gain={cbf_gain}): under "
                "these conditions the barrier's row never empties the polytope of safe actions."
            )
        if not (0.0 < goal_radius < math.inf) or not (0.0 <= start_noise < math.inf):
            raise ValueError(f"Need goal_radius > 0 and start_noise >= 0, got {goal_radius} and {start_noise}.")
        self.obstacles: tuple[Disc, ...] = tuple(as_disc(obstacle) for obstacle in obstacles)
        self.goal = as_point(goal, "goal")
        self.start = as_point(start, "start")
        self.goal_radius = float(goal_radius)
        self.start_noise = float(start_noise)
        self.field_half_size = float(field_half_size)
        self.dt, self.drag, self.cbf_gain, self.margin = float(dt), float(drag), float(cbf_gain), float(margin)
        self.progress_scale = float(progress_scale)
        self.time_penalty = float(time_penalty)
        self.goal_bonus = float(goal_bonus)
        self.render_mode = render_mode
        self._centres = np.array([obstacle[:2] for obstacle in self.obstacles], dtype=np.float64).reshape(-1, 2)
        self._keep_out = np.array([obstacle[2] + self.margin for obstacle in self.obstacles], dtype=np.float64)
        self._check_layout()

        #: Rows stored per state: one per obstacle (the layout check leaves at most one present at a time).
        self.max_constraints = len(self.obstacles)
        box = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        # The polytope is the support SafeSupportQ learns with; the inner box is the alternative to compare with.
        self.support = support
        self.action_space = ConstrainedBox.from_box(box, self.max_constraints) if support == "polytope" else box
        self.max_speed = 1.0 / self.drag
        # The last step may carry the puck this far past the field's edge.
        self._reach = self.field_half_size + self.dt * self.max_speed
        self.observation_space = self._make_observation_space()
        # NaN until the first reset (``_has_state``).
        self._position = np.full(2, np.nan)
        self._velocity = np.full(2, np.nan)
        self._has_state = False
        self._cache_key: bytes | None = None
        self._constraints: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 2)), np.zeros(0))
        self._bounds_key: bytes | None = None
        self._bounds: tuple[np.ndarray, np.ndarray] = (np.zeros(2, np.float32), np.zeros(2, np.float32))

    def _check_layout(self) -> None:
        """Reject layouts where two rows could be present at once, or whose start square or goal are unsafe."""
        inner = self.field_half_size - self.goal_radius
        if max(abs(value) for value in self.goal) > inner or max(map(abs, self.start)) + self.start_noise > inner:
            raise ValueError(
                f"The goal {self.goal} and the start square must lie inside the field, goal_radius inside."
            )
        radii = [influence_radius(keep_out, self.dt, self.drag, self.cbf_gain) for keep_out in self._keep_out]
        for i, j in itertools.combinations(range(len(self.obstacles)), 2):
            distance = float(np.linalg.norm(self._centres[i] - self._centres[j]))
            if distance < radii[i] + radii[j]:
                raise ValueError(
                    f"Obstacles {self.obstacles[i]} and {self.obstacles[j]} are {distance:.3f} apart, closer than the "
                    f"sum of their radii of influence {radii[i] + radii[j]:.3f}: two barrier rows could be present at "
                    "once, and the polytope of safe actions could then be empty. Move them apart (or raise drag / "
                    "cbf_gain, which shrink the radii)."
                )
        for (x, y, radius), keep_out in zip(self.obstacles, self._keep_out, strict=True):
            if math.hypot(x - self.goal[0], y - self.goal[1]) < keep_out:
                raise ValueError(
                    f"The goal {self.goal} is within margin={self.margin} of the obstacle {(x, y, radius)}."
                )
            gaps = [max(0.0, abs(c - s) - self.start_noise) for c, s in zip((x, y), self.start, strict=True)]
            if math.hypot(*gaps) < keep_out:
                raise ValueError(
                    f"The start square (centre {self.start}, half-width {self.start_noise}) comes within "
                    f"margin={self.margin} of the obstacle {(x, y, radius)}."
                )

    def _make_observation_space(self) -> spaces.Box:
        reach, speed = self._reach, self.max_speed
        low = [-reach, -reach, -speed, -speed, self.goal[0] - reach, self.goal[1] - reach]
        high = [reach, reach, speed, speed, self.goal[0] + reach, self.goal[1] + reach]
        for x, y, radius in self.obstacles:
            farthest = math.hypot(abs(x) + reach, abs(y) + reach)
            # 1e-6 of slack covers the rounding of the computed distance at the far corner.
            low += [x - reach, y - reach, -radius]
            high += [x + reach, y + reach, farthest - radius + 1e-6]
        return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32)

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return (
            f"discrete high-order CBF rows psi' >= 0 (psi = dh/dt + {self.cbf_gain:g} h, h = |p - c|^2 - (r + "
            f"{self.margin:g})^2), one per obstacle whose row cuts the action box"
        )

    @property
    def state(self) -> np.ndarray:
        """Current ``(x, y, vx, vy)`` (float64 copy)."""
        self._check_reset()
        return np.concatenate([self._position, self._velocity])

    def _check_reset(self) -> None:
        if not self._has_state:
            raise RuntimeError("Call reset() first: the environment has no state yet.")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        Put the puck at rest at a uniformly random point of the start square; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: ``{"state": (x, y, vx, vy)}`` starts there instead (e.g. for tests; it may be unsafe, and
            the guarantees hold from states with ``h >= 0`` and ``psi >= 0``).
        :return: Observation and info.
        """
        super().reset(seed=seed)
        state = (options or {}).get("state")
        if state is None:
            offset = self.np_random.uniform(-self.start_noise, self.start_noise, size=2)
            self._position = np.array(self.start, dtype=np.float64) + offset
            self._velocity = np.zeros(2)
        else:
            values = np.asarray(state, dtype=np.float64)
            if values.shape != (4,) or not np.all(np.isfinite(values)):
                raise ValueError(f"options['state'] must be four finite numbers (x, y, vx, vy), got {state!r}.")
            if np.any(np.abs(values[2:]) > self.max_speed) or np.any(np.abs(values[:2]) > self.field_half_size):
                raise ValueError(
                    f"options['state'] must have |vx|, |vy| <= 1 / drag = {self.max_speed:g} and the position in the "
                    f"field (|x|, |y| <= {self.field_half_size:g}), got {state!r}."
                )
            self._position, self._velocity = values[:2].copy(), values[2:].copy()
        self._has_state = True
        return self._observation(), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """
        Integrate one step, clipping the acceleration to ``[-1, 1]^2``.

        :param action: Acceleration, shape (2,).
        :return: Observation, reward, terminated (goal reached or field left), truncated (always False: use a
            TimeLimit), info with ``cost`` (1.0 iff the new position is inside an obstacle).
        """
        self._check_reset()
        array = np.asarray(action, dtype=np.float64)
        if array.shape != (2,):
            raise ValueError(f"The action must have shape (2,), got {action!r}.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"The action must be finite, got {action!r}.")
        acceleration = np.clip(array, -1.0, 1.0)
        previous_distance = math.dist(self._position, self.goal)
        self._position = self._position + self.dt * self._velocity
        self._velocity = (1.0 - self.drag * self.dt) * self._velocity + self.dt * acceleration
        inside = np.linalg.norm(self._position - self._centres, axis=1) < [radius for *_, radius in self.obstacles]
        distance = math.dist(self._position, self.goal)
        reached = distance <= self.goal_radius
        reward = self.progress_scale * (previous_distance - distance) - self.time_penalty
        reward += self.goal_bonus if reached else 0.0
        left = bool(np.max(np.abs(self._position)) > self.field_half_size)
        return self._observation(), reward, reached or left, False, {"cost": float(np.any(inside))}

    def _observation(self) -> np.ndarray:
        position = self._position
        relative = self._centres - position
        gaps = np.linalg.norm(relative, axis=1) - [radius for *_, radius in self.obstacles]
        obstacle_part = np.column_stack([relative, gaps]).ravel()
        return np.concatenate([position, self._velocity, np.array(self.goal) - position, obstacle_part]).astype(
            np.float32
        )

    def _key(self) -> bytes:
        return self._position.tobytes() + self._velocity.tobytes()

    def safe_action_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """
        The CBF polytope of the current state (see the class docstring); computed once per state.

        :return: ``A`` (float64, ``(m, 2)``) and ``b`` (``(m,)``), ``m <= max_constraints``, in action units: the
            rows of the obstacles whose row cuts the action box.
        """
        self._check_reset()
        key = self._key()
        if key != self._cache_key:
            matrix, offsets = hocbf_rows(
                self._position, self._velocity, self._centres, self._keep_out, self.dt, self.drag, self.cbf_gain
            )
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
        :return: with ``render_mode="rgb_array"``, a 200 x 200 RGB top view around the start, goal and obstacles
        """
        if self.render_mode != "rgb_array":
            return None
        self._check_reset()
        size = 200
        points = np.vstack([self._centres, [self.goal, self.start]])
        reach = np.abs(points).max() + 0.6
        scale = size / (2.0 * reach)

        def pixel(x: float, y: float) -> tuple[float, float]:
            return (reach - y) * scale, (x + reach) * scale

        canvas = blank_canvas(size, size)
        for x, y, radius in self.obstacles:
            fill_disc(canvas, *pixel(x, y), radius * scale, RED)
        fill_disc(canvas, *pixel(*self.goal), self.goal_radius * scale, GREEN)
        fill_disc(canvas, *pixel(*self._position), 3.0, BLUE)
        return canvas
