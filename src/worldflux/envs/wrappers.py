"""Small gymnasium wrappers used by :func:`worldflux.envs.make`.

Each wrapper does one thing and keeps gymnasium's step contract: ``(obs, reward, terminated,
truncated, info)`` with time limits reported as ``truncated`` and never folded into
``terminated``. Discrete action spaces pass through the action wrappers untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

logger = logging.getLogger(__name__)

__all__ = [
    "ActionRepeat",
    "ChannelFirst",
    "NormalizeAction",
    "PixelObservation",
    "SeedOnFirstReset",
    "StackFrames",
    "StateObservation",
    "disable_shadows",
]


class ActionRepeat(gymnasium.Wrapper):
    """Repeat each agent action ``repeat`` times and sum the rewards.

    Stops early as soon as the inner env reports ``terminated`` or ``truncated``; both flags and
    the ``info`` of the last inner step are returned as they are.
    """

    def __init__(self, env: gymnasium.Env, repeat: int) -> None:
        if int(repeat) != repeat or repeat < 1:
            raise ValueError(f"ActionRepeat: repeat must be an integer >= 1, got {repeat!r}")
        super().__init__(env)
        self.repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total_reward = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        return obs, total_reward, terminated, truncated, info


class NormalizeAction(gymnasium.ActionWrapper):
    """Expose a ``Box`` action space as ``[-1, 1]`` (float32) and rescale to the true bounds.

    An agent action ``a`` in ``[-1, 1]`` (clipped there first) is sent to the inner env as
    ``low + (a + 1) / 2 * (high - low)`` in the inner space's dtype. Non-``Box`` action spaces
    (``Discrete``, ...) pass through unchanged. ``Box`` bounds must be finite.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.action_space
        self._active = isinstance(space, spaces.Box)
        if not self._active:
            return
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(
                f"NormalizeAction: action_space bounds must be finite, got low={space.low} "
                f"high={space.high}; leave actions unnormalised for this env "
                "(make(..., normalize_actions=False))"
            )
        self._low = low
        self._high = high
        self._inner_dtype = space.dtype
        self.action_space = spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)

    def action(self, action: Any) -> Any:
        if not self._active:
            return action
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        scaled = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        return scaled.astype(self._inner_dtype, copy=False)


class StateObservation(gymnasium.ObservationWrapper):
    """Turn state observations into one float32 vector.

    ``Dict`` observations (dm_control) are flattened entry by entry in **sorted key order** (so
    the layout never depends on dict insertion order) and concatenated:
    ``obs [sum_k prod(shape_k)]``.
    ``Box`` observations keep their shape and are cast to float32.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            self.keys = tuple(sorted(space.spaces))
            for key in self.keys:
                if not isinstance(space.spaces[key], spaces.Box):
                    raise ValueError(
                        f"StateObservation: entry {key!r} of the Dict observation_space is "
                        f"{space.spaces[key]}, expected a Box"
                    )
            low = np.concatenate([_flat_bound(space.spaces[k].low) for k in self.keys])
            high = np.concatenate([_flat_bound(space.spaces[k].high) for k in self.keys])
        elif isinstance(space, spaces.Box):
            self.keys = None
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        else:
            raise ValueError(
                f"StateObservation: observation_space {space} is neither a Box nor a Dict of Boxes"
            )
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        if self.keys is None:
            return np.asarray(observation, dtype=np.float32)
        parts = [np.asarray(observation[k], dtype=np.float32).reshape(-1) for k in self.keys]
        return np.concatenate(parts)


def _flat_bound(bound: np.ndarray) -> np.ndarray:
    # float64 infinities stay infinite in float32; finite bounds are clipped into float32 range.
    flat = np.asarray(bound, dtype=np.float64).reshape(-1)
    limit = np.finfo(np.float32).max
    return np.where(np.isfinite(flat), np.clip(flat, -limit, limit), flat).astype(np.float32)


class PixelObservation(gymnasium.ObservationWrapper):
    """Replace the observation by the rendered frame: ``obs [3, size, size]`` uint8, CHW.

    The inner env must have been created with ``render_mode="rgb_array"``. Frames rendered at
    another size are resized (area averaging when shrinking). For MuJoCo and dm_control envs,
    shadows are switched off in the model (``model.light_castshadow[:] = 0``) unless
    ``keep_shadows`` is set: at 64x64 this makes rendering several times faster.
    """

    def __init__(self, env: gymnasium.Env, size: int = 64, *, keep_shadows: bool = False) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"PixelObservation: the env must be created with render_mode='rgb_array', "
                f"got render_mode={env.render_mode!r}"
            )
        if int(size) != size or size < 1:
            raise ValueError(f"PixelObservation: size must be a positive integer, got {size!r}")
        self.size = int(size)
        if not keep_shadows:
            disable_shadows(env)
        self.observation_space = spaces.Box(0, 255, shape=(3, self.size, self.size), dtype=np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        frame = self.env.render()
        if frame is None:
            raise RuntimeError("PixelObservation: env.render() returned None")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] < 3:
            raise RuntimeError(
                f"PixelObservation: env.render() returned shape {frame.shape}, expected [H, W, 3]"
            )
        frame = frame[..., :3]
        if frame.shape[:2] != (self.size, self.size):
            frame = resize_image(frame, self.size)
        return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.uint8)


def resize_image(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize ``frame [H, W, C]`` (uint8) to ``[size, size, C]`` uint8 without OpenCV.

    Uses torch's area interpolation, which averages pixels when shrinking and falls back to
    nearest-neighbour replication when growing.
    """
    import torch
    import torch.nn.functional as functional

    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    resized = functional.interpolate(image, size=(size, size), mode="area")
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def disable_shadows(env: gymnasium.Env) -> bool:
    """Switch off shadow casting of every light in a MuJoCo / dm_control model.

    Returns True when a model was found. Toggling the model (not the renderer flag) is what
    stays correct once other envs in the process have been closed.
    """
    unwrapped = env.unwrapped
    candidates = []
    physics = getattr(unwrapped, "physics", None)
    if physics is not None:
        candidates.append(getattr(physics, "model", None))
    candidates.append(getattr(unwrapped, "model", None))
    for model in candidates:
        castshadow = getattr(model, "light_castshadow", None)
        if castshadow is not None:
            castshadow[:] = 0
            return True
    return False


