"""A grid world: reach the goal cell on an ``size x size`` grid, N worlds at once in NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError

__all__ = ["GridWorld", "GridWorldConfig"]

_DX = np.array([-1, 0, 1, 0])
_DY = np.array([0, -1, 0, 1])


@dataclass
class GridWorldConfig:
    """Settings of :class:`GridWorld`."""

    size: int = 5
    """Grid side."""

    max_steps: int | None = None
    """Truncate an episode after this many moves (default ``4 * size``)."""

    step_penalty: float = 0.01
    """Reward of each move that does not reach the goal; reaching it gives +1."""

    def validate(self) -> None:
        if self.size < 2:
            raise ConfigError(f"size: got {self.size}, expected an integer >= 2")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: got {self.max_steps}, expected None or >= 1")


class GridWorld:
    """Agent and goal start on distinct random cells; actions 0 left, 1 up, 2 right, 3 down
    (moves off the grid are masked). Observation: agent and goal one-hot planes ``[2, S, S]``."""

    def __init__(self, num_envs: int, config: GridWorldConfig | None = None, *,
                 seed: int | None = None) -> None:
        self.config = config or GridWorldConfig()
        self.config.validate()
        size = self.config.size
        self.num_envs = int(num_envs)
        self.max_steps = self.config.max_steps or 4 * size
        self.observation_space = spaces.Box(0.0, 1.0, (2, size, size), np.float32)
        self.action_space = spaces.Discrete(4)
        self.rng = np.random.default_rng(seed)
        cells = np.arange(size * size)
        x, y = cells % size, cells // size
        self.mask_table = np.stack([x > 0, y > 0, x < size - 1, y < size - 1], axis=1)
        self.move_table = np.where(self.mask_table, cells[:, None] + _DX + size * _DY,
                                   cells[:, None])
        self.agent = np.zeros(self.num_envs, dtype=np.int64)
        self.goal = np.zeros(self.num_envs, dtype=np.int64)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)

    def _place(self, rows: np.ndarray) -> None:
        cells = self.config.size ** 2
        self.goal[rows] = self.rng.integers(0, cells, size=len(rows))
        offset = self.rng.integers(1, cells, size=len(rows))
        self.agent[rows] = (self.goal[rows] + offset) % cells
        self.steps[rows] = 0

    def observe(self, agent: np.ndarray, goal: np.ndarray) -> np.ndarray:
        size, n = self.config.size, len(agent)
        obs = np.zeros((n, 2, size * size), dtype=np.float32)
        obs[np.arange(n), 0, agent] = 1.0
        obs[np.arange(n), 1, goal] = 1.0
        return obs.reshape(n, 2, size, size)

    def action_mask(self) -> np.ndarray:
        return self.mask_table[self.agent]

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._place(np.arange(self.num_envs))
        return self.observe(self.agent, self.goal), {"action_mask": self.action_mask()}

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        self.agent = self.move_table[self.agent, actions]
        self.steps += 1
        reached = self.agent == self.goal
        truncated = ~reached & (self.steps >= self.max_steps)
        reward = np.where(reached, 1.0, -self.config.step_penalty).astype(np.float32)
        info: dict[str, np.ndarray] = {"success": reached}
        done = reached | truncated
        if done.any():
            info["final_obs"] = self.observe(self.agent, self.goal)
            self._place(np.flatnonzero(done))
        info["action_mask"] = self.action_mask()
        return self.observe(self.agent, self.goal), reward, reached, truncated, info
