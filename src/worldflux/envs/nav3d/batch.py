"""``Nav3DBatch``: many Nav3D worlds stepped at once in NumPy (the one physics code path).

Each world ``i`` has its own random stream: ``reset(seed=s)`` seeds world ``i`` with
``s + i``, so world ``i`` of a batch follows exactly the episode of a single
:class:`~worldflux.envs.nav3d.env.Nav3DEnv` reset with seed ``s + i``. Gusts come from a
counter-based hash of ``(episode key, step)`` rather than from a shared generator, which keeps
worlds independent of one another and of the batch size, with no Python loop per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worldflux.core.errors import ConfigError
from worldflux.envs.nav3d.config import ACTION_DIM, Nav3DConfig
from worldflux.envs.nav3d.layout import (
    CONTACT_TOLERANCE,
    nearest_obstacle,
    obstacle_surfaces,
    sample_layout,
    sample_start_goal,
)

__all__ = ["Nav3DBatch", "gust_normals"]

_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def gust_normals(keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Standard normal draws ``[n, 3]`` determined by ``(keys [n] uint64, steps [n] int)``.

    Counter-based (hash then Box-Muller), so the gust of world ``i`` at step ``t`` depends on
    nothing but its episode key and ``t``.
    """
    base = _splitmix64(np.asarray(keys, dtype=_U64) ^ _splitmix64(
        np.asarray(steps, dtype=np.int64).astype(_U64)))
    counters = base[:, None] + np.arange(1, 5, dtype=_U64)[None, :]  # [n, 4]
    bits = _splitmix64(counters) >> _U64(11)  # 53 random bits
    uniform = (bits.astype(np.float64) + 1.0) * (1.0 / 2.0**53)  # in (0, 1]
    radius = np.sqrt(-2.0 * np.log(uniform[:, [0, 2]]))  # [n, 2]
    angle = 2.0 * np.pi * uniform[:, [1, 3]]
    return np.stack([radius[:, 0] * np.cos(angle[:, 0]), radius[:, 0] * np.sin(angle[:, 0]),
                     radius[:, 1] * np.cos(angle[:, 1])], axis=1)


