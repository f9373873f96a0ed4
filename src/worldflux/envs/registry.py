"""Environment construction: ``make``, ``make_vector`` and ``list_envs``.

Three id families are understood:

* any gymnasium id (``Pendulum-v1``, ``CartPole-v1``, ``HalfCheetah-v5``...);
* dm_control suite tasks through shimmy: ``dmc/cartpole-swingup`` (short form) or
  ``dm_control/cartpole-swingup-v0`` (shimmy's id), needs ``pip install "worldflux[dmc]"``;
* Atari through ale-py: ``atari/pong`` (short form) or ``ALE/Pong-v5``, needs
  ``pip install "worldflux[atari]"``.

worldflux's own envs (``worldflux/Nav3D-v0``) are gymnasium ids too; they are listed and draw
their image observations themselves.

The optional packages are imported only when an id of their family is made or listed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError, RegistryError, close_matches
from worldflux.envs.wrappers import (
    ActionRepeat,
    ChannelFirst,
    NormalizeAction,
    PixelObservation,
    SeedOnFirstReset,
    StackFrames,
    StateObservation,
)

logger = logging.getLogger(__name__)

__all__ = ["list_envs", "make", "make_vector"]

OBS_TYPES = ("state", "image")
DMC_PREFIX = "dmc/"
ATARI_PREFIX = "atari/"
# Gymnasium families that need nothing beyond gymnasium itself (mujoco is checked separately).
_GYMNASIUM_FAMILIES = ("gymnasium.envs.classic_control",)
# worldflux's own envs (worldflux/Nav3D-v0): listed, and they draw their own [3, S, S] images.
_NATIVE_FAMILY = "worldflux.envs."
_MUJOCO_FAMILY = "gymnasium.envs.mujoco"
# dm_control renders from camera 0 except where the task is only visible from another one.
_DMC_DEFAULT_CAMERA = {"quadruped": 2}


def _missing_extra(extra: str, package: str, error: ImportError) -> ImportError:
    return ImportError(
        f"{package} is needed for this environment but could not be imported ({error}). "
        f'Install it with: pip install "worldflux[{extra}]"'
    )


def _import_shimmy() -> None:
    """Import dm_control and shimmy (which registers ``dm_control/*`` ids), or explain how."""
    try:
        importlib.import_module("dm_control")
        shimmy = importlib.import_module("shimmy")
    except ImportError as error:
        raise _missing_extra("dmc", "dm_control (with shimmy and mujoco<4)", error) from error
    gymnasium.register_envs(shimmy)


def _import_ale() -> None:
    """Import ale-py (which registers ``ALE/*`` ids), or explain how to install it."""
    try:
        ale_py = importlib.import_module("ale_py")
    except ImportError as error:
        raise _missing_extra("atari", "ale-py", error) from error
    gymnasium.register_envs(ale_py)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@functools.lru_cache(maxsize=1)
def _atari_games() -> dict[str, str]:
    """Map short game names (``pong``, ``montezuma_revenge``) to ``ALE/<Game>-v5`` ids."""
    _import_ale()
    games = {}
    for env_id in gymnasium.registry:
        match = re.fullmatch(r"ALE/([A-Za-z0-9]+)-v5", env_id)
        if match:
            games[_snake_case(match.group(1))] = env_id
    return games


@functools.lru_cache(maxsize=1)
def _dmc_tasks() -> tuple[str, ...]:
    try:
        suite = importlib.import_module("dm_control.suite")
    except ImportError as error:
        raise _missing_extra("dmc", "dm_control", error) from error
    return tuple(f"{domain}-{task}" for domain, task in suite.ALL_TASKS)


def _gymnasium_ids() -> list[str]:
    families = _GYMNASIUM_FAMILIES
    if _has_module("mujoco"):
        families = (*families, _MUJOCO_FAMILY)
    families = (*families, _NATIVE_FAMILY)
    ids = []
    for env_id, spec in gymnasium.registry.items():
        entry_point = spec.entry_point if isinstance(spec.entry_point, str) else ""
        if entry_point.startswith(families):
            ids.append(env_id)
    return ids


def list_envs() -> list[str]:
    """Ids worldflux knows about, sorted; constructs no environment.

    Gymnasium classic-control ids (and gymnasium's MuJoCo ids when ``mujoco`` is installed),
    dm_control suite tasks as ``dmc/<domain>-<task>`` when the dmc extra is importable, and
    Atari games as ``atari/<game>`` when ale-py is importable. Other gymnasium ids still work
    with :func:`make`; they are only left out of this list.
    """
    ids = _gymnasium_ids()
    if _has_module("dm_control"):
        try:
            ids += [DMC_PREFIX + task for task in _dmc_tasks()]
        except ImportError as error:
            logger.debug("dm_control found but not importable: %s", error)
    if _has_module("ale_py"):
        try:
            ids += [ATARI_PREFIX + game for game in _atari_games()]
        except ImportError as error:
            logger.debug("ale_py found but not importable: %s", error)
    return sorted(ids)


def _resolve(env_id: str) -> tuple[str, str]:
    """Return ``(family, gymnasium_id)`` with family one of ``gym``, ``dmc``, ``atari``."""
    if env_id.startswith(DMC_PREFIX):
        _import_shimmy()
        task = env_id[len(DMC_PREFIX) :]
        if task not in _dmc_tasks():
            known = [DMC_PREFIX + t for t in _dmc_tasks()]
            raise RegistryError(
                f"env_id {env_id!r}: unknown dm_control task {task!r} "
                f"(expected dmc/<domain>-<task>).{close_matches(env_id, known)}"
            )
        return "dmc", f"dm_control/{task}-v0"
    if env_id.startswith("dm_control/"):
        _import_shimmy()
        family = "dmc"
    elif env_id.startswith(ATARI_PREFIX):
        game = env_id[len(ATARI_PREFIX) :].lower().replace("-", "_")
        games = _atari_games()
        if game not in games:
            # Also accept names written without word breaks: atari/montezumarevenge.
            squashed = {name.replace("_", ""): name for name in games}
            game = squashed.get(game.replace("_", ""), game)
        if game not in games:
            known = [ATARI_PREFIX + g for g in games]
            raise RegistryError(
                f"env_id {env_id!r}: unknown Atari game.{close_matches(env_id, known)}"
            )
        return "atari", games[game]
    elif env_id.startswith("ALE/"):
        _import_ale()
        family = "atari"
    else:
        family = "gym"
    # "package.module:Env-v0" ids import their module inside gymnasium.make.
    if ":" not in env_id and env_id not in gymnasium.registry:
        raise RegistryError(
            f"env_id {env_id!r} is not a known environment."
            f"{close_matches(env_id, dict.fromkeys(list_envs() + list(gymnasium.registry)))}"
            " See worldflux.envs.list_envs()."
        )
    return family, env_id


def make(
    env_id: str,
    *,
    seed: int | None = None,
    action_repeat: int = 1,
    obs_type: str | None = None,
    image_size: int = 64,
    normalize_actions: bool = True,
    max_episode_steps: int | None = None,
    frame_stack: int = 1,
    **kwargs: Any,
) -> gymnasium.Env:
    """Build an environment ready for world-model training.

    Args:
        env_id: a gymnasium id, ``dmc/<domain>-<task>``, ``dm_control/<domain>-<task>-v0``,
            ``atari/<game>`` or ``ALE/<Game>-v5``.
        seed: seeds the first ``reset()`` (when called without a seed) and the action space.
        action_repeat: agent actions are repeated this many times, rewards summed
            (:class:`ActionRepeat`). For Atari, frame skipping is separate (``frame_skip``).
        obs_type: ``"state"`` -> float32 vector ``obs [D]`` (dm_control dicts flattened in
            sorted key order); ``"image"`` -> uint8 ``obs [3, image_size, image_size]``
            rendered frames. Default: ``"state"``, except Atari which is always ``"image"``.
        image_size: side of square image observations.
        normalize_actions: expose ``Box`` actions as ``[-1, 1]`` (:class:`NormalizeAction`);
            discrete actions pass through, and envs with infinite bounds are left as they are.
        max_episode_steps: time limit in *inner env steps* (before action repeat), reported as
            ``truncated``. Default: the env's registered limit (dm_control: 1000 steps, Atari:
            108000 frames).
        frame_stack: image observations only: the last ``frame_stack`` agent-step frames
            stacked along channels, ``[3 * frame_stack, size, size]`` (:class:`StackFrames`).
        **kwargs: passed to ``gymnasium.make``. Extra keys understood here: for dm_control
            ``camera_id``; for Atari ``frame_skip=4``, ``grayscale=True``, ``noop_max=30``,
            ``sticky_action_probability=0.25``, ``terminal_on_life_loss=False``.

    Returns:
        A ``gymnasium.Env`` whose ``step`` returns ``(obs, reward, terminated, truncated,
        info)`` with termination and truncation kept apart.

    Raises:
        RegistryError: unknown id (with close matches).
        ImportError: the optional extra for this family is not installed.
        ConfigError: invalid ``obs_type``, ``action_repeat`` or ``image_size``.
    """
    family, gym_id = _resolve(env_id)
    if obs_type is None:
        obs_type = "image" if family == "atari" else "state"
    if obs_type not in OBS_TYPES:
        raise ConfigError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
    if int(action_repeat) != action_repeat or action_repeat < 1:
        raise ConfigError(f"action_repeat: expected an integer >= 1, got {action_repeat!r}")
    if int(image_size) != image_size or image_size < 1:
        raise ConfigError(f"image_size: expected a positive integer, got {image_size!r}")
    if isinstance(frame_stack, bool) or int(frame_stack) != frame_stack or frame_stack < 1:
        raise ConfigError(f"frame_stack: expected an integer >= 1, got {frame_stack!r}")
    if frame_stack > 1 and obs_type != "image":
        raise ConfigError(f"frame_stack: got {frame_stack} with obs_type={obs_type!r}; frames "
                          "are stacked for image observations only (obs_type='image')")

    make_kwargs: dict[str, Any] = {"disable_env_checker": True}
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = int(max_episode_steps)

    if family == "atari":
        env = _make_atari(gym_id, obs_type, image_size, make_kwargs, kwargs)
    else:
        env = _make_state_or_pixels(family, gym_id, obs_type, image_size, make_kwargs, kwargs)

    if normalize_actions and isinstance(env.action_space, spaces.Box):
        bounds = (env.action_space.low, env.action_space.high)
        if all(np.all(np.isfinite(bound)) for bound in bounds):
            env = NormalizeAction(env)
        else:
            logger.warning("%s: action bounds are not finite; actions left unnormalised", env_id)
    if action_repeat > 1:
        env = ActionRepeat(env, int(action_repeat))
    if frame_stack > 1:
        env = StackFrames(env, int(frame_stack))
    if seed is not None:
        env = SeedOnFirstReset(env, int(seed))
    return env


def _make_state_or_pixels(
    family: str,
    gym_id: str,
    obs_type: str,
    image_size: int,
    make_kwargs: dict[str, Any],
    kwargs: dict[str, Any],
) -> gymnasium.Env:
    kwargs = dict(kwargs)
    if _entry_point(gym_id).startswith(_NATIVE_FAMILY):
        if obs_type == "image":
            kwargs.setdefault("render_mode", "rgb_array")
        if make_kwargs.get("max_episode_steps") is not None:
            kwargs.setdefault("time_limit", make_kwargs["max_episode_steps"])
        env = gymnasium.make(gym_id, obs_type=obs_type, image_size=image_size, **make_kwargs,
                             **kwargs)
        return env if obs_type == "image" else StateObservation(env)
    camera_id = kwargs.pop("camera_id", None)
    if obs_type == "image":
        make_kwargs["render_mode"] = "rgb_array"
        if "MUJOCO_GL" not in os.environ and "DISPLAY" not in os.environ:
            logger.warning(
                "rendering without a display and MUJOCO_GL unset; for MuJoCo / dm_control set "
                "MUJOCO_GL=egl (or osmesa) before mujoco is first imported"
            )
        if family == "dmc":
            if camera_id is None:
                domain = gym_id.split("/", 1)[1].split("-", 1)[0]
                camera_id = _DMC_DEFAULT_CAMERA.get(domain, 0)
            render_kwargs = {"width": image_size, "height": image_size, "camera_id": camera_id}
            render_kwargs.update(kwargs.pop("render_kwargs", {}))
            make_kwargs["render_kwargs"] = render_kwargs
        elif _entry_point(gym_id).startswith(_MUJOCO_FAMILY):
            # Render at the final size instead of rendering 480x480 and shrinking.
            make_kwargs.update(width=image_size, height=image_size)
            if camera_id is not None:
                make_kwargs["camera_id"] = camera_id
    elif camera_id is not None:
        logger.warning("camera_id=%s ignored: obs_type is 'state'", camera_id)
    env = gymnasium.make(gym_id, **make_kwargs, **kwargs)
    if obs_type == "image":
        return PixelObservation(env, image_size)
    return StateObservation(env)


def _entry_point(gym_id: str) -> str:
    spec = gymnasium.registry.get(gym_id)
    entry_point = spec.entry_point if spec is not None else ""
    return entry_point if isinstance(entry_point, str) else ""


def _make_atari(
    gym_id: str,
    obs_type: str,
    image_size: int,
    make_kwargs: dict[str, Any],
    kwargs: dict[str, Any],
) -> gymnasium.Env:
    """Atari 100k-style preprocessing: sticky actions, noop starts, max-pooled frame skip."""
    if obs_type != "image":
        raise ConfigError(
            f"obs_type: Atari envs ({gym_id}) only provide 'image' observations, got {obs_type!r}"
        )
    try:
        importlib.import_module("cv2")
    except ImportError as error:
        raise _missing_extra("atari", "opencv-python-headless", error) from error
    kwargs = dict(kwargs)
    frame_skip = int(kwargs.pop("frame_skip", 4))
    grayscale = bool(kwargs.pop("grayscale", True))
    noop_max = int(kwargs.pop("noop_max", 30))
    sticky = float(kwargs.pop("sticky_action_probability", 0.25))
    terminal_on_life_loss = bool(kwargs.pop("terminal_on_life_loss", False))
    # Frame skipping happens in AtariPreprocessing (which max-pools the last two frames),
    # so the ALE env itself must step one frame at a time.
    env = gymnasium.make(
        gym_id, frameskip=1, repeat_action_probability=sticky, **make_kwargs, **kwargs
    )
    env = gymnasium.wrappers.AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=image_size,
        terminal_on_life_loss=terminal_on_life_loss,
        grayscale_obs=grayscale,
        grayscale_newaxis=True,
        scale_obs=False,
    )
    return ChannelFirst(env)


def make_vector(
    env_id: str,
    num_envs: int,
    *,
    seed: int | None = None,
    asynchronous: bool = False,
    **make_kwargs: Any,
) -> gymnasium.vector.VectorEnv:
    """``num_envs`` copies of ``make(env_id, **make_kwargs)`` in a gymnasium vector env.

    Copy ``i`` is seeded with ``seed + i`` when ``seed`` is given. ``asynchronous=True`` runs
    each copy in its own process (``AsyncVectorEnv``); otherwise they step in turn
    (``SyncVectorEnv``). Observations are stacked: ``obs [num_envs, *obs_shape]``.
    """
    if int(num_envs) != num_envs or num_envs < 1:
        raise ConfigError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
    # Resolve once here so a bad id fails in the caller's process with a clear message.
    _resolve(env_id)
    env_fns: list[Callable[[], gymnasium.Env]] = [
        functools.partial(
            make, env_id, seed=None if seed is None else int(seed) + index, **make_kwargs
        )
        for index in range(int(num_envs))
    ]
    if asynchronous:
        return gymnasium.vector.AsyncVectorEnv(env_fns)
    return gymnasium.vector.SyncVectorEnv(env_fns)
