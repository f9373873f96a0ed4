"""The batched environment interface of the fast RL core, and the gymnasium adapter.

A :class:`BatchedEnv` steps ``num_envs`` environments at once with arrays (NumPy)::

    obs, info = env.reset(seed=0)                     # obs [N, *obs_shape]
    obs, reward, terminated, truncated, info = env.step(actions)   # actions [N] or [N, A]

* ``info["action_mask"] [N, A]`` (bool, discrete spaces only): the legal actions now.
* Auto-reset on the same step: rows that ended return the first observation of their next
  episode; ``info["final_obs"] [N, *obs_shape]`` holds the last observation of the episode that
  ended (only rows with ``terminated | truncated`` are meaningful). Learners bootstrap truncated
  episodes from it.
* ``info["skip"] [N]`` (optional): rows whose step was a reset placeholder (their action was
  ignored); learners leave those rows out. Gymnasium vector envs with next-step auto-reset
  produce them; the native envs never do.
* ``info["success"] [N]`` (optional): the episode that ended on this row succeeded.

Native envs (:mod:`worldflux.envs.puzzles`) implement it directly; :class:`GymnasiumAdapter`
runs any gymnasium env, single or vectorised, through it. :func:`make_batched_env` builds one
from an id: ``puzzle/sliding-3x3``, ``puzzle/sliding-4x4``, ``puzzle/gridworld``,
``game/tictactoe``, ``game/connect4`` (against a random opponent), or any gymnasium id.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium
import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError, RegistryError, close_matches

__all__ = ["NATIVE_ENVS", "BatchedEnv", "GymnasiumAdapter", "make_batched_env"]


@runtime_checkable
class BatchedEnv(Protocol):
    """N environments stepped together with arrays; see the module docstring."""

    num_envs: int
    observation_space: spaces.Box
    action_space: spaces.Space

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                  dict[str, np.ndarray]]: ...


class GymnasiumAdapter:
    """Any gymnasium env (one env, a vector env, or an id) as a :class:`BatchedEnv`.

    An id is built with ``gymnasium.make_vec``: its native vector implementation when it has one
    (e.g. ``CartPole-v1``, stepped in NumPy without a Python loop per env), else a synchronous
    vector env with same-step auto-reset. A single ``gymnasium.Env`` becomes a vector env of 1.

    Args:
        env: an id, a ``gymnasium.Env`` or a ``gymnasium.vector.VectorEnv``.
        num_envs: environments for an id (ignored otherwise).
        native: try the id's native vector implementation first.
    """

    def __init__(self, env: str | gymnasium.Env | gymnasium.vector.VectorEnv,
                 num_envs: int = 1, *, native: bool = True, **make_kwargs: Any) -> None:
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if isinstance(env, str):
            vec = None
            if native:
                try:
                    vec = gymnasium.make_vec(env, num_envs=num_envs,
                                             vectorization_mode="vector_entry_point",
                                             **make_kwargs)
                except (gymnasium.error.Error, TypeError, ValueError):
                    vec = None
            if vec is None:
                vec = gymnasium.make_vec(env, num_envs=num_envs, vectorization_mode="sync",
                                         vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                                         **make_kwargs)
        elif isinstance(env, gymnasium.vector.VectorEnv):
            vec = env
        elif isinstance(env, gymnasium.Env):
            vec = SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise ConfigError(f"env: got {type(env).__name__}, expected a gymnasium id, "
                              "gymnasium.Env or gymnasium.vector.VectorEnv")
        self.vec = vec
        self.num_envs = vec.num_envs
        mode = vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode == AutoresetMode.DISABLED:
            raise ConfigError("env: a vector env with auto-reset disabled; expected next-step "
                              "or same-step auto-reset")
        self.next_step_reset = mode == AutoresetMode.NEXT_STEP
        self.observation_space = vec.single_observation_space
        self.action_space = vec.single_action_space
        self._prev_done = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        obs, info = self.vec.reset(seed=seed)
        self._prev_done[:] = False
        return np.asarray(obs, dtype=np.float32), self._info(info)

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if isinstance(self.action_space, spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        obs, reward, terminated, truncated, info = self.vec.step(actions)
        obs = np.asarray(obs, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        out = self._info(info)
        done = terminated | truncated
        if self.next_step_reset:
            # This step reset the rows that ended last step: mark them; the rows that end now
            # return their final observation as obs (the reset comes next step).
            out["skip"] = self._prev_done.copy()
            if done.any():
                out["final_obs"] = obs
            self._prev_done = done
        elif done.any() and "final_obs" in info:
            final = np.zeros_like(obs)
            for row in np.flatnonzero(done):  # gymnasium hands these over as an object array
                final[row] = info["final_obs"][row]
            out["final_obs"] = final
        return obs, np.asarray(reward, dtype=np.float32), terminated, truncated, out

    def _info(self, info: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "action_mask" in info:
            out["action_mask"] = np.asarray(info["action_mask"], dtype=bool)
        if "is_success" in info:
            out["success"] = np.asarray(info["is_success"], dtype=bool)
        return out

    def close(self) -> None:
        self.vec.close()


def _sliding(size: int):
    def build(num_envs: int, seed: int | None, **options: Any):
        from worldflux.core.config import from_dict
        from worldflux.envs.puzzles import SlidingPuzzle, SlidingPuzzleConfig

        config = from_dict(SlidingPuzzleConfig, {"size": size, **options})
        return SlidingPuzzle(num_envs, config, seed=seed)
    return build


def _gridworld(num_envs: int, seed: int | None, **options: Any):
    from worldflux.core.config import from_dict
    from worldflux.envs.puzzles import GridWorld, GridWorldConfig

    return GridWorld(num_envs, from_dict(GridWorldConfig, options), seed=seed)


def _game(name: str):
    def build(num_envs: int, seed: int | None, **options: Any):
        from worldflux.envs.puzzles import BoardGameEnv, ConnectFour, TicTacToe

        if options:
            raise ConfigError(f"env options: game/{name} takes none, got {sorted(options)}")
        rules = TicTacToe() if name == "tictactoe" else ConnectFour()
        return BoardGameEnv(rules, num_envs, seed=seed)
    return build


NATIVE_ENVS = {
    "puzzle/sliding-3x3": _sliding(3),
    "puzzle/sliding-4x4": _sliding(4),
    "puzzle/gridworld": _gridworld,
    "game/tictactoe": _game("tictactoe"),
    "game/connect4": _game("connect4"),
}
"""Native batched env ids -> builders ``(num_envs, seed, **options) -> BatchedEnv``."""


def make_batched_env(env_id: str, num_envs: int, *, seed: int | None = None,
                     **options: Any) -> BatchedEnv:
    """A :class:`BatchedEnv` of ``num_envs`` envs for ``env_id`` (native id or gymnasium id).

    ``options`` go to the native env's config (e.g. ``depth=8`` for the sliding puzzle) or to
    ``gymnasium.make_vec``.
    """
    if num_envs < 1:
        raise ConfigError(f"num_envs: got {num_envs}, expected an integer >= 1")
    if env_id in NATIVE_ENVS:
        return NATIVE_ENVS[env_id](num_envs, seed, **options)
    if env_id.startswith(("puzzle/", "game/")):
        raise RegistryError(f"env '{env_id}': not a native env; known: {', '.join(NATIVE_ENVS)}."
                            + close_matches(env_id, NATIVE_ENVS))
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error:
        raise RegistryError(f"env '{env_id}': neither a native env ({', '.join(NATIVE_ENVS)}) "
                            "nor a registered gymnasium id") from None
    return GymnasiumAdapter(env_id, num_envs, **options)
