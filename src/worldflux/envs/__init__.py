"""Environments for world-model training: one ``make`` for gymnasium, dm_control and Atari.

Quick use::

    from worldflux import envs
    env = envs.make("dmc/cartpole-swingup", seed=0, action_repeat=2)   # obs [5] float32
    env = envs.make("dmc/walker-walk", obs_type="image", image_size=64)  # obs [3, 64, 64] uint8
    env = envs.make("atari/pong")                                       # obs [1, 64, 64] uint8
    env = envs.make("worldflux/Nav3D-v0", obs_type="image")   # native 3D navigation, see nav3d
    envs.check_env(MyEnv())        # raises EnvCheckError explaining what is wrong
    envs.env_spec(env)             # {"obs_shape": ..., "action_kind": ..., "action_dim": ...}

Every env keeps gymnasium's ``(obs, reward, terminated, truncated, info)`` step with time
limits reported as ``truncated`` and never merged into ``terminated``.

Without a display, ``MUJOCO_GL`` defaults to ``egl`` (headless Mesa) unless the user set it:
MuJoCo reads it once, when first imported, so it must be settled before any env is made.
"""

import os as _os

if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "egl"

import worldflux.envs.games  # noqa: F401  (registers worldflux/Breakout64-v0, Collect64-v0)
import worldflux.envs.nav3d  # noqa: F401  (registers worldflux/Nav3D-v0 with gymnasium)
from worldflux.envs.checker import check_env
from worldflux.envs.registry import list_envs, make, make_vector
from worldflux.envs.spec import EnvSpec, env_spec
from worldflux.envs.wrappers import (
    ActionRepeat,
    ChannelFirst,
    NormalizeAction,
    PixelObservation,
    SeedOnFirstReset,
    StateObservation,
)

__all__ = [
    "ActionRepeat",
    "ChannelFirst",
    "EnvSpec",
    "NormalizeAction",
    "PixelObservation",
    "SeedOnFirstReset",
    "StateObservation",
    "check_env",
    "env_spec",
    "list_envs",
    "make",
    "make_vector",
]
