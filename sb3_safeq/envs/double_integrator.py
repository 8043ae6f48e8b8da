"""A cart on a rail between two walls, commanded in acceleration: staying safe needs a braking margin."""

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safeq.envs._render import BLUE, GREEN, GREY, blank_canvas, fill_rect
from sb3_safeq.envs.point_mass import empty_box, float32_at_or_above


def braking_distance(speed: float, dt: float) -> float:
    """
    Distance a cart moving at ``speed >= 0`` covers before it stops, braking at full (unit) deceleration from the
    current step on, with the environment's explicit Euler steps ``p' = p + dt v, v' = v + dt a``.

    The velocities along the way are ``speed - k dt`` for ``k = 0, 1, ...`` while positive (the last brake may be
    partial, it does not change the positions), so the distance is ``dt * sum_k max(0, speed - k dt)``. No
    admissible acceleration sequence stops sooner: every velocity is at least ``speed - k dt``.

    :param speed: Current speed towards the wall; 0 for a cart at rest or moving away.
    :param dt: Time step (> 0).
    :return: The braking distance (continuous and non-decreasing in ``speed``).
    """
    if speed <= 0.0:
        return 0.0
    n_moving = math.ceil(speed / dt)  # steps k with speed - k dt > 0; an off-by-one at a break adds a ~0 term
    return dt * (n_moving * speed - dt * n_moving * (n_moving - 1) / 2.0)


def max_speed_within(distance: float, dt: float) -> float:
    """
    Largest speed whose :func:`braking_distance` is at most ``distance`` (its inverse).

    With ``n`` moving steps (speed in ``((n-1) dt, n dt]``) the braking distance is linear in the speed; ``n`` is
    the smallest integer whose largest speed ``n dt`` already brakes within ``distance``.

    :param distance: Available distance; nothing positive gives 0.
    :param dt: Time step (> 0).
    :return: The speed.
    """
    if distance <= 0.0:
        return 0.0
    total = distance / dt  # sum of the velocities along the way
    n_moving = max(1, math.ceil((math.sqrt(1.0 + 8.0 * total / dt) - 1.0) / 2.0))
    # The square root may be off by one ulp next to a break; fix n by its defining inequalities.
    while n_moving > 1 and dt * n_moving * (n_moving - 1) / 2.0 >= total:
        n_moving -= 1
    while dt * n_moving * (n_moving + 1) / 2.0 < total:
        n_moving += 1
    return (total + dt * n_moving * (n_moving - 1) / 2.0) / n_moving


class SafeDoubleIntegratorEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    A cart on a rail between walls at ``p_min`` and ``p_max``, commanded in acceleration (explicit Euler):
    ``p' = p + dt v``, ``v' = v + dt a``, ``a`` in ``[-1, 1]``. The cart starts almost at rest in
    ``start_positions``; episodes never terminate (use a TimeLimit).

    **Cost** (ground truth, from the new position only): ``info["cost"] = 1.0`` iff the step would carry the cart
    past a wall (``p' > p_max`` or ``p' < p_min``). The cart then crashes: it stops at the wall (``v' = 0``, the
    action of that step is lost).

    **Reward**: ``1 - |target - p'| / (p_max - p_min)`` on every step, in ``[0, 1]``; ``target`` defaults to
    ``p_max``. The best behavior accelerates fully, brakes fully at the last moment and parks at the wall's margin:
    it runs on the boundary of the safe set, while braking early or parking farther away scores less.

    **Observation** (float32): position and velocity.

    **Safe box** ``safe_action_bounds()``: the safe set holds the states from which full braking stops the cart
    within the walls: ``p + braking_distance(v) <= p_max`` and ``p - braking_distance(-v) >= p_min`` (see
    :func:`braking_distance`); it is the largest controlled-invariant set, since no action sequence stops sooner.
    The box is the interval of accelerations after which the next state's stopping points stay within
    ``[p_min + margin, p_max - margin]``, or, where a stopping point is already beyond that, no farther out than
    now. Because ``p'`` does not depend on ``a``, and the stopping points are monotone in ``v'``, that set is an
    interval: its bounds come from :func:`max_speed_within`. It always contains the brake-to-rest action
    ``clip(-v / dt, -1, 1)``, which keeps the stopping points where they are: every state of the safe set has a
    non-empty box, and in-box actions never leave it. In floating point, the braking action is added to the float32
    box explicitly (rounded towards braking harder), so rounding cannot empty the box, and the other bounds are
    rounded inwards. The guarantees then hold for states at least ~1e-12 inside the safe set's edge, where the
    rounding of the dynamics stops mattering (checked by the tests); the ``margin`` keeps every state reachable with
    in-box actions from the initial states that far inside. Outside the safe set (only reachable with actions
    outside the box) the cart cannot avoid a crash and the box is empty: ``low > high``.

    :param position_limits: Positions ``(p_min, p_max)`` of the walls, ``p_min < p_max``.
    :param dt: Time step (> 0).
    :param margin: Clearance (> 0) the safe box keeps between the stopping points and the walls.
    :param target: Position the reward peaks at, in ``[p_min, p_max]``; None for ``p_max``.
    :param start_positions: Range ``(low, high)`` of the uniformly drawn initial position.
    :param start_speed: The initial velocity is uniform in ``[-start_speed, start_speed]`` (>= 0).
    :param render_mode: None, or ``"rgb_array"``: ``render()`` returns a side view (walls grey, target green, cart
        blue).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}
    action_space: spaces.Box

    def __init__(
        self,
        position_limits: Sequence[float] = (-1.0, 1.0),
        dt: float = 0.05,
        margin: float = 0.01,
        target: float | None = None,
        start_positions: Sequence[float] = (-0.5, -0.3),
        start_speed: float = 0.05,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"SafeDoubleIntegratorEnv renders only 'rgb_array', got render_mode={render_mode!r}.")
        if not (0.0 < dt < math.inf) or not (0.0 < margin < math.inf) or not (0.0 <= start_speed < math.inf):
            raise ValueError(f"Need dt > 0, margin > 0 and start_speed >= 0, got {dt}, {margin} and {start_speed}.")
        self.p_min, self.p_max = self._as_range(position_limits, "position_limits")
        self.start_positions = self._as_range(start_positions, "start_positions", strict=False)
        self.dt = float(dt)
        self.margin = float(margin)
        self.start_speed = float(start_speed)
        self.target = self.p_max if target is None else float(target)
        self.render_mode = render_mode
        if not self.p_min <= self.target <= self.p_max:
            raise ValueError(f"target must lie between the walls {self.p_min} and {self.p_max}, got {target}.")
        self._check_start()

        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        # Initial states (drawn, or given to reset) have at most this speed: every state of the safe set qualifies.
        rail_speed = max_speed_within(self.p_max - self.p_min, self.dt)
        self.max_initial_speed = max(self.start_speed, rail_speed)
        # Between two reversals the cart travels at most p_max - p_min (crashes stop it), which caps the speed it
        # gains on top of its initial speed: one braking distance of the whole rail, plus one step.
        self.max_speed = rail_speed + self.dt + self.max_initial_speed
        self.observation_space = spaces.Box(
            np.array([self.p_min, -self.max_speed], dtype=np.float32),
            np.array([self.p_max, self.max_speed], dtype=np.float32),
            dtype=np.float32,
        )
        # NaN until the first reset (``_has_state``).
        self._state: tuple[float, float] = (math.nan, math.nan)
        self._has_state = False
        self._bounds_state: tuple[float, float] | None = None
        self._bounds = empty_box(self.action_space)

    @staticmethod
    def _as_range(values: Sequence[float], name: str, strict: bool = True) -> tuple[float, float]:
        if len(values) != 2 or not all(math.isfinite(value) for value in values):
            raise ValueError(f"{name} must be two finite numbers (low, high), got {values!r}.")
        low, high = float(values[0]), float(values[1])
        if low > high or (strict and low == high):
            raise ValueError(f"{name} must satisfy low {'<' if strict else '<='} high, got {values!r}.")
        return low, high

    def _check_start(self) -> None:
        """Reject initial states that could already be outside the safe set with the margin."""
        low, high = self.start_positions
        reach = braking_distance(self.start_speed, self.dt)
        if low - reach < self.p_min + self.margin or high + reach > self.p_max - self.margin:
            raise ValueError(
                f"Every initial state must be able to stop margin={self.margin} before the walls: start_positions "
                f"{self.start_positions} with speeds up to {self.start_speed} reach {reach:.4g} farther."
            )

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return f"full-braking stopping points stay >= min({self.margin:g}, current) from the walls; has brake-to-rest"

    @property
    def state(self) -> np.ndarray:
        """Current ``(position, velocity)`` (float64 copy)."""
        self._check_reset()
        return np.array(self._state, dtype=np.float64)

    def _check_reset(self) -> None:
        if not self._has_state:
            raise RuntimeError("Call reset() first: the environment has no state yet.")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        Draw the initial position and velocity uniformly; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: ``{"state": (p, v)}`` starts there instead (e.g. for tests): any position between the walls
            and speed up to ``max_initial_speed``, which every state of the safe set satisfies; it may be outside
            the safe set.
        :return: Observation and info.
        """
        super().reset(seed=seed)
        state = (options or {}).get("state")
        if state is None:
            position = float(self.np_random.uniform(*self.start_positions))
            velocity = float(self.np_random.uniform(-self.start_speed, self.start_speed))
        else:
            if len(state) != 2 or not all(math.isfinite(value) for value in state):
                raise ValueError(f"options['state'] must be two finite numbers (p, v), got {state!r}.")
            position, velocity = float(state[0]), float(state[1])
            if not (self.p_min <= position <= self.p_max and abs(velocity) <= self.max_initial_speed):
                raise ValueError(
                    f"options['state'] must have p in [{self.p_min}, {self.p_max}] and "
                    f"|v| <= {self.max_initial_speed:.4g}, got {state!r}."
                )
        self._state = (position, velocity)
        self._has_state = True
        return self._observation(), {"cost": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """
        Integrate one step, clipping the acceleration to ``[-1, 1]``.

        :param action: Acceleration, shape (1,).
        :return: Observation, reward, terminated (always False), truncated (always False: use a TimeLimit), info
            with ``cost`` (1.0 iff the step crashes into a wall).
        """
        self._check_reset()
        array = np.asarray(action)
        if array.shape != (1,):
            raise ValueError(f"The action must have shape (1,), got {action!r}.")
        acceleration = float(array[0])
        if not math.isfinite(acceleration):
            raise ValueError(f"The action must be finite, got {action!r}.")
        acceleration = min(max(acceleration, -1.0), 1.0)
        position, velocity = self._state
        new_position, new_velocity = position + self.dt * velocity, velocity + self.dt * acceleration
        crashed = not self.p_min <= new_position <= self.p_max
        if crashed:
            new_position, new_velocity = min(max(new_position, self.p_min), self.p_max), 0.0
        self._state = (new_position, new_velocity)
        reward = 1.0 - abs(self.target - new_position) / (self.p_max - self.p_min)
        return self._observation(), reward, False, False, {"cost": float(crashed)}

    def render(self) -> np.ndarray | None:
        """
        :return: with ``render_mode="rgb_array"``, a 40 x 240 RGB side view of the rail; otherwise None
        """
        if self.render_mode != "rgb_array":
            return None
        self._check_reset()
        height, width, wall = 40, 240, 10
        scale = (width - 2 * wall) / (self.p_max - self.p_min)

        def column(position: float) -> float:
            return wall + (position - self.p_min) * scale

        canvas = blank_canvas(height, width)
        fill_rect(canvas, 0, 0, height, wall, GREY)
        fill_rect(canvas, 0, width - wall, height, width, GREY)
        fill_rect(canvas, 0, column(self.target) - 1, height, column(self.target) + 1, GREEN)
        cart = column(self._state[0])
        fill_rect(canvas, 12, cart - 6, 28, cart + 6, BLUE)
        return canvas

    def _observation(self) -> np.ndarray:
        return np.array(self._state, dtype=np.float32)

    def safe_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """
        Safe box of the current state (see the class docstring); computed once per state.

        :return: ``(low, high)``, float32 arrays of shape (1,) inside the action space; ``low <= high`` in the
            safe set, ``low > high`` (empty) outside it.
        """
        self._check_reset()
        if self._state != self._bounds_state:
            self._bounds = self._compute_bounds(*self._state)
            self._bounds_state = self._state
        return self._bounds[0].copy(), self._bounds[1].copy()

    def _compute_bounds(self, position: float, velocity: float) -> tuple[np.ndarray, np.ndarray]:
        """
        Compute the safe box of a state.

        :return: ``(low, high)`` float32 arrays.
        """
        dt = self.dt
        farthest = position + braking_distance(velocity, dt)
        nearest = position - braking_distance(-velocity, dt)
        if farthest > self.p_max or nearest < self.p_min:
            return empty_box(self.action_space)
        next_position = position + dt * velocity
        # Allowed stopping points: within the margin, or no farther out than now (always feasible by braking).
        upper = max(self.p_max - self.margin, farthest)
        lower = min(self.p_min + self.margin, nearest)
        highest_velocity = max_speed_within(upper - next_position, dt)
        lowest_velocity = -max_speed_within(next_position - lower, dt)
        # float32 bounds rounded inwards, so that every float32 action in them lies in the float64 interval.
        low = float32_at_or_above(max(-1.0, (lowest_velocity - velocity) / dt))
        high = -float32_at_or_above(-min(1.0, (highest_velocity - velocity) / dt))
        # Brake to rest, rounded to float32 towards braking harder: the cart then stops or turns back, never
        # creeps on towards the wall.
        brake = float32_at_or_above(min(1.0, abs(velocity) / dt))
        brake = -brake if velocity > 0.0 else brake
        # The interval contains the brake in real arithmetic; only rounding can leave it out (or empty the interval).
        low, high = (brake, brake) if low > high else (min(low, brake), max(high, brake))
        return np.array([low], dtype=np.float32), np.array([high], dtype=np.float32)
