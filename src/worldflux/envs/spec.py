"""``env_spec``: the few facts about an environment that a model needs to be built."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import EnvCheckError

__all__ = ["EnvSpec", "env_spec"]


class EnvSpec(TypedDict):
    """Description of an environment's spaces (per single env, also for vector envs).

    Attributes:
        obs_shape: shape of one observation, e.g. ``(5,)`` or ``(3, 64, 64)``.
        obs_dtype: numpy dtype of observations (float32 states, uint8 images).
        action_kind: ``"continuous"`` (Box) or ``"discrete"`` (Discrete).
        action_dim: size of the action vector ``A``; for discrete actions the number of
            choices (actions are stored one-hot, ``[A]``).
        action_low: lower bounds ``[A]`` (float32) for continuous actions, None for discrete.
        action_high: upper bounds ``[A]`` (float32) for continuous actions, None for discrete.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    action_kind: Literal["continuous", "discrete"]
    action_dim: int
    action_low: np.ndarray | None
    action_high: np.ndarray | None


def env_spec(env: gymnasium.Env | gymnasium.vector.VectorEnv) -> EnvSpec:
    """Describe ``env``'s observation and action spaces as an :class:`EnvSpec` dict.

    Works for single envs and gymnasium vector envs (their ``single_*`` spaces).

    Raises:
        EnvCheckError: the observation space is not a ``Box`` or the action space is neither
            a 1-D ``Box`` nor a ``Discrete``.
    """
    observation_space: Any = getattr(env, "single_observation_space", env.observation_space)
    action_space: Any = getattr(env, "single_action_space", env.action_space)
    if not isinstance(observation_space, spaces.Box):
        raise EnvCheckError(
            f"observation_space: expected a Box, got {observation_space}; wrap Dict observations "
            "with worldflux.envs.wrappers.StateObservation"
        )
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(
            obs_shape=tuple(observation_space.shape),
            obs_dtype=np.dtype(observation_space.dtype),
            action_kind="discrete",
            action_dim=int(action_space.n),
            action_low=None,
            action_high=None,
        )
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return EnvSpec(
            obs_shape=tuple(observation_space.shape),
            obs_dtype=np.dtype(observation_space.dtype),
            action_kind="continuous",
            action_dim=int(action_space.shape[0]),
            action_low=np.asarray(action_space.low, dtype=np.float32),
            action_high=np.asarray(action_space.high, dtype=np.float32),
        )
    raise EnvCheckError(f"action_space: expected a 1-D Box or a Discrete, got {action_space}")
