"""CartPole with a cart-position limit and a look-ahead action mask that provably keeps the cart inside it."""

import math
from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from sb3_safeq.envs._render import BLUE, GREY, RED, blank_canvas, fill_disc, fill_rect, pygame_installed

# The look-ahead re-implements the env's arithmetic with ``math`` (fast on python floats) where the env uses
# numpy; the two may differ in the last bit. These margins absorb that rounding so a state the look-ahead
# certifies is never one the env would put outside the limit (or keep alive when the look-ahead let it end).
_POSITION_MARGIN = 1e-9
_ANGLE_MARGIN = 1e-9


class SafeCartPoleEnv(CartPoleEnv):
    """
    Gymnasium's CartPole with a cart-position limit ``|x| <= position_limit``.

    Leaving the limit costs ``info["cost"] = 1.0`` on every step whose resulting ``|x|`` exceeds it (ground
    truth read from the state, never from the mask); the reward and CartPole's own termination rules (pole beyond
    12 degrees, ``|x| > 2.4``) are unchanged, so exceeding the limit does not end the episode.

    ``action_masks()`` marks action ``a`` safe iff, after ``a``, holding a constant force in one direction (either
    one: braking, or pushing away from the nearer limit) keeps ``|x| <= position_limit`` at every step until the
    episode terminates because the pole falls, within ``lookahead_steps`` steps. The look-ahead runs the env's
    own equations of motion on a copy of the state. Under a constant force the pole always falls within a few
    dozen steps (the force tilts its unstable equilibrium beyond 12 degrees), and pole-fall termination ends the
    episode, so a certified action has a certified continuation: if ``a`` is certified with direction ``d``,
    then in the next state ``d`` is certified by the tail of the same trajectory. The mask is therefore never
    empty along a masked trajectory started where it was non-empty (all CartPole initial states), and a masked
    policy never leaves the limit. A position-only mask is not invariant: the cart's velocity carries it out.

    In a state where the episode has already terminated no step can follow, so no action can cause an unsafe
    visit: the mask is all True there (the support is never empty at a terminal observation).

    :param sutton_barto_reward: Passed to CartPole.
    :param render_mode: Passed to CartPole.
    :param position_limit: Cart-position limit (> 0); leaving ``[-limit, limit]`` costs 1.
    :param lookahead_steps: Longest look-ahead; a hold that has not ended the episode by then is not trusted,
        which only makes the mask more conservative. 100 steps (2 s) is far beyond the ~10-30 steps a pole
        needs to fall under a constant force.
    """

    def __init__(
        self,
        sutton_barto_reward: bool = False,
        render_mode: str | None = None,
        position_limit: float = 1.0,
        lookahead_steps: int = 100,
    ) -> None:
        super().__init__(sutton_barto_reward=sutton_barto_reward, render_mode=render_mode)
        if not (0.0 < position_limit < math.inf):
            raise ValueError(f"position_limit must be a positive finite distance, got {position_limit}.")
        if isinstance(lookahead_steps, bool) or not isinstance(lookahead_steps, int) or lookahead_steps < 1:
            raise ValueError(f"lookahead_steps must be a positive integer, got {lookahead_steps!r}.")
        self.position_limit = float(position_limit)
        self.lookahead_steps = lookahead_steps
        self._mask_state: tuple[float, ...] | None = None
        self._mask = np.ones(2, dtype=bool)

    def render(self) -> Any:
        """
        gymnasium's rendering; ``rgb_array`` frames are drawn here when pygame (gymnasium's renderer) is not
        installed: the track with the position limits (red), the cart (grey) and the pole (blue).

        :return: what gymnasium's ``render`` returns (a ``(200, 400, 3)`` uint8 image for ``rgb_array`` here)
        """
        if self.render_mode != "rgb_array" or pygame_installed() or self.state is None:
            return super().render()
        height, width = 200, 400
        scale = width / (2 * self.x_threshold)  # pixels per metre: the whole track fits
        canvas = blank_canvas(height, width)
        track_row = 150
        fill_rect(canvas, track_row, 0, track_row + 2, width, GREY)
        for limit in (-self.position_limit, self.position_limit):
            column = width / 2 + limit * scale
            fill_rect(canvas, track_row - 40, column - 1, track_row + 10, column + 1, RED)
        x, _, theta, _ = (float(value) for value in self.state)
        cart_col = width / 2 + x * scale
        fill_rect(canvas, track_row - 15, cart_col - 25, track_row + 5, cart_col + 25, GREY)
        pole_pixels = 2 * self.length * scale
        for fraction in np.linspace(0.0, 1.0, 30):  # the pole as a row of discs from the hinge to its tip
            row = track_row - 15 - fraction * pole_pixels * math.cos(theta)
            col = cart_col + fraction * pole_pixels * math.sin(theta)
            fill_disc(canvas, row, col, 4, BLUE)
        return canvas

    @property
    def safe_set_definition(self) -> str:
        """One-line description of the safe set."""
        return (
            f"a safe iff after a, a constant force (either sign) keeps |x|<={self.position_limit:g} "
            "until the pole falls (simulated)"
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """
        Reset as CartPole does; ``info["cost"]`` is 0.

        :param seed: Seed of the environment's random generator.
        :param options: CartPole's reset options (``low``/``high`` bounds of the initial state).
        :return: Observation and info.
        """
        observation, info = super().reset(seed=seed, options=options)
        info["cost"] = 0.0
        return observation, info

    def step(self, action: int | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """
        Step as CartPole does and add ``info["cost"]``: 1.0 iff the new cart position is outside the limit.

        :param action: 0 pushes left, 1 pushes right.
        :return: Observation, reward, terminated, truncated, info.
        """
        observation, reward, terminated, truncated, info = super().step(action)
        assert self.state is not None  # set by the step
        info["cost"] = float(abs(float(self.state[0])) > self.position_limit)
        return observation, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """
        Safe actions in the current state (see the class docstring); computed once per state.

        :return: Boolean array of shape (2,).
        """
        if self.state is None:
            raise RuntimeError("Call reset() before action_masks(): the environment has no state yet.")
        state = tuple(float(value) for value in self.state)
        if state != self._mask_state:
            self._mask = self._compute_mask(*state)
            self._mask_state = state
        return self._mask.copy()

    def _compute_mask(self, x: float, x_dot: float, theta: float, theta_dot: float) -> np.ndarray:
        """
        Certify each action by the look-ahead.

        :return: Boolean array of shape (2,).
        """
        if self._has_terminated(x, theta):
            return np.ones(2, dtype=bool)
        mask = np.zeros(2, dtype=bool)
        for action in (0, 1):
            other = 1 - action
            # Holding the same action is the cheaper certificate (one rollout), so try it first.
            mask[action] = self._holds_limit(x, x_dot, theta, theta_dot, action, action) or self._holds_limit(
                x, x_dot, theta, theta_dot, action, other
            )
        return mask

    def _has_terminated(self, x: float, theta: float) -> bool:
        return abs(x) > self.x_threshold or abs(theta) > self.theta_threshold_radians

    def _holds_limit(
        self, x: float, x_dot: float, theta: float, theta_dot: float, first_action: int, hold_action: int
    ) -> bool:
        """
        Simulate ``first_action`` then ``hold_action`` forever, with CartPole's equations of motion.

        :return: True iff the cart stays within the limit (with margin) until the pole-fall or ``|x| > 2.4``
            termination certainly happens, within ``lookahead_steps`` steps.
        """
        # Locals: attribute look-ups would dominate this hot loop.
        gravity, masspole, total_mass = self.gravity, self.masspole, self.total_mass
        length, polemass_length, tau = self.length, self.polemass_length, self.tau
        euler = self.kinematics_integrator == "euler"
        position_bound = self.position_limit - _POSITION_MARGIN
        angle_end = self.theta_threshold_radians + _ANGLE_MARGIN
        x_end = self.x_threshold + _POSITION_MARGIN
        force = self.force_mag if first_action == 1 else -self.force_mag
        hold_force = self.force_mag if hold_action == 1 else -self.force_mag
        for _ in range(self.lookahead_steps):
            costheta = math.cos(theta)
            sintheta = math.sin(theta)
            temp = (force + polemass_length * theta_dot * theta_dot * sintheta) / total_mass
            thetaacc = (gravity * sintheta - costheta * temp) / (
                length * (4.0 / 3.0 - masspole * costheta * costheta / total_mass)
            )
            xacc = temp - polemass_length * thetaacc * costheta / total_mass
            if euler:
                x = x + tau * x_dot
                x_dot = x_dot + tau * xacc
                theta = theta + tau * theta_dot
                theta_dot = theta_dot + tau * thetaacc
            else:
                x_dot = x_dot + tau * xacc
                x = x + tau * x_dot
                theta_dot = theta_dot + tau * thetaacc
                theta = theta + tau * theta_dot
            # The cost is charged on the step that leaves the limit even if that step also ends the episode.
            if abs(x) > position_bound:
                return False
            if abs(theta) > angle_end or abs(x) > x_end:
                return True
            force = hold_force
        return False