class ChannelFirst(gymnasium.ObservationWrapper):
    """Image observations ``[H, W]`` or ``[H, W, C]`` -> ``[C, H, W]`` (uint8 kept)."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) not in (2, 3):
            raise ValueError(f"ChannelFirst: expected a 2-D or 3-D Box image space, got {space}")
        self._add_channel = len(space.shape) == 2
        low = space.low[..., None] if self._add_channel else space.low
        high = space.high[..., None] if self._add_channel else space.high
        self.observation_space = spaces.Box(
            low=np.moveaxis(low, -1, 0), high=np.moveaxis(high, -1, 0), dtype=space.dtype
        )

    def observation(self, observation: Any) -> np.ndarray:
        observation = np.asarray(observation)
        if self._add_channel:
            observation = observation[..., None]
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0))


class StackFrames(gymnasium.ObservationWrapper):
    """The last ``k`` image observations ``[C, H, W]`` stacked along channels: ``[k * C, H, W]``,
    oldest first, so that one observation shows motion (a single frame has no velocity).

    After ``reset`` the first frame fills every slot. Works for any ``[C, ...]`` Box space (the
    first axis is stacked).
    """

    def __init__(self, env: gymnasium.Env, k: int) -> None:
        super().__init__(env)
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"StackFrames: k must be an integer >= 1, got {k!r}")
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) < 2:
            raise ValueError(f"StackFrames: expected a Box space of shape [C, ...], got {space}")
        self.k = int(k)
        self.observation_space = spaces.Box(
            low=np.concatenate([space.low] * self.k), high=np.concatenate([space.high] * self.k),
            dtype=space.dtype)
        self._frames: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._frames = [np.asarray(obs)] * self.k
        return np.concatenate(self._frames), info

    def observation(self, observation: Any) -> np.ndarray:
        self._frames = [*self._frames[1:], np.asarray(observation)]
        return np.concatenate(self._frames)


class SeedOnFirstReset(gymnasium.Wrapper):
    """Use ``seed`` for the first ``reset()`` that is not given one, and seed the action space.

    Lets ``make(env_id, seed=0)`` be reproducible without the caller threading the seed
    through its first ``reset`` call. Later resets continue the env's own random stream.
    """

    def __init__(self, env: gymnasium.Env, seed: int) -> None:
        super().__init__(env)
        self._pending_seed: int | None = int(seed)
        self.env.action_space.seed(int(seed))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)
