"""``check_env``: tell a user exactly what in their custom environment breaks the gymnasium API.

Checks run in order and the first failure raises :class:`EnvCheckError` with a message that
names what was seen and what was expected. The env is reset and stepped a few times with
random actions; call ``check_env`` on a fresh env, not on one you are in the middle of using.
"""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import EnvCheckError

__all__ = ["check_env"]

_SEED = 12345


def check_env(env: gymnasium.Env, *, obs_type: str = "state", num_steps: int = 20) -> None:
    """Raise :class:`EnvCheckError` if ``env`` breaks what worldflux relies on.

    Checked: ``observation_space`` (a ``Box``) and ``action_space`` (a ``Box`` with finite
    bounds, or a ``Discrete``); ``reset(seed=...)`` returns ``(obs, info)``; ``step`` returns
    ``(obs, reward, terminated, truncated, info)``; every obs lies in ``observation_space``
    (dtype, shape, bounds) and is finite; rewards are finite scalars; ``terminated`` and
    ``truncated`` are bools; the same seed gives the same first observation; and, for
    ``obs_type="image"``, ``render()`` returns an ``[H, W, 3]`` uint8 frame.

    Args:
        env: the environment to check (it is reset and stepped).
        obs_type: ``"image"`` additionally checks rendering.
        num_steps: how many random steps to take.
    """
    observation_space = _check_space(env, "observation_space")
    action_space = _check_space(env, "action_space")
    if not isinstance(observation_space, spaces.Box):
        hint = (
            " Wrap it with worldflux.envs.wrappers.StateObservation to flatten it."
            if isinstance(observation_space, spaces.Dict)
            else ""
        )
        raise EnvCheckError(
            f"observation_space is {observation_space}; worldflux needs a Box "
            f"(float vectors or uint8 images).{hint}"
        )
    _check_action_space(action_space)

    first_obs = _checked_reset(env, seed=_SEED)
    _check_obs(first_obs, observation_space, "reset()")
    action_space.seed(_SEED)
    for step in range(num_steps):
        terminated, truncated = _checked_step(env, action_space, observation_space, step)
        if terminated or truncated:
            _check_obs(_checked_reset(env, seed=None), observation_space, "reset()")

    again = _checked_reset(env, seed=_SEED)
    if not np.array_equal(np.asarray(first_obs), np.asarray(again)):
        difference = np.max(np.abs(np.asarray(first_obs, float) - np.asarray(again, float)))
        raise EnvCheckError(
            f"seeding is not deterministic: reset(seed={_SEED}) returned different first "
            f"observations on two calls (largest difference {difference:.3g}). In reset, call "
            "super().reset(seed=seed) and draw all randomness from self.np_random."
        )

    if obs_type == "image":
        _check_render(env)
    elif obs_type != "state":
        raise EnvCheckError(f"obs_type: expected 'state' or 'image', got {obs_type!r}")


def _check_space(env: Any, name: str) -> spaces.Space:
    if not hasattr(env, name):
        raise EnvCheckError(
            f"env has no {name}; set self.{name} = gymnasium.spaces.Box(...) "
            "(or spaces.Discrete(n) for actions) in __init__"
        )
    space = getattr(env, name)
    if not isinstance(space, spaces.Space):
        raise EnvCheckError(
            f"{name} is a {type(space).__name__} ({space!r}); expected a gymnasium.spaces.Space "
            "such as gymnasium.spaces.Box"
        )
    return space


def _check_action_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Discrete):
        return
    if not isinstance(space, spaces.Box):
        raise EnvCheckError(
            f"action_space is {space}; worldflux supports Box (continuous) and Discrete actions"
        )
    if len(space.shape) != 1:
        raise EnvCheckError(f"action_space has shape {space.shape}; expected a 1-D Box [A]")
    for bound_name, bound in (("low", space.low), ("high", space.high)):
        bad = np.flatnonzero(~np.isfinite(bound))
        if bad.size:
            raise EnvCheckError(
                f"action_space.{bound_name} is not finite at index {bad.tolist()} "
                f"(values {bound[bad].tolist()}); worldflux needs finite Box action bounds to "
                "normalise actions to [-1, 1]. Give the real actuator limits."
            )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray dtype={value.dtype} shape={value.shape}"
    if isinstance(value, np.generic):
        return f"numpy scalar {value.dtype} ({value!r})"
    return f"{type(value).__name__} ({value!r})"


