"""``worldflux/Breakout64-v0``: a paddle-and-ball game drawn natively at 64x64.

A ball bounces between walls, a paddle (left/right arrows; up/down do nothing) and 6 rows of 8
bricks. A brick hit is +1. Missing the ball costs a life (3 per episode) and serves a new ball
from the middle; the episode ends with the last life or the last brick. The ball's velocity is
not visible in one frame, so predicting it needs frame history.
"""

from __future__ import annotations

import numpy as np

from worldflux.envs.games.base import NUM_ACTIONS, SIZE, GameBatch

BRICK_ROWS, BRICK_COLS = 6, 8
BRICK_TOP, BRICK_HEIGHT, BRICK_WIDTH = 12, 3, 8
PADDLE_Y, PADDLE_WIDTH, PADDLE_HEIGHT, PADDLE_SPEED = 58, 10, 2, 3.0
BALL = 2
TOP = 8  # the top wall's row; above it sit the score and the lives
LIVES = 3
BACKGROUND = (12, 14, 40)
WALL = (120, 120, 130)
PADDLE = (210, 210, 255)
ROW_COLORS = np.array([(230, 60, 60), (240, 140, 50), (230, 210, 60), (80, 200, 90),
                       (70, 150, 240), (170, 90, 230)], np.uint8)


