"""``Nav3DEnv``: the gymnasium form of one Nav3D world (a thin wrapper over a batch of one)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError
from worldflux.envs.nav3d.batch import Nav3DBatch
from worldflux.envs.nav3d.config import ACTION_DIM, Nav3DConfig

__all__ = ["Nav3DEnv", "state_observation_space"]

OBS_TYPES = ("state", "image")

VELOCITY_BOUND = 100.0
"""Velocity bound (m/s) of the observation space. Drag keeps speeds near
``(max_force + |wind|) / drag`` (5 m/s by default), far below it."""


def state_observation_space(config: Nav3DConfig) -> spaces.Box:
    """Bounds of the ``config.obs_dim`` state entries: positions in the arena, offsets within
    its extent, velocities within ``VELOCITY_BOUND``."""
    L, Z, v = config.arena_half_width, config.arena_height, VELOCITY_BOUND
    offsets = (config.obs_dim - 6) // 3  # goal, then one or every obstacle
    low = np.array([-L, -L, 0, -v, -v, -v] + [-2 * L, -2 * L, -Z] * offsets)
    high = np.array([L, L, Z, v, v, v] + [2 * L, 2 * L, Z] * offsets)
    assert low.shape == (config.obs_dim,)
    return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


class Nav3DEnv(gymnasium.Env):
    """Fly a body with mass, drag and gravity to a goal in a 3D arena with obstacles.

    Registered as ``worldflux/Nav3D-v0``. Actions: 3D force commands in ``[-1, 1]``.
    Observations: ``obs_type="state"`` -> ``[config.obs_dim]`` float32 (12 by default, ``OBS_NAMES``);
    ``obs_type="image"`` -> ``[3, image_size, image_size]`` uint8 top-down view.
    ``info``: ``success``, ``collision`` (this step), ``collisions`` (in the episode),
    ``boundary_contact``, ``distance`` (m) and ``is_success``. Episodes end with
    ``terminated=True`` on success and ``truncated=True`` after ``time_limit`` steps (200).

    Args:
        render_mode: None or ``"rgb_array"`` (``render()`` -> ``[render_size, render_size, 3]``).
        obs_type: ``"state"`` or ``"image"``.
        image_size: side of image observations (px).
        render_size: side of ``render()`` frames (px); default ``image_size``.
        config: a :class:`Nav3DConfig`; the keyword options below override its fields.
        **options: any :class:`Nav3DConfig` field (``num_obstacles=6``, ``wind=(2, 0, 0)``,
            ``gust_std=3.0``, ``mass_scale=1.3``, ``layout_seed="random"``, ...).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, obs_type: str = "state",
                 image_size: int = 64, render_size: int | None = None,
                 config: Nav3DConfig | None = None, **options: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        if obs_type not in OBS_TYPES:
            raise ConfigError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
        for name, value in (("image_size", image_size), ("render_size", render_size)):
            if value is not None and (isinstance(value, bool) or int(value) != value
                                      or value < 16):
                raise ConfigError(f"{name}: expected an integer >= 16 (px), got {value!r}")
        self.render_mode = render_mode
        self.obs_type = obs_type
        self.image_size = int(image_size)
        self.render_size = int(render_size) if render_size is not None else self.image_size
        self.config = (config or Nav3DConfig()).replace(**options)
        self.batch = Nav3DBatch(1, self.config)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        if obs_type == "image":
            self.observation_space = spaces.Box(
                0, 255, shape=(3, self.image_size, self.image_size), dtype=np.uint8)
        else:
            self.observation_space = state_observation_space(self.config)

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if self.obs_type == "image":
            return self.batch.images(self.image_size)[0]
        return state[0]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and not self.batch._has_reset:
            # An unseeded first reset still draws from gymnasium's seeded-or-entropy stream.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        state, info = self.batch.reset(seed=seed)
        return self._observation(state), {"distance": float(info["distance"][0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(1, ACTION_DIM)
        state, reward, terminated, truncated, info = self.batch.step(action)
        success = bool(info["success"][0])
        out = {"success": success, "is_success": success,
               "collision": bool(info["collision"][0]),
               "collisions": int(info["collisions"][0]),
               "boundary_contact": bool(info["boundary_contact"][0]),
               "distance": float(info["distance"][0])}
        return (self._observation(state), float(reward[0]), bool(terminated[0]),
                bool(truncated[0]), out)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.batch.render(self.render_size)[0]

    def reward_function(self, safety_margin: float = 0.0):
        """The env's reward as a torch function of state observations, ``(obs [N, D], action
        [N, 3], next_obs [N, D]) -> [N]``, for planners (``reward_source="env"``); None for
        image observations (the reward is not a function of pixels)."""
        if self.obs_type != "state":
            return None
        from worldflux.envs.nav3d.reward import make_reward_fn

        return make_reward_fn(self.config, safety_margin=safety_margin)

    # Read access to the simulated state (tests, controllers, debugging).
    @property
    def position(self) -> np.ndarray:
        """Body position ``[3]`` (m)."""
        return self.batch.position[0].copy()

    @property
    def goal(self) -> np.ndarray:
        """Goal position ``[3]`` (m)."""
        return self.batch.goal[0].copy()

    def state(self) -> np.ndarray:
        """The state observation ``[config.obs_dim]`` float32, whatever ``obs_type`` is."""
        return self.batch.observe()[0]