def _checked_reset(env: gymnasium.Env, seed: int | None) -> Any:
    try:
        result = env.reset(seed=seed)
    except TypeError as error:
        raise EnvCheckError(
            f"reset(seed={seed}) raised TypeError: {error}. gymnasium's reset signature is "
            "reset(self, *, seed=None, options=None)"
        ) from error
    if not isinstance(result, tuple) or len(result) != 2:
        seen = (
            f"a tuple of {len(result)} values" if isinstance(result, tuple) else _describe(result)
        )
        raise EnvCheckError(
            f"reset() must return (obs, info), got {seen}. Return `obs, {{}}` at the end of "
            "reset (gymnasium API; old gym returned only obs)"
        )
    obs, info = result
    if not isinstance(info, dict):
        raise EnvCheckError(
            f"reset() returned (obs, info) with info {_describe(info)}; expected a dict"
        )
    return obs


def _checked_step(
    env: gymnasium.Env,
    action_space: spaces.Space,
    observation_space: spaces.Box,
    step: int,
) -> tuple[bool, bool]:
    action = action_space.sample()
    result = env.step(action)
    where = f"step() (step {step})"
    if not isinstance(result, tuple) or len(result) != 5:
        if isinstance(result, tuple) and len(result) == 4:
            seen = "4 values (old gym API: obs, reward, done, info)"
        elif isinstance(result, tuple):
            seen = f"{len(result)} values"
        else:
            seen = _describe(result)
        raise EnvCheckError(
            f"{where} must return 5 values (obs, reward, terminated, truncated, info), got "
            f"{seen}. Report time limits as truncated=True and real terminal states as "
            "terminated=True, never one flag for both"
        )
    obs, reward, terminated, truncated, info = result
    _check_obs(obs, observation_space, where)
    _check_reward(reward, where)
    for flag_name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            raise EnvCheckError(
                f"{where}: {flag_name} must be a bool, got {_describe(flag)}; "
                f"return bool({flag_name})"
            )
    if not isinstance(info, dict):
        raise EnvCheckError(f"{where}: info must be a dict, got {_describe(info)}")
    return bool(terminated), bool(truncated)


def _check_reward(reward: Any, where: str) -> None:
    if isinstance(reward, np.ndarray):
        if reward.shape != ():
            raise EnvCheckError(
                f"{where}: reward must be a scalar float, got ndarray shape {reward.shape}; "
                "return float(reward)"
            )
        reward = reward[()]
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, numbers.Real):
        raise EnvCheckError(f"{where}: reward must be a scalar float, got {_describe(reward)}")
    if not np.isfinite(float(reward)):
        raise EnvCheckError(f"{where}: reward is not finite ({float(reward)})")


def _check_obs(obs: Any, space: spaces.Box, where: str) -> None:
    expected = f"observation_space expects dtype={space.dtype} shape={space.shape}"
    if not isinstance(obs, np.ndarray):
        raise EnvCheckError(
            f"{where}: observation is a {_describe(obs)}, expected a numpy array; {expected}"
        )
    if obs.shape != space.shape:
        raise EnvCheckError(f"{where}: observation has shape {obs.shape} but {expected}")
    if obs.dtype != space.dtype:
        raise EnvCheckError(
            f"{where}: observation has dtype {obs.dtype} but {expected}; "
            f"return obs.astype(np.{space.dtype})"
        )
    if np.issubdtype(obs.dtype, np.floating):
        bad = ~np.isfinite(obs)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise EnvCheckError(
                f"{where}: observation is not finite: {int(bad.sum())} NaN/inf value(s), first at "
                f"index {index} ({obs[index]})"
            )
    below = obs < space.low
    above = obs > space.high
    if below.any() or above.any():
        outside = below | above
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        raise EnvCheckError(
            f"{where}: observation is outside observation_space bounds at index {index}: "
            f"value {obs[index]} not in [{space.low[index]}, {space.high[index]}] "
            f"({int(outside.sum())} value(s) outside)"
        )


def _check_render(env: gymnasium.Env) -> None:
    render_mode = getattr(env, "render_mode", None)
    if render_mode != "rgb_array":
        raise EnvCheckError(
            f"image observations need rendering: env.render_mode is {render_mode!r}, expected "
            "'rgb_array'. Accept render_mode in __init__, store it as self.render_mode and "
            "list 'rgb_array' in metadata['render_modes']"
        )
    render = getattr(env, "render", None)
    try:
        frame = render() if callable(render) else None
    except NotImplementedError as error:
        raise EnvCheckError(
            "image observations need rendering, but env.render() is not implemented; "
            "return an [H, W, 3] uint8 array for render_mode='rgb_array'"
        ) from error
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or (frame.shape[-1] != 3)
    ):
        raise EnvCheckError(
            f"env.render() returned {_describe(frame)}; expected an [H, W, 3] uint8 array "
            "for render_mode='rgb_array'"
        )
