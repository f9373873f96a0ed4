"""The sliding puzzle (3x3 "8-puzzle", 4x4 "15-puzzle"), N boards at once in NumPy.

A board is ``tiles [N, H*W]`` (int8): ``tiles[n, p]`` is the tile at position ``p`` (row-major),
``0`` the blank. Solved is ``tiles[n, p] == p``. Action ``a`` moves the blank one cell:
0 left, 1 up, 2 right, 3 down; a move off the board is masked (and a no-op if taken anyway).

A start state is the solved board scrambled by ``depth`` uniformly random moves, where moves off
the board are no-ops, as in TwisteRL's ``Puzzle`` env, so that "scramble depth d" means the same
distribution in both libraries. The episode is truncated after ``depth_slope * depth`` moves
(TwisteRL's ``depth_slope`` default is 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError

__all__ = ["SlidingPuzzle", "SlidingPuzzleConfig", "SlidingPuzzleRules"]

# Blank displacement (dx, dy) per action: left, up, right, down.
_DX = np.array([-1, 0, 1, 0])
_DY = np.array([0, -1, 0, 1])


class SlidingPuzzleRules:
    """Pure functions of a batch of boards (the model that search and the env share).

    Args:
        size: board side (3 or 4; any side >= 2 works).
    """

    num_actions = 4
    two_player = False

    def __init__(self, size: int = 3) -> None:
        if size < 2:
            raise ConfigError(f"size: got {size}, expected an integer >= 2")
        self.size = size
        self.cells = size * size
        positions = np.arange(self.cells)
        x, y = positions % size, positions // size
        # mask_table[p, a]: the blank at p can move in direction a.
        self.mask_table = np.stack([x > 0, y > 0, x < size - 1, y < size - 1], axis=1)
        # target_table[p, a]: where the blank goes (p itself when the move is off the board).
        target = positions[:, None] + _DX[None, :] + size * _DY[None, :]
        self.target_table = np.where(self.mask_table, target, positions[:, None])
        self.solved_tiles = positions.astype(np.int8)

    @property
    def state_size(self) -> int:
        return self.cells

    def initial_states(self, num: int) -> np.ndarray:
        """``num`` solved boards ``[num, H*W]``."""
        return np.tile(self.solved_tiles, (num, 1))

    def blank(self, tiles: np.ndarray) -> np.ndarray:
        """Position of the blank per board ``[N]``."""
        return np.argmin(tiles, axis=1)

    def legal_mask(self, tiles: np.ndarray) -> np.ndarray:
        """Moves that stay on the board ``[N, 4]`` (bool)."""
        return self.mask_table[self.blank(tiles)]

    def solved(self, tiles: np.ndarray) -> np.ndarray:
        """``[N]`` bool."""
        return (tiles == self.solved_tiles).all(axis=1)

    def apply(self, tiles: np.ndarray, actions: np.ndarray, blank: np.ndarray | None = None
              ) -> np.ndarray:
        """Boards after moving the blank by ``actions [N]`` (a new array; illegal moves no-op)."""
        if blank is None:
            blank = self.blank(tiles)
        target = self.target_table[blank, actions]
        rows = np.arange(tiles.shape[0])
        out = tiles.copy()
        out[rows, blank] = tiles[rows, target]
        out[rows, target] = 0
        return out

    def next_states(self, tiles: np.ndarray, actions: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Search model: ``(next [N, H*W], reward [N], done [N])``; reward 1 on solving."""
        nxt = self.apply(tiles, actions)
        done = self.solved(nxt)
        return nxt, done.astype(np.float32), done

    def observe(self, tiles: np.ndarray) -> np.ndarray:
        """One-hot (position, tile) features ``[N, (H*W)**2]`` float32."""
        n = tiles.shape[0]
        obs = np.zeros((n, self.cells, self.cells), dtype=np.float32)
        obs[np.arange(n)[:, None], np.arange(self.cells)[None, :], tiles] = 1.0
        return obs.reshape(n, self.cells * self.cells)

    def scramble(self, num: int, depth: np.ndarray | int, rng: np.random.Generator
                 ) -> np.ndarray:
        """``num`` boards, board ``n`` scrambled by ``depth[n]`` random moves (never solved)."""
        depth = np.broadcast_to(np.asarray(depth, dtype=np.int64), (num,))
        tiles = self.initial_states(num)
        blank = np.zeros(num, dtype=np.int64)
        for step in range(int(depth.max(initial=0))):
            moving = depth > step
            actions = rng.integers(0, 4, size=num)
            target = self.target_table[blank, actions]
            target = np.where(moving, target, blank)
            rows = np.arange(num)
            moved = tiles[rows, target]
            tiles[rows, blank] = moved
            tiles[rows, target] = 0
            blank = target
        # A scramble that came back to the solved board is scrambled further (rare past depth 4).
        again = self.solved(tiles) & (depth > 0)
        while again.any():
            idx = np.flatnonzero(again)
            sub = tiles[idx]
            for _ in range(2):
                sub = self.apply(sub, rng.integers(0, 4, size=len(idx)))
            tiles[idx] = sub
            again[idx] = self.solved(sub)
        return tiles