class BreakoutBatch(GameBatch):
    """``N`` Breakout worlds; see the module docstring for the rules."""

    name = "Breakout64"
    game_index = 0
    default_time_limit = 1000

    def __init__(self, num_envs: int, seed: int | None = 0, time_limit: int | None = None) -> None:
        super().__init__(num_envs, seed, time_limit)
        N = self.num_envs
        self.paddle = np.zeros(N)
        self.ball = np.zeros((N, 2))
        self.velocity = np.zeros((N, 2))
        self.bricks = np.ones((N, BRICK_ROWS, BRICK_COLS), bool)
        self._rows_y = np.arange(BRICK_ROWS * BRICK_HEIGHT) // BRICK_HEIGHT
        self._cols_x = np.arange(SIZE) // BRICK_WIDTH
        self._gaps = (np.arange(SIZE) % BRICK_WIDTH == BRICK_WIDTH - 1)[None, :] | \
                     (np.arange(BRICK_ROWS * BRICK_HEIGHT) % BRICK_HEIGHT == BRICK_HEIGHT - 1)[:, None]

    def _reset_rows(self, rows: np.ndarray) -> None:
        n = int(rows.sum())
        self.paddle[rows] = self.rng.uniform(10, SIZE - 10 - PADDLE_WIDTH, n)
        self.bricks[rows] = True
        self.lives[rows] = LIVES
        self._serve(rows)

    def _serve(self, rows: np.ndarray) -> None:
        n = int(rows.sum())
        self.ball[rows, 0] = self.rng.uniform(16, SIZE - 16, n)
        self.ball[rows, 1] = 34.0
        self.velocity[rows, 0] = self.rng.choice([-1.5, -1.0, -0.5, 0.5, 1.0, 1.5], n)
        self.velocity[rows, 1] = 1.5

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        move = np.where(actions == 2, -PADDLE_SPEED, np.where(actions == 3, PADDLE_SPEED, 0.0))
        self.paddle = np.clip(self.paddle + move, 1, SIZE - 1 - PADDLE_WIDTH)
        ball, vel = self.ball, self.velocity
        ball += vel
        # Side and top walls.
        left, right = ball[:, 0] < 1, ball[:, 0] > SIZE - 1 - BALL
        ball[:, 0] = np.clip(ball[:, 0], 1, SIZE - 1 - BALL)
        vel[left | right, 0] *= -1
        top = ball[:, 1] < TOP + 1
        ball[top, 1] = TOP + 1
        vel[top, 1] = np.abs(vel[top, 1])
        # Bricks: the cell under the ball's centre.
        cx, cy = ball[:, 0] + BALL / 2, ball[:, 1] + BALL / 2
        row = np.floor((cy - BRICK_TOP) / BRICK_HEIGHT).astype(np.int64)
        col = np.clip(np.floor(cx / BRICK_WIDTH).astype(np.int64), 0, BRICK_COLS - 1)
        in_rows = (row >= 0) & (row < BRICK_ROWS)
        idx = np.arange(self.num_envs)
        hit = in_rows & self.bricks[idx, np.clip(row, 0, BRICK_ROWS - 1), col]
        self.bricks[idx[hit], row[hit], col[hit]] = False
        vel[hit, 1] *= -1
        rewards = hit.astype(np.float32)
        # Paddle: the bounce angle depends on where the ball meets it.
        bottom = ball[:, 1] + BALL
        over = (ball[:, 0] + BALL > self.paddle) & (ball[:, 0] < self.paddle + PADDLE_WIDTH)
        bounce = (vel[:, 1] > 0) & (bottom >= PADDLE_Y) & (ball[:, 1] < PADDLE_Y + PADDLE_HEIGHT) \
            & over
        offset = (cx - (self.paddle + PADDLE_WIDTH / 2)) / (PADDLE_WIDTH / 2)
        vel[bounce, 1] = -np.abs(vel[bounce, 1])
        vel[bounce, 0] = np.clip(np.round(offset[bounce] * 3) / 2, -1.5, 1.5)
        vel[bounce & (vel[:, 0] == 0), 0] = 0.5
        ball[bounce, 1] = PADDLE_Y - BALL
        # Missed balls cost a life.
        missed = ball[:, 1] > SIZE - BALL
        self.lives[missed] -= 1
        if missed.any():
            self._serve(missed)
        terminated = (self.lives <= 0) | ~self.bricks.any((1, 2))
        return rewards, terminated

    def _draw(self, canvas: np.ndarray) -> None:
        canvas[:] = BACKGROUND
        canvas[:, TOP, :] = WALL
        canvas[:, TOP:, 0] = WALL
        canvas[:, TOP:, SIZE - 1] = WALL
        # Bricks: upsample the alive grid [N, 6, 8] to pixels [N, 18, 64].
        alive = self.bricks[:, self._rows_y][:, :, self._cols_x] & ~self._gaps
        colors = ROW_COLORS[self._rows_y][None, :, None, :]
        region = canvas[:, BRICK_TOP:BRICK_TOP + BRICK_ROWS * BRICK_HEIGHT]
        np.copyto(region, np.broadcast_to(colors, region.shape), where=alive[..., None])
        paddle = self.box_mask(self.paddle, np.full(self.num_envs, PADDLE_Y), PADDLE_WIDTH,
                               PADDLE_HEIGHT)
        canvas[paddle] = PADDLE
        ball = self.box_mask(self.ball[:, 0], self.ball[:, 1], BALL, BALL)
        canvas[ball] = 255

    def features(self) -> np.ndarray:
        return np.stack([self.paddle / SIZE, self.ball[:, 0] / SIZE, self.ball[:, 1] / SIZE,
                         self.velocity[:, 0] / 2, self.velocity[:, 1] / 2, self.lives / LIVES,
                         self.bricks.mean((1, 2))], 1).astype(np.float32)

    def scripted_actions(self, rng: np.random.Generator, epsilon: float = 0.2) -> np.ndarray:
        """Follow the ball's x with the paddle's centre; random with probability ``epsilon``."""
        target = self.ball[:, 0] + BALL / 2 - PADDLE_WIDTH / 2
        gap = target - self.paddle
        actions = np.where(gap < -2, 2, np.where(gap > 2, 3, rng.integers(0, 2, self.num_envs)))
        explore = rng.random(self.num_envs) < epsilon
        return np.where(explore, rng.integers(0, NUM_ACTIONS, self.num_envs), actions)
