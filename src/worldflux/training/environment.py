"""Glue between environments and agents: building envs from a TrainConfig, specs, actions."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from worldflux.core.errors import ConfigError, ContractError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.training.config import TrainConfig

EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded with ``train.seed + EVAL_SEED_OFFSET`` (never the training seed)."""


def episode_seed(seed: int, episode: int) -> int:
    """Seed of the ``reset`` that starts training episode ``episode`` (0-based) of run seed ``seed``.

    Every training episode starts from its own seeded reset, so a resumed run (which rebuilds
    the env) meets exactly the episode starts of the uninterrupted run. Episode 0 uses ``seed``
    itself, as the first reset of ``make_env(seed=seed)`` always did (so a run's first episode
    is the one earlier versions saw); later ones hash ``(seed, episode)`` with ``SeedSequence``,
    which keeps them apart from the evaluation seeds ``seed + 10_000 + i``.
    """
    if episode == 0:
        return int(seed)
    entropy = [int(seed) % 2**63, int(episode)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def make_env(config: TrainConfig, *, seed: int) -> gymnasium.Env:
    """The env described by ``config`` (id, action repeat, observation type), seeded with ``seed``."""
    from worldflux import envs

    return envs.make(config.env, seed=seed, action_repeat=config.action_repeat,
                     obs_type=config.obs_type, image_size=config.image_size,
                     frame_stack=config.frame_stack, **config.env_options)


def specs_for(env: gymnasium.Env) -> tuple[ObservationSpec, ActionSpec]:
    """Observation and action specs of ``env`` (uint8 images, one-hot width for discrete actions)."""
    from worldflux.envs import env_spec

    spec = env_spec(env)
    dtype = "uint8" if np.dtype(spec["obs_dtype"]) == np.uint8 else "float32"
    obs_spec = ObservationSpec(tuple(spec["obs_shape"]), dtype)
    if spec["action_kind"] == "discrete":
        return obs_spec, ActionSpec(spec["action_dim"], "discrete")
    low, high = spec["action_low"], spec["action_high"]
    # make() normalises finite Box actions to [-1, 1]; a spec has one scalar bound per side.
    return obs_spec, ActionSpec(spec["action_dim"], "continuous",
                                float(np.min(low)), float(np.max(high)))


def env_action(action: Any, action_spec: ActionSpec) -> tuple[Any, np.ndarray]:
    """Agent output -> (what ``env.step`` takes, the float ``[A]`` row stored in the buffer).

    Discrete agents may return an index or a one-hot/score vector ``[A]``; the buffer stores
    one-hot. Continuous actions must be finite ``[A]``; they are clipped to the spec's bounds.
    """
    array = np.asarray(action)
    if action_spec.kind == "discrete":
        if array.size == 1:
            index = int(array.reshape(-1)[0])
        elif array.shape == (action_spec.dim,):
            index = int(np.argmax(array))
        else:
            raise ContractError(
                f"agent action: got shape {array.shape}, expected an index or [{action_spec.dim}]"
            )
        if not 0 <= index < action_spec.dim:
            raise ContractError(
                f"agent action: got index {index}, expected a value in [0, {action_spec.dim - 1}]"
            )
        one_hot = np.zeros(action_spec.dim, dtype=np.float32)
        one_hot[index] = 1.0
        return index, one_hot
    array = array.astype(np.float32).reshape(-1)
    if array.shape != (action_spec.dim,):
        raise ContractError(
            f"agent action: got shape {np.asarray(action).shape}, expected [{action_spec.dim}]"
        )
    if not np.all(np.isfinite(array)):
        raise ContractError(f"agent action: got non-finite values {array}, expected finite numbers")
    array = np.clip(array, action_spec.low, action_spec.high)
    return array, array


def attach_env_reward(agent, env) -> None:
    """Give ``agent`` the env's reward function when its config asks for ``reward_source="env"``.

    Raises:
        ConfigError: the env has no ``reward_function()`` (or none for this observation type).
    """
    if getattr(agent.config, "reward_source", "learned") != "env":
        return
    provider = getattr(env.unwrapped, "reward_function", None)
    fn = provider() if callable(provider) else None
    if fn is None:
        raise ConfigError(
            f"reward_source: got 'env', but {env.spec.id if env.spec else type(env.unwrapped)} "
            "gives no reward function of its observations; use reward_source=learned"
        )
    agent.set_reward_function(fn)
