"""``worldflux/Collect64-v0``: a top-down collect-and-avoid game drawn natively at 64x64.

The player (arrows move it 2 px) picks up coins (+1 each; a new coin appears elsewhere) while
two enemies cross the field in straight lines, bouncing off the walls. Touching an enemy is -1
and a life (3 per episode); the episode ends with the last life. Two bushes hide coins and
enemies that pass under them (the player stays visible), so where a hidden enemy is depends on
the frames before it went under.
"""

from __future__ import annotations

import numpy as np

from worldflux.envs.games.base import NUM_ACTIONS, SIZE, GameBatch

TOP = 8
PLAYER, PLAYER_SPEED = 4, 2.0
COIN, NUM_COINS = 3, 3
ENEMY, NUM_ENEMIES = 4, 2
BUSH, NUM_BUSHES = 12, 2
LIVES = 3
GROUND = np.array([(196, 180, 130), (186, 170, 122)], np.uint8)
BAR = (40, 40, 50)
PLAYER_COLOR = (40, 200, 230)
COIN_COLOR = (250, 220, 40)
ENEMY_COLOR = (220, 40, 50)
BUSH_COLORS = np.array([(40, 110, 45), (30, 90, 35)], np.uint8)
# Unit moves of the four arrows: up, down, left, right (x, y).
MOVES = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)], np.float64)


class CollectBatch(GameBatch):
    """``N`` Collect worlds; see the module docstring for the rules."""

    name = "Collect64"
    game_index = 1
    default_time_limit = 500

    def __init__(self, num_envs: int, seed: int | None = 0, time_limit: int | None = None) -> None:
        super().__init__(num_envs, seed, time_limit)
        N = self.num_envs
        self.player = np.zeros((N, 2))
        self.coins = np.zeros((N, NUM_COINS, 2))
        self.enemies = np.zeros((N, NUM_ENEMIES, 2))
        self.enemy_velocity = np.zeros((N, NUM_ENEMIES, 2))
        self.bushes = np.zeros((N, NUM_BUSHES, 2))
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        self._ground = GROUND[((yy // 4) + (xx // 4)) % 2]
        self._leaf = ((yy * 7 + xx * 3) % 5 == 0)

    def _random_positions(self, n: int, count: int, size: int) -> np.ndarray:
        x = self.rng.uniform(1, SIZE - 1 - size, (n, count))
        y = self.rng.uniform(TOP + 1, SIZE - 1 - size, (n, count))
        return np.stack([x, y], -1)

    def _reset_rows(self, rows: np.ndarray) -> None:
        n = int(rows.sum())
        self.player[rows] = (SIZE / 2 - PLAYER / 2, (TOP + SIZE) / 2 - PLAYER / 2)
        self.coins[rows] = self._random_positions(n, NUM_COINS, COIN)
        self.bushes[rows] = self._random_positions(n, NUM_BUSHES, BUSH)
        enemies = self._random_positions(n, NUM_ENEMIES, ENEMY)
        enemies[..., 1] = self.rng.uniform(TOP + 1, 20, (n, NUM_ENEMIES))  # away from the player
        self.enemies[rows] = enemies
        speed = self.rng.choice([-1.5, -1.0, 1.0, 1.5], (n, NUM_ENEMIES, 2))
        self.enemy_velocity[rows] = speed
        self.lives[rows] = LIVES

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([1.0, TOP + 1.0])
        self.player = np.clip(self.player + PLAYER_SPEED * MOVES[actions], low,
                              SIZE - 1 - PLAYER)
        # Enemies bounce off the walls.
        self.enemies += self.enemy_velocity
        high = SIZE - 1 - ENEMY
        for axis, lo in ((0, 1.0), (1, TOP + 1.0)):
            out = (self.enemies[..., axis] < lo) | (self.enemies[..., axis] > high)
            self.enemy_velocity[..., axis][out] *= -1
            self.enemies[..., axis] = np.clip(self.enemies[..., axis], lo, high)
        # Coins touched by the player are collected and reappear elsewhere.
        p = self.player[:, None]
        got = np.all((self.coins + COIN > p) & (self.coins < p + PLAYER), -1)  # [N, C]
        if got.any():
            fresh = self._random_positions(self.num_envs, NUM_COINS, COIN)
            self.coins[got] = fresh[got]
        hit = np.all((self.enemies + ENEMY > p) & (self.enemies < p + PLAYER), -1).any(1)
        self.lives[hit] -= 1
        self.player[hit] = (SIZE / 2 - PLAYER / 2, (TOP + SIZE) / 2 - PLAYER / 2)
        rewards = got.sum(1).astype(np.float32) - hit.astype(np.float32)
        return rewards, self.lives <= 0

    def _draw(self, canvas: np.ndarray) -> None:
        canvas[:] = self._ground
        canvas[:, :TOP] = BAR
        canvas[self.box_mask(self.coins[..., 0], self.coins[..., 1], COIN, COIN)] = COIN_COLOR
        canvas[self.box_mask(self.enemies[..., 0], self.enemies[..., 1], ENEMY, ENEMY)] = \
            ENEMY_COLOR
        bush = self.box_mask(self.bushes[..., 0], self.bushes[..., 1], BUSH, BUSH)
        canvas[bush] = BUSH_COLORS[0]
        canvas[bush & self._leaf[None]] = BUSH_COLORS[1]
        canvas[self.box_mask(self.player[:, 0], self.player[:, 1], PLAYER, PLAYER)] = \
            PLAYER_COLOR

    def features(self) -> np.ndarray:
        parts = [self.player / SIZE, self.coins.reshape(self.num_envs, -1) / SIZE,
                 self.enemies.reshape(self.num_envs, -1) / SIZE,
                 self.enemy_velocity.reshape(self.num_envs, -1) / 2,
                 (self.lives / LIVES)[:, None]]
        return np.concatenate(parts, 1).astype(np.float32)

    def scripted_actions(self, rng: np.random.Generator, epsilon: float = 0.2) -> np.ndarray:
        """Head for the nearest coin, stepping away from an enemy closer than 10 px; random
        with probability ``epsilon``."""
        centre = self.player + PLAYER / 2
        coins = self.coins + COIN / 2
        nearest = np.argmin(np.abs(coins - centre[:, None]).sum(-1), 1)
        goal = coins[np.arange(self.num_envs), nearest] - centre
        enemies = self.enemies + ENEMY / 2 - centre[:, None]
        closest = np.argmin(np.abs(enemies).sum(-1), 1)
        threat = enemies[np.arange(self.num_envs), closest]
        danger = np.abs(threat).sum(-1) < 10
        goal = np.where(danger[:, None], -threat, goal)
        horizontal = np.abs(goal[:, 0]) >= np.abs(goal[:, 1])
        actions = np.where(horizontal, np.where(goal[:, 0] < 0, 2, 3),
                           np.where(goal[:, 1] < 0, 0, 1))
        explore = rng.random(self.num_envs) < epsilon
        return np.where(explore, rng.integers(0, NUM_ACTIONS, self.num_envs), actions)
