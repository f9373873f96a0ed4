"""Held-out episodes for evaluating world models: fresh ones from an env, or a run's replay files.

An agent trains on every episode it collects, so a run's ``replay/`` holds no held-out data:
:func:`collect_episodes` plays fresh episodes from seeds training never used (by default
``train.seed + HELDOUT_SEED_OFFSET + i``), with random actions, a callable, or an agent's
greedy policy.

Env options (the out-of-distribution mechanism): a dict whose keys are passed to
:func:`worldflux.envs.make` (hence ``gymnasium.make``), e.g. ``{"g": 15.0}`` for Pendulum-v1's
gravity or ``{"wind": 0.5, "mass_scale": 1.5}`` for an env that accepts them; keys written
``"unwrapped.NAME"`` set the attribute ``NAME`` of ``env.unwrapped`` after construction, for
physical constants that are not constructor arguments (``{"unwrapped.m": 1.5}``: Pendulum-v1's
mass). Every episode is a dict of the episode-file schema (:mod:`worldflux.data.episodes`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError, DataError

__all__ = [
    "HELDOUT_SEED_OFFSET",
    "EnvFactory",
    "apply_env_options",
    "collect_episodes",
    "env_factory_for",
    "replay_episodes",
]

HELDOUT_SEED_OFFSET = 20_000
"""Held-out episodes of a run start from ``train.seed + HELDOUT_SEED_OFFSET + i`` (training uses
hashed seeds, evaluation ``train.seed + 10_000 + i``)."""

ATTRIBUTE_PREFIX = "unwrapped."
"""Env-option keys with this prefix set an attribute of ``env.unwrapped`` instead of a kwarg."""

EnvFactory = Callable[..., gymnasium.Env]
"""``factory(**make_kwargs) -> env``: builds the env with extra ``make`` keyword arguments."""


def _split_options(env_options: Mapping[str, Any] | None) -> tuple[dict, dict]:
    if env_options is None:
        return {}, {}
    if not isinstance(env_options, Mapping):
        raise ConfigError(f"env_options: got {type(env_options).__name__}, expected a dict of "
                          "make() keyword arguments (e.g. {'g': 15.0})")
    make_kwargs, attributes = {}, {}
    for key, value in env_options.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"env_options: got key {key!r}, expected a non-empty string")
        if key.startswith(ATTRIBUTE_PREFIX):
            attributes[key[len(ATTRIBUTE_PREFIX):]] = value
        else:
            make_kwargs[key] = value
    return make_kwargs, attributes


def apply_env_options(factory: EnvFactory, env_options: Mapping[str, Any] | None = None
                      ) -> gymnasium.Env:
    """Build an env with ``factory(**make_kwargs)``, then set the ``unwrapped.*`` attributes.

    Raises:
        ConfigError: the factory rejects a keyword, or ``env.unwrapped`` has no such attribute
            (a typo would otherwise silently evaluate the unperturbed env).
    """
    make_kwargs, attributes = _split_options(env_options)
    try:
        env = factory(**make_kwargs)
    except TypeError as exc:
        raise ConfigError(f"env_options {dict(make_kwargs)}: the env does not accept them "
                          f"({exc})") from exc
    for name, value in attributes.items():
        if not hasattr(env.unwrapped, name):
            env.close()
            raise ConfigError(
                f"env_options: {ATTRIBUTE_PREFIX}{name} - {type(env.unwrapped).__name__} has no "
                f"attribute {name!r}; expected one of its existing attributes"
            )
        setattr(env.unwrapped, name, value)
    return env


def env_factory_for(env: str | EnvFactory | Any) -> EnvFactory:
    """A factory ``(**make_kwargs) -> env`` from an env id, a ``TrainConfig`` or a factory.

    An id is built with :func:`worldflux.envs.make`; a ``TrainConfig`` (anything with ``env``,
    ``action_repeat``, ``obs_type`` and ``image_size``) the way training built it.
    """
    from worldflux import envs

    if isinstance(env, str):
        return lambda **kwargs: envs.make(env, **kwargs)
    if all(hasattr(env, name) for name in ("env", "action_repeat", "obs_type", "image_size")):
        config = env
        return lambda **kwargs: envs.make(config.env, action_repeat=config.action_repeat,
                                          obs_type=config.obs_type,
                                          image_size=config.image_size,
                                          frame_stack=getattr(config, "frame_stack", 1),
                                          **{**getattr(config, "env_options", {}), **kwargs})
    if callable(env):
        return env
    raise ConfigError(f"env: got {type(env).__name__}, expected an env id, a TrainConfig or a "
                      "callable(**make_kwargs) -> gymnasium.Env")


def _policy_fn(policy: Any, env: gymnasium.Env, seed: int
               ) -> tuple[Callable[[np.ndarray], Any], Callable[[], None]]:
    """``(act(obs) -> env action, reset())`` for ``"random"``, an agent or a callable."""
    if isinstance(policy, str):
        if policy != "random":
            raise ConfigError(f"policy: got {policy!r}, expected 'random', an agent or a "
                              "callable(obs) -> action")
        rng = np.random.default_rng(seed)
        space = env.action_space
        if isinstance(space, spaces.Discrete):
            return (lambda obs: int(space.start + rng.integers(space.n))), lambda: None
        if isinstance(space, spaces.Box) and np.all(np.isfinite(space.low)) and np.all(
                np.isfinite(space.high)):
            return (lambda obs: rng.uniform(space.low, space.high).astype(space.dtype)), \
                lambda: None
        raise ConfigError(f"policy 'random': action space {space} is not Discrete or a bounded "
                          "Box; pass a callable policy")
    if hasattr(policy, "act"):
        agent = policy
        return (lambda obs: agent.act(obs, explore=False)), getattr(agent, "reset", lambda: None)
    if callable(policy):
        return policy, lambda: None
    raise ConfigError(f"policy: got {type(policy).__name__}, expected 'random', an agent or a "
                      "callable(obs) -> action")


def _stored_row(action: Any, space: gymnasium.Space) -> np.ndarray:
    """The float action row a replay buffer stores (one-hot for discrete actions)."""
    if isinstance(space, spaces.Discrete):
        array = np.asarray(action)
        index = int(array.reshape(-1)[0]) if array.size == 1 else int(np.argmax(array))
        row = np.zeros(int(space.n), np.float32)
        row[index - int(space.start)] = 1.0
        return row
    return np.asarray(action, dtype=np.float32).reshape(-1)


def _env_action(action: Any, space: gymnasium.Space) -> Any:
    if isinstance(space, spaces.Discrete):
        array = np.asarray(action)
        return int(array.reshape(-1)[0]) if array.size == 1 else int(np.argmax(array)) + int(
            space.start)
    if isinstance(space, spaces.Box):
        array = np.asarray(action, dtype=space.dtype).reshape(space.shape)
        return np.clip(array, space.low, space.high)
    return action


def collect_episodes(env: str | EnvFactory | Any, policy: Any = "random", episodes: int = 5, *,
                     seed: int = HELDOUT_SEED_OFFSET, max_steps: int | None = None,
                     env_options: Mapping[str, Any] | None = None,
                     on_step: Callable[[int, bool], None] | None = None
                     ) -> list[dict[str, np.ndarray]]:
    """Play ``episodes`` episodes and return them in the episode-file schema.

    Args:
        env: an env id (built with :func:`worldflux.envs.make`, actions in ``[-1, 1]``), a
            ``TrainConfig`` (the run's env as training built it) or a factory
            ``(**make_kwargs) -> gymnasium.Env``.
        policy: ``"random"`` (uniform actions from a generator seeded with ``seed``), an agent
            (``agent.act(obs, explore=False)``, ``agent.reset()`` per episode) or a callable
            ``obs -> action``.
        episodes: number of episodes; episode ``i`` starts from ``env.reset(seed=seed + i)``,
            so two calls with other ``env_options`` meet the same initial states and (with the
            random policy) the same action sequences.
        seed: seed of the first reset (and of the random policy).
        max_steps: cut every episode after this many steps (marked ``truncated``).
        env_options: ``make`` keyword arguments and ``unwrapped.*`` attributes (see the module
            docstring): the out-of-distribution perturbation.
        on_step: called as ``on_step(episode, done)`` after every env step (progress bars).

    Returns:
        A list of dicts with ``obs [L + 1, *obs_shape]``, ``actions [L + 1, A]`` (row 0 zeros;
        one-hot rows for discrete actions), ``rewards [L + 1]``, ``terminated``, ``truncated``,
        ``is_first [L + 1]`` (see :mod:`worldflux.data`).
    """
    from worldflux.data.episodes import validate_episode

    if int(episodes) != episodes or episodes < 1:
        raise ConfigError(f"episodes: got {episodes!r}, expected an integer >= 1")
    if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
        raise ConfigError(f"max_steps: got {max_steps!r}, expected an integer >= 1 or None")
    factory = env_factory_for(env)
    instance = apply_env_options(factory, env_options)
    out: list[dict[str, np.ndarray]] = []
    try:
        space = instance.action_space
        act, reset = _policy_fn(policy, instance, int(seed))
        for episode in range(int(episodes)):
            obs, _ = instance.reset(seed=int(seed) + episode)
            reset()
            rows_obs, rows_act = [np.array(obs, copy=True)], [None]
            rewards, terminated, truncated = [0.0], [False], [False]
            done = False
            while not done:
                action = act(obs)
                obs, reward, term, trunc, _ = instance.step(_env_action(action, space))
                steps = len(rows_obs)
                trunc = bool(trunc) or (max_steps is not None and steps >= max_steps)
                rows_obs.append(np.array(obs, copy=True))
                rows_act.append(_stored_row(action, space))
                rewards.append(float(reward))
                terminated.append(bool(term))
                truncated.append(bool(trunc) and not term)
                done = bool(term) or trunc
                if on_step is not None:
                    on_step(episode, done)
            width = rows_act[1].shape[0] if len(rows_act) > 1 else _stored_row(
                space.sample(), space).shape[0]
            rows_act[0] = np.zeros(width, np.float32)
            obs_array = np.stack(rows_obs)
            if obs_array.dtype != np.uint8:
                obs_array = obs_array.astype(np.float32)
            is_first = np.zeros(len(rows_obs), bool)
            is_first[0] = True
            record = {"obs": obs_array, "actions": np.stack(rows_act).astype(np.float32),
                      "rewards": np.asarray(rewards, np.float32),
                      "terminated": np.asarray(terminated, bool),
                      "truncated": np.asarray(truncated, bool), "is_first": is_first}
            validate_episode(record, source=f"collected episode {episode}")
            out.append(record)
    finally:
        instance.close()
    return out


def replay_episodes(run_dir: str | os.PathLike, last: int | None = None
                    ) -> list[dict[str, np.ndarray]]:
    """The episodes of ``RUN_DIR/replay/*.npz`` (the newest ``last`` ones when given).

    These are training data (the agent trained on all of them): use them to compare fidelity
    on training data with that on held-out episodes from :func:`collect_episodes`.

    Raises:
        DataError: no replay directory or no episode file in it.
    """
    from worldflux.data.episodes import load_episode

    folder = Path(run_dir) / "replay"
    files = sorted(folder.glob("episode-*.npz"))
    if not files:
        raise DataError(f"{folder}: no episode-*.npz files; expected a run directory's replay")
    if last is not None:
        if int(last) != last or last < 1:
            raise ConfigError(f"last: got {last!r}, expected an integer >= 1 or None")
        files = files[-int(last):]
    return [load_episode(path) for path in files]
