"""``Nav3DVectorEnv``: a gymnasium ``VectorEnv`` over one :class:`Nav3DBatch` (no subprocesses).

``gymnasium.make_vec("worldflux/Nav3D-v0", num_envs=64, vectorization_mode="vector_entry_point")``
builds it. Autoreset follows gymnasium's ``SAME_STEP`` mode: a world whose episode ends is reset
inside the same ``step``, which returns its new first observation; ``info["final_obs"]`` (with
the mask ``info["_final_obs"]``) holds the observation the step reached, and the other ``info``
arrays (``success``, ``collision``, ``collisions``, ...) describe that step, before the reset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldflux.core.errors import ConfigError
from worldflux.envs.nav3d.batch import Nav3DBatch
from worldflux.envs.nav3d.config import ACTION_DIM, Nav3DConfig
from worldflux.envs.nav3d.env import OBS_TYPES, state_observation_space

__all__ = ["Nav3DVectorEnv"]


class Nav3DVectorEnv(VectorEnv):
    """``num_envs`` Nav3D worlds as one gymnasium vector env (observations ``[n, ...]``).

    Args:
        num_envs: number of worlds.
        render_mode: None or ``"rgb_array"`` (``render()`` -> tuple of ``[S, S, 3]`` frames).
        obs_type: ``"state"`` (``[n, 12]`` float32) or ``"image"`` (``[n, 3, S, S]`` uint8).
        image_size: side of image observations (px).
        render_size: side of rendered frames (px); default ``image_size``.
        config: a :class:`Nav3DConfig`; ``**options`` override its fields.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, render_mode: str | None = None, obs_type: str = "state",
                 image_size: int = 64, render_size: int | None = None,
                 config: Nav3DConfig | None = None, **options: Any) -> None:
        if obs_type not in OBS_TYPES:
            raise ConfigError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.config = (config or Nav3DConfig()).replace(**options)
        self.batch = Nav3DBatch(num_envs, self.config)
        self.num_envs = self.batch.num_envs
        self.render_mode = render_mode
        self.obs_type = obs_type
        self.image_size = int(image_size)
        self.render_size = int(render_size) if render_size is not None else self.image_size
        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        if obs_type == "image":
            self.single_observation_space = spaces.Box(
                0, 255, shape=(3, self.image_size, self.image_size), dtype=np.uint8)
        else:
            self.single_observation_space = state_observation_space(self.config)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _observation(self, state: np.ndarray) -> np.ndarray:
        return self.batch.images(self.image_size) if self.obs_type == "image" else state

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        state, info = self.batch.reset(seed=seed)
        return self._observation(state), info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, Any]]:
        state, reward, terminated, truncated, info = self.batch.step(
            np.asarray(actions, dtype=np.float64).reshape(self.num_envs, ACTION_DIM))
        obs = self._observation(state)
        infos: dict[str, Any] = {}
        for key, value in info.items():
            infos[key] = value
            infos[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        done = terminated | truncated
        if done.any():
            infos["final_obs"] = obs.copy()
            infos["_final_obs"] = done
            self.batch.reset(mask=done)
            obs = obs.copy()
            obs[done] = self._observation(self.batch.observe())[done]
        return obs, reward, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.batch.render(self.render_size))
