"""Gymnasium form of the batched games (one world per env)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError
from worldflux.envs.games.base import NUM_ACTIONS, SIZE, GameBatch

OBS_TYPES = ("state", "image")


class GameEnv(gymnasium.Env):
    """One world of a :class:`GameBatch` game as a gymnasium env with ``Discrete(4)`` actions.

    Observations: ``obs_type="image"`` -> ``[3, image_size, image_size]`` uint8 (drawn at 64x64,
    other sizes by nearest-neighbour sampling); ``obs_type="state"`` -> the game's small float32
    feature vector. ``truncated=True`` after ``time_limit`` steps.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    game_class: type[GameBatch] = GameBatch

    def __init__(self, render_mode: str | None = None, obs_type: str = "image",
                 image_size: int = SIZE, time_limit: int | None = None) -> None:
        if obs_type not in OBS_TYPES:
            raise ConfigError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
        if int(image_size) < 1:
            raise ConfigError(f"image_size: got {image_size}, expected a positive integer")
        self.render_mode = render_mode
        self.obs_type = obs_type
        self.image_size = int(image_size)
        self.game = self.game_class(1, seed=None, time_limit=time_limit)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        if obs_type == "image":
            self.observation_space = spaces.Box(0, 255, (3, self.image_size, self.image_size),
                                                np.uint8)
        else:
            width = self.game.features().shape[1]
            self.observation_space = spaces.Box(-np.inf, np.inf, (width,), np.float32)
        self._index = (np.arange(self.image_size) * SIZE) // self.image_size

    def _observation(self, frames: np.ndarray) -> np.ndarray:
        if self.obs_type == "state":
            return self.game.features()[0]
        frame = frames[0]
        if self.image_size != SIZE:
            frame = frame[:, self._index][:, :, self._index]
        return frame

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        frames = self.game.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        return self._observation(frames), {"score": 0, "lives": int(self.game.lives[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = int(np.asarray(action).reshape(-1)[0])
        frames, reward, terminated, truncated, info = self.game.step(np.array([action]))
        return (self._observation(frames), float(reward[0]), bool(terminated[0]),
                bool(truncated[0]), {"score": int(info["score"][0]),
                                     "lives": int(info["lives"][0])})

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.game.render()[0].transpose(1, 2, 0)
