"""Native 64x64 arcade games with four arrow-key actions, batched in NumPy.

Quick use::

    import gymnasium, worldflux.envs
    env = worldflux.envs.make("worldflux/Breakout64-v0", obs_type="image")  # obs [3, 64, 64]
    env = worldflux.envs.make("worldflux/Collect64-v0", obs_type="image")

    from worldflux.envs.games import BreakoutBatch, collect
    game = BreakoutBatch(256, seed=0)                  # 256 worlds stepped at once
    data = collect(game, steps=200, policy="scripted")  # obs [256, 201, 3, 64, 64] ...

Actions (both games): ``0`` up, ``1`` down, ``2`` left, ``3`` right. Games: ``Breakout64``
(paddle and ball, bricks, lives) and ``Collect64`` (top-down: coins, bouncing enemies, bushes
that hide what passes under them). Both draw the score and the lives at the top.
"""

from __future__ import annotations

import gymnasium

from worldflux.envs.games.base import ACTION_NAMES, NUM_ACTIONS, SIZE, GameBatch, collect
from worldflux.envs.games.breakout64 import BreakoutBatch
from worldflux.envs.games.collect64 import CollectBatch
from worldflux.envs.games.env import GameEnv

GAMES: dict[str, type[GameBatch]] = {"Breakout64": BreakoutBatch, "Collect64": CollectBatch}
"""Game name -> batch class; a game's position here is its ``game_index``."""


class Breakout64Env(GameEnv):
    """``worldflux/Breakout64-v0``: see :mod:`worldflux.envs.games.breakout64`."""

    game_class = BreakoutBatch


class Collect64Env(GameEnv):
    """``worldflux/Collect64-v0``: see :mod:`worldflux.envs.games.collect64`."""

    game_class = CollectBatch


ENV_IDS = {"Breakout64": "worldflux/Breakout64-v0", "Collect64": "worldflux/Collect64-v0"}


def game_from_env_id(env_id: str) -> str | None:
    """``"worldflux/Breakout64-v0" -> "Breakout64"``; None for other ids."""
    for name, known in ENV_IDS.items():
        if env_id == known:
            return name
    return None


for _name, _id in ENV_IDS.items():
    if _id not in gymnasium.registry:
        # The time limit lives in the game (``time_limit``) so the batched and the single form
        # truncate alike; gymnasium's TimeLimit wrapper is not added.
        gymnasium.register(id=_id, entry_point=f"worldflux.envs.games:{_name}Env")

__all__ = ["ACTION_NAMES", "ENV_IDS", "GAMES", "NUM_ACTIONS", "SIZE", "Breakout64Env",
           "BreakoutBatch", "Collect64Env", "CollectBatch", "GameBatch", "GameEnv", "collect",
           "game_from_env_id"]
