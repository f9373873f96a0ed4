"""``worldflux/Nav3D-v0``: fly a body with mass, drag and gravity to a goal in a 3D arena.

Quick use::

    import gymnasium, worldflux.envs
    env = gymnasium.make("worldflux/Nav3D-v0")                    # obs [12] float32
    env = worldflux.envs.make("worldflux/Nav3D-v0", obs_type="image")  # obs [3, 64, 64] uint8
    env = worldflux.envs.make("worldflux/Nav3D-v0", num_obstacles=6, wind=(3, 0, 0))

    from worldflux.envs.nav3d import Nav3DBatch, Nav3DConfig, reward_fn
    batch = Nav3DBatch(256, Nav3DConfig(gust_std=2.0), seed=0)     # 256 worlds stepped at once
    obs, info = batch.reset(seed=0)                               # world i seeded with 0 + i
    obs, reward, terminated, truncated, info = batch.step(actions)  # actions [256, 3]

The state observation is ``OBS_NAMES`` (12 numbers: position, velocity, goal offset, offset to
the nearest obstacle surface); ``reward_fn(obs, action, next_obs)`` recomputes the reward from
observations in torch; ``scripted_action`` is a reference controller. Units: m, s, kg, N.
"""

from __future__ import annotations

import gymnasium

from worldflux.envs.nav3d.batch import Nav3DBatch
from worldflux.envs.nav3d.config import (
    ACTION_DIM,
    GOAL_SLICE,
    OBS_DIM,
    OBS_NAMES,
    OBSTACLE_SLICE,
    POSITION_SLICE,
    VELOCITY_SLICE,
    Nav3DConfig,
)
from worldflux.envs.nav3d.controller import (
    evaluate_policy,
    noisy_scripted_policy,
    random_policy,
    scripted_action,
)
from worldflux.envs.nav3d.env import Nav3DEnv
from worldflux.envs.nav3d.reward import make_reward_fn, reward_fn

ENV_ID = "worldflux/Nav3D-v0"
"""Gymnasium id of the default Nav3D task."""

__all__ = [
    "ACTION_DIM", "ENV_ID", "GOAL_SLICE", "OBSTACLE_SLICE", "OBS_DIM", "OBS_NAMES",
    "POSITION_SLICE", "VELOCITY_SLICE", "Nav3DBatch", "Nav3DConfig", "Nav3DEnv",
    "evaluate_policy", "make_reward_fn", "noisy_scripted_policy", "random_policy", "reward_fn", "scripted_action",
]

if ENV_ID not in gymnasium.registry:
    # The time limit lives in the env (``time_limit``, 200 steps) so that the batched and the
    # single form truncate alike; gymnasium's TimeLimit wrapper is not added.
    gymnasium.register(
        id=ENV_ID,
        entry_point="worldflux.envs.nav3d.env:Nav3DEnv",
        vector_entry_point="worldflux.envs.nav3d.vector:Nav3DVectorEnv",
    )
