"""Native batched puzzle and board-game environments (vectorised NumPy, no per-env loops).

Each env steps N instances at once with the :class:`~worldflux.rl.env.BatchedEnv` interface
(``reset() -> obs, info``; ``step(actions) -> obs, reward, terminated, truncated, info`` with
``info["action_mask"]``); the ``*Rules`` classes are the pure batch functions search uses.
"""

from worldflux.envs.puzzles.boardgames import (
    BoardGameEnv,
    BoardGameRules,
    ConnectFour,
    TicTacToe,
    line_windows,
    random_legal,
)
from worldflux.envs.puzzles.gridworld import GridWorld, GridWorldConfig
from worldflux.envs.puzzles.sliding import SlidingPuzzle, SlidingPuzzleConfig, SlidingPuzzleRules

__all__ = [
    "BoardGameEnv", "BoardGameRules", "ConnectFour", "GridWorld", "GridWorldConfig",
    "SlidingPuzzle", "SlidingPuzzleConfig", "SlidingPuzzleRules", "TicTacToe", "line_windows",
    "random_legal",
]