@dataclass
class SlidingPuzzleConfig:
    """Settings of :class:`SlidingPuzzle`."""

    size: int = 3
    """Board side: 3 (8-puzzle) or 4 (15-puzzle)."""

    depth: int = 32
    """Scramble depth: random moves applied to the solved board (32 is TwisteRL's 3x3 target)."""

    min_depth: int | None = None
    """When set, each episode draws its depth uniformly from ``[min_depth, depth]`` (a built-in
    curriculum); None means every episode uses ``depth``."""

    depth_slope: int = 2
    """An episode is truncated after ``depth_slope * depth`` moves (TwisteRL's default is 2)."""

    step_penalty: float = 0.5
    """Total penalty spread over the move budget: each unsolved move costs
    ``step_penalty / (depth_slope * depth)``; solving gives +1 (TwisteRL's reward shape)."""

    def validate(self) -> None:
        if self.size < 2:
            raise ConfigError(f"size: got {self.size}, expected an integer >= 2")
        if self.depth < 1:
            raise ConfigError(f"depth: got {self.depth}, expected an integer >= 1")
        if self.min_depth is not None and not 1 <= self.min_depth <= self.depth:
            raise ConfigError(f"min_depth: got {self.min_depth}, expected 1..depth ({self.depth})")
        if self.depth_slope < 1:
            raise ConfigError(f"depth_slope: got {self.depth_slope}, expected an integer >= 1")


class SlidingPuzzle:
    """N sliding puzzles stepped together (a :class:`~worldflux.rl.env.BatchedEnv`).

    ``step`` resets finished boards in place (same-step auto-reset); the observation of the
    board that finished is in ``info["final_obs"]`` (rows where ``terminated | truncated``).
    ``info["success"] [N]`` marks boards solved on this step.
    """

    def __init__(self, num_envs: int, config: SlidingPuzzleConfig | None = None, *,
                 seed: int | None = None) -> None:
        self.config = config or SlidingPuzzleConfig()
        self.config.validate()
        self.num_envs = int(num_envs)
        self.rules = SlidingPuzzleRules(self.config.size)
        cells = self.rules.cells
        self.observation_space = spaces.Box(0.0, 1.0, (cells * cells,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.rng = np.random.default_rng(seed)
        self.tiles = self.rules.initial_states(self.num_envs)
        self.blank = np.zeros(self.num_envs, dtype=np.int64)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.limit = np.ones(self.num_envs, dtype=np.int64)
        self.depth = np.ones(self.num_envs, dtype=np.int64)

    def _draw_depth(self, num: int) -> np.ndarray:
        cfg = self.config
        if cfg.min_depth is None:
            return np.full(num, cfg.depth, dtype=np.int64)
        return self.rng.integers(cfg.min_depth, cfg.depth + 1, size=num)

    def _reset_rows(self, rows: np.ndarray) -> None:
        depth = self._draw_depth(len(rows))
        self.tiles[rows] = self.rules.scramble(len(rows), depth, self.rng)
        self.blank[rows] = self.rules.blank(self.tiles[rows])
        self.steps[rows] = 0
        self.depth[rows] = depth
        self.limit[rows] = self.config.depth_slope * depth

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scramble every board: ``obs [N, (H*W)**2]``, ``info["action_mask"] [N, 4]``."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_rows(np.arange(self.num_envs))
        return self.rules.observe(self.tiles), {"action_mask": self.action_mask()}

    def action_mask(self) -> np.ndarray:
        """``[N, 4]`` bool: moves that keep the blank on the board."""
        return self.rules.mask_table[self.blank]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                  dict[str, np.ndarray]]:
        """Move every blank by ``actions [N]``: ``(obs, reward, terminated, truncated, info)``."""
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        rules, n = self.rules, self.num_envs
        rows = np.arange(n)
        target = rules.target_table[self.blank, actions]
        self.tiles[rows, self.blank] = self.tiles[rows, target]
        self.tiles[rows, target] = 0
        self.blank = target
        self.steps += 1
        solved = rules.solved(self.tiles)
        truncated = ~solved & (self.steps >= self.limit)
        reward = np.where(solved, 1.0, -self.config.step_penalty / self.limit).astype(np.float32)
        done = solved | truncated
        info: dict[str, np.ndarray] = {"success": solved}
        if done.any():
            finished = np.flatnonzero(done)
            final_obs = np.zeros((n, rules.cells * rules.cells), dtype=np.float32)
            final_obs[finished] = rules.observe(self.tiles[finished])
            info["final_obs"] = final_obs
            info["final_depth"] = self.depth.copy()
            self._reset_rows(finished)
        info["action_mask"] = self.action_mask()
        return rules.observe(self.tiles), reward, solved, truncated, info