class Nav3DBatch:
    """``num_envs`` independent Nav3D worlds (state observations ``[n, 12]``, see ``OBS_NAMES``).

    Physics per step (``dt`` s, semi-implicit Euler): ``force = max_force * clip(a, -1, 1) +
    wind + gust_std * N(0, I) - mass * gravity * e_z - drag * v``; ``v += dt * force / mass``;
    ``p += dt * v``. Then the walls, floor and ceiling clamp ``p`` and zero the velocity
    component into them (``info["boundary_contact"]``, not a collision), and an obstacle closer
    than ``body_radius`` pushes the body out along its surface normal and zeroes the inward
    velocity (a collision). The body moves at most ~0.75 m per step, less than the smallest
    obstacle's diameter plus the body's, so it never passes through an obstacle whole.

    Reward per step: ``progress_scale * (d_prev - d) - collision_penalty * collision
    - control_cost * |a|^2 + success_bonus * success`` with ``d`` the goal distance.
    ``terminated`` = success (``d <= success_radius``); ``truncated`` = ``time_limit`` reached
    without success.

    Args:
        num_envs: number of worlds ``n``.
        config: :class:`Nav3DConfig` (default: nominal conditions).
        seed: seeds the worlds' random streams (world ``i``: ``seed + i``) until a reset
            is given a seed; None draws fresh entropy.
        autoreset: when a world's episode ends, ``step`` resets it at once and returns its new
            first observation; ``info["final_obs"]`` holds the observations reached by the step.
            Without it, a finished world keeps being simulated (flags and counters continue)
            until ``reset(mask=...)`` restarts it.
    """

    def __init__(self, num_envs: int, config: Nav3DConfig | None = None,
                 seed: int | None = None, *, autoreset: bool = False) -> None:
        if isinstance(num_envs, bool) or int(num_envs) != num_envs or num_envs < 1:
            raise ConfigError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
        self.num_envs = n = int(num_envs)
        self.config = (config or Nav3DConfig()).validate()
        self.autoreset = bool(autoreset)
        self._rngs = self._make_rngs(seed)
        K = int(self.config.num_obstacles)
        self.fixed_layout = self.config.layout_seed != "random"
        if self.fixed_layout:
            centers, half_sizes = sample_layout(
                self.config, np.random.default_rng(int(self.config.layout_seed)))
        else:
            centers, half_sizes = np.zeros((K, 3)), np.ones((K, 3))
        self.centers = np.repeat(centers[None], n, axis=0)  # [n, K, 3] (m)
        self.half_sizes = np.repeat(half_sizes[None], n, axis=0)  # [n, K, 3] (m)
        self.position = np.zeros((n, 3))  # (m)
        self.velocity = np.zeros((n, 3))  # (m/s)
        self.goal = np.zeros((n, 3))  # (m)
        self.steps = np.zeros(n, dtype=np.int64)
        self.collisions = np.zeros(n, dtype=np.int64)
        self.keys = np.zeros(n, dtype=_U64)
        self._distance = np.zeros(n)
        self._has_reset = False

    # -- seeding and reset -------------------------------------------------------------------
    def _make_rngs(self, seed: int | Sequence[int] | None) -> list[np.random.Generator]:
        n = self.num_envs
        if seed is None:
            return [np.random.default_rng() for _ in range(n)]
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != n:
                raise ConfigError(f"seed: expected an int or {n} ints, got {len(seeds)} seeds")
        if any(s < 0 for s in seeds):
            raise ConfigError(f"seed: expected non-negative integers, got {seeds}")
        return [np.random.default_rng(s) for s in seeds]

    def reset(self, seed: int | Sequence[int] | None = None,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes; returns ``(obs [n, 12], info)``.

        Args:
            seed: int (world ``i`` gets ``seed + i``), one int per world, or None (continue each
                world's random stream).
            mask: ``[n]`` bool, reset only these worlds (``seed`` still applies per world
                index); None resets all.
        """
        if seed is not None:
            fresh = self._make_rngs(seed)
            selected = range(self.num_envs) if mask is None else np.flatnonzero(mask)
            for i in selected:
                self._rngs[i] = fresh[i]
        indices = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        for i in indices:
            self._reset_one(int(i))
        self._has_reset = True
        return self.observe(), {"distance": self._distance.copy()}

    def _reset_one(self, i: int) -> None:
        rng = self._rngs[i]
        if not self.fixed_layout:
            self.centers[i], self.half_sizes[i] = sample_layout(self.config, rng)
        start, goal = sample_start_goal(self.config, self.centers[i], self.half_sizes[i], rng)
        self.position[i], self.goal[i] = start, goal
        self.velocity[i] = 0.0
        self.steps[i] = 0
        self.collisions[i] = 0
        self.keys[i] = rng.integers(0, 2**63, dtype=np.int64)
        self._distance[i] = np.linalg.norm(goal - start)

    def set_state(self, position: np.ndarray, velocity: np.ndarray,
                  goal: np.ndarray) -> np.ndarray:
        """Put every world's body at ``position`` with ``velocity`` and its goal at ``goal``
        (each ``[n, 3]`` or ``[3]`` for all); returns the observations ``[n, obs_dim]``. For
        replaying a recorded state (e.g. many gust draws from one start)."""
        if not self._has_reset:
            raise ConfigError("Nav3DBatch.set_state: called before reset(); expected reset() "
                              "first (it fixes the layouts)")
        self.position[:] = np.asarray(position, dtype=np.float64)
        self.velocity[:] = np.asarray(velocity, dtype=np.float64)
        self.goal[:] = np.asarray(goal, dtype=np.float64)
        self._distance = np.linalg.norm(self.goal - self.position, axis=1)
        return self.observe()

    # -- observation -------------------------------------------------------------------------
    def observe(self) -> np.ndarray:
        """Current state observations ``[n, config.obs_dim]`` float32 (order:
        ``config.observation_names()``, ``OBS_NAMES`` by default)."""
        _, offset, _ = nearest_obstacle(self.position, self.centers, self.half_sizes,
                                        self.config.obstacle_shape)
        return self._observation(offset)

    def _observation(self, offset: np.ndarray) -> np.ndarray:
        """``offset [n, 3]``: to the nearest obstacle (used by ``"nearest"``)."""
        if self.config.obstacle_observation == "each" and self.config.num_obstacles > 0:
            _, each, _ = obstacle_surfaces(self.position, self.centers, self.half_sizes,
                                           self.config.obstacle_shape)
            offset = each.reshape(self.num_envs, -1)  # [n, 3K]
        elif self.config.obstacle_observation == "each":
            offset = np.zeros((self.num_envs, 0))
        obs = np.concatenate([self.position, self.velocity, self.goal - self.position, offset],
                             axis=1)
        return obs.astype(np.float32)

    # -- dynamics ----------------------------------------------------------------------------
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, np.ndarray]]:
        """Advance every world by one step.

        Args:
            actions: ``[n, 3]`` force commands, clipped to ``[-1, 1]``.

        Returns:
            ``obs [n, 12]`` float32, ``reward [n]`` float64, ``terminated [n]`` bool,
            ``truncated [n]`` bool, ``info`` with arrays ``success``, ``collision`` (this
            step), ``collisions`` (count in the episode), ``boundary_contact``, ``distance``
            (m to the goal), ``steps`` (episode length so far), and with ``autoreset``
            ``final_obs [n, 12]`` (``obs`` before the automatic reset).
        """
        if not self._has_reset:
            raise ConfigError("Nav3DBatch.step: called before reset(); expected reset() first")
        cfg = self.config
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, ACTION_DIM):
            raise ConfigError(f"actions: expected shape ({self.num_envs}, {ACTION_DIM}), got "
                              f"{actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ConfigError("actions: expected finite values, got NaN or inf")
        action = np.clip(actions, -1.0, 1.0)
        mass = cfg.body_mass
        force = cfg.max_force * action + np.asarray(cfg.wind, dtype=np.float64)
        if cfg.gust_std > 0:
            force = force + cfg.gust_std * gust_normals(self.keys, self.steps)
        force[:, 2] -= mass * cfg.gravity
        force -= cfg.drag * self.velocity
        self.velocity = self.velocity + cfg.dt * force / mass
        position = self.position + cfg.dt * self.velocity

        # Walls, floor and ceiling: clamp and stop the motion into them.
        L, Z = cfg.arena_half_width, cfg.arena_height
        low, high = np.array([-L, -L, 0.0]), np.array([L, L, Z])
        below, above = position < low, position > high
        boundary = np.any(below | above, axis=1)
        self.velocity = np.where(below, np.maximum(self.velocity, 0.0), self.velocity)
        self.velocity = np.where(above, np.minimum(self.velocity, 0.0), self.velocity)
        position = np.clip(position, low, high)

        # Obstacles: push out to the contact distance along the surface normal.
        signed, offset, normal = nearest_obstacle(position, self.centers, self.half_sizes,
                                                  cfg.obstacle_shape)
        collision = signed <= cfg.body_radius + CONTACT_TOLERANCE
        push = np.where(signed < cfg.body_radius, cfg.body_radius - signed, 0.0)
        position = position + push[:, None] * normal
        # Moving along the normal keeps the same nearest surface point (obstacles are apart).
        offset = offset - push[:, None] * normal
        inward = np.minimum(np.sum(self.velocity * normal, axis=1), 0.0)
        self.velocity = self.velocity - np.where(collision, inward, 0.0)[:, None] * normal
        self.position = position

        self.steps += 1
        self.collisions += collision
        distance = np.linalg.norm(self.goal - self.position, axis=1)
        success = distance <= cfg.success_radius
        reward = (cfg.progress_scale * (self._distance - distance)
                  - cfg.collision_penalty * collision
                  - cfg.control_cost * np.sum(action**2, axis=1)
                  + cfg.success_bonus * success)
        self._distance = distance
        terminated = success
        if cfg.time_limit is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            truncated = (self.steps >= cfg.time_limit) & ~terminated
        obs = self._observation(offset)
        info: dict[str, np.ndarray] = {
            "success": success, "collision": collision, "collisions": self.collisions.copy(),
            "boundary_contact": boundary, "distance": distance, "steps": self.steps.copy()}
        if self.autoreset:
            info["final_obs"] = obs
            done = terminated | truncated
            if done.any():
                obs = obs.copy()
                for i in np.flatnonzero(done):
                    self._reset_one(int(i))
                obs[done] = self.observe()[done]
        return obs, reward, terminated, truncated, info

    # -- images ------------------------------------------------------------------------------
    def render(self, size: int = 64, indices: Sequence[int] | None = None) -> np.ndarray:
        """Top-down frames ``[m, size, size, 3]`` uint8 of worlds ``indices`` (default all)."""
        from worldflux.envs.nav3d.render import render_frame

        indices = range(self.num_envs) if indices is None else indices
        frames = [render_frame(self.config, self.centers[i], self.half_sizes[i], self.goal[i],
                               self.position[i], size) for i in indices]
        return np.stack(frames)

    def images(self, size: int = 64) -> np.ndarray:
        """Image observations ``[n, 3, size, size]`` uint8 (channel first)."""
        return np.ascontiguousarray(self.render(size).transpose(0, 3, 1, 2))

