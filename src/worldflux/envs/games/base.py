"""Batched 64x64 arcade games: the shared machinery (stepping, auto-reset, drawing, datasets).

A game is a :class:`GameBatch` subclass that keeps the state of ``N`` independent worlds in NumPy
arrays and implements ``_reset_rows``, ``_advance`` and ``_draw``. Everything is vectorised over
the batch (no Python loop over worlds), so hundreds of thousands of frames take seconds to
minutes on a CPU.

Actions are the four arrow keys of the play page: ``0`` up, ``1`` down, ``2`` left, ``3`` right.
Frames are uint8 ``[N, 3, 64, 64]`` (channels first, as every worldflux image observation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from worldflux.core.errors import ConfigError

SIZE = 64
"""Side of the native frames (px)."""
NUM_ACTIONS = 4
"""Arrow keys: up, down, left, right."""
ACTION_NAMES = ("up", "down", "left", "right")

# 3x5 pixel font for the score (rows top to bottom, 3 bits per row, most significant left).
_DIGIT_ROWS = {
    0: (7, 5, 5, 5, 7), 1: (2, 6, 2, 2, 7), 2: (7, 1, 7, 4, 7), 3: (7, 1, 7, 1, 7),
    4: (5, 5, 7, 1, 1), 5: (7, 4, 7, 1, 7), 6: (7, 4, 7, 5, 7), 7: (7, 1, 1, 1, 1),
    8: (7, 5, 7, 5, 7), 9: (7, 5, 7, 1, 7),
}
DIGITS = np.array([[[(row >> (2 - c)) & 1 for c in range(3)] for row in _DIGIT_ROWS[d]]
                   for d in range(10)], dtype=bool)
"""``[10, 5, 3]`` glyphs of the digits 0-9."""

Policy = Callable[["GameBatch", np.random.Generator], np.ndarray]
"""``policy(game, rng) -> actions [N]`` int64: chooses the next action of every world."""


class GameBatch:
    """``N`` worlds of one game stepped together.

    Args:
        num_envs: worlds ``N``.
        seed: seeds the worlds' shared generator (``reset(seed=...)`` reseeds it).
        time_limit: steps after which an episode is truncated.

    ``reset() -> frames [N, 3, 64, 64]``; ``step(actions [N]) -> (frames, rewards [N],
    terminated [N], truncated [N], info)``. Finished worlds are *not* reset by ``step``: call
    :meth:`reset_rows` (or use :func:`collect`, which does it with the usual row layout).
    """

    name: ClassVar[str] = ""
    game_index: ClassVar[int] = 0
    """Index of the game in :data:`worldflux.envs.games.GAMES` (the model's game embedding)."""
    default_time_limit: ClassVar[int] = 1000

    def __init__(self, num_envs: int, seed: int | None = 0, time_limit: int | None = None) -> None:
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs: got {num_envs}, expected >= 1")
        limit = self.default_time_limit if time_limit is None else int(time_limit)
        if limit < 1:
            raise ConfigError(f"time_limit: got {time_limit}, expected >= 1")
        self.num_envs = int(num_envs)
        self.time_limit = limit
        self.rng = np.random.default_rng(seed)
        self.steps = np.zeros(self.num_envs, np.int64)
        self.score = np.zeros(self.num_envs, np.int64)
        self.lives = np.zeros(self.num_envs, np.int64)
        self._grid_y = np.arange(SIZE)[None, :, None]
        self._grid_x = np.arange(SIZE)[None, None, :]

    # -- public API -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start every world afresh; returns frames ``[N, 3, 64, 64]`` uint8."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.reset_rows(np.ones(self.num_envs, bool))
        return self.render()

    def reset_rows(self, rows: np.ndarray) -> None:
        """Start the worlds where ``rows [N]`` (bool) is set afresh (others keep going)."""
        rows = np.asarray(rows, bool)
        if rows.any():
            self.steps[rows] = 0
            self.score[rows] = 0
            self._reset_rows(rows)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                         dict[str, np.ndarray]]:
        """Advance every world by one step with ``actions [N]`` (ints in ``0..3``)."""
        actions = np.asarray(actions).reshape(-1).astype(np.int64)
        if actions.shape != (self.num_envs,):
            raise ConfigError(f"actions: got shape {actions.shape}, expected ({self.num_envs},)")
        if actions.size and (actions.min() < 0 or actions.max() >= NUM_ACTIONS):
            raise ConfigError(f"actions: got values in [{actions.min()}, {actions.max()}], "
                              f"expected 0..{NUM_ACTIONS - 1} (up, down, left, right)")
        rewards, terminated = self._advance(actions)
        self.steps += 1
        self.score += rewards.astype(np.int64)
        truncated = (self.steps >= self.time_limit) & ~terminated
        info = {"score": self.score.copy(), "lives": self.lives.copy()}
        return self.render(), rewards.astype(np.float32), terminated, truncated, info

    def render(self) -> np.ndarray:
        """Frames of the current states, ``[N, 3, 64, 64]`` uint8."""
        canvas = np.empty((self.num_envs, SIZE, SIZE, 3), np.uint8)
        self._draw(canvas)
        self._draw_score(canvas)
        return np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))

    def features(self) -> np.ndarray:
        """A small float32 state vector per world ``[N, F]`` (``obs_type="state"``)."""
        raise NotImplementedError

    def scripted_actions(self, rng: np.random.Generator, epsilon: float = 0.2) -> np.ndarray:
        """A competent-but-noisy policy: the game's heuristic, random with prob. ``epsilon``."""
        raise NotImplementedError

    # -- for subclasses ---------------------------------------------------------------------
    def _reset_rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``actions [N]``; returns ``rewards [N]`` and ``terminated [N]``."""
        raise NotImplementedError

    def _draw(self, canvas: np.ndarray) -> None:
        """Paint every world into ``canvas [N, 64, 64, 3]`` (the score is drawn afterwards)."""
        raise NotImplementedError

    # -- drawing helpers --------------------------------------------------------------------
    def box_mask(self, x: np.ndarray, y: np.ndarray, width: float, height: float) -> np.ndarray:
        """Pixels covered by axis-aligned boxes with top-left ``(x, y)``: ``x, y [N, M]`` ->
        ``[N, 64, 64]`` bool (union over the ``M`` boxes; NaN coordinates draw nothing)."""
        x = np.floor(np.asarray(x, np.float64))
        y = np.floor(np.asarray(y, np.float64))
        if x.ndim == 1:
            x, y = x[:, None], y[:, None]
        inside_x = (self._grid_x[:, None] >= x[..., None, None]) & \
                   (self._grid_x[:, None] < x[..., None, None] + width)
        inside_y = (self._grid_y[:, None] >= y[..., None, None]) & \
                   (self._grid_y[:, None] < y[..., None, None] + height)
        return (inside_x & inside_y).any(1)

    def _draw_score(self, canvas: np.ndarray) -> None:
        """Score (3 digits, right-aligned at the top right) and lives (dots at the top left)."""
        score = np.clip(self.score, 0, 999)
        for place in range(3):
            digit = (score // 10 ** (2 - place)) % 10
            glyph = DIGITS[digit]  # [N, 5, 3]
            x0 = SIZE - 13 + 4 * place
            region = canvas[:, 1:6, x0:x0 + 3]
            region[glyph] = 255
        for life in range(3):
            has = self.lives > life
            canvas[has, 2:4, 2 + 3 * life:4 + 3 * life] = (255, 90, 90)


def collect(game: GameBatch, steps: int, policy: Policy | str = "scripted", *, seed: int = 0,
            epsilon: float = 0.2) -> dict[str, np.ndarray]:
    """Play ``steps`` steps in every world and return sequences in worldflux's batch layout.

    Each world contributes one sequence of ``steps + 1`` rows (row 0 is the first reset). When an
    episode ends, its last row carries ``terminated``/``truncated`` and the next row is the
    reset frame with ``is_first`` (zero action, zero reward), as the replay buffer stores them.

    Args:
        game: the batch of worlds (reset here with ``seed``).
        steps: rows after the first.
        policy: ``"scripted"`` (the game's heuristic with ``epsilon`` random actions),
            ``"random"``, or a callable ``policy(game, rng) -> actions [N]``.
        seed: seeds the game and the policy.

    Returns:
        ``obs [N, T, 3, 64, 64]`` uint8, ``actions [N, T]`` int64 (index; -1 on first rows),
        ``rewards [N, T]`` float32, ``terminated``/``truncated``/``is_first [N, T]`` bool, and
        ``game [N]`` int64, with ``T = steps + 1``.
    """
    rng = np.random.default_rng(seed + 1)
    if isinstance(policy, str):
        if policy not in ("scripted", "random"):
            raise ConfigError(f"policy: got {policy!r}, expected 'scripted', 'random' or a callable")
        kind = policy

        def policy(g: GameBatch, r: np.random.Generator) -> np.ndarray:
            if kind == "random":
                return r.integers(0, NUM_ACTIONS, g.num_envs)
            return g.scripted_actions(r, epsilon)

    N, T = game.num_envs, int(steps) + 1
    obs = np.empty((N, T, 3, SIZE, SIZE), np.uint8)
    actions = np.full((N, T), -1, np.int64)
    rewards = np.zeros((N, T), np.float32)
    terminated = np.zeros((N, T), bool)
    truncated = np.zeros((N, T), bool)
    is_first = np.zeros((N, T), bool)
    obs[:, 0] = game.reset(seed)
    is_first[:, 0] = True
    done = np.zeros(N, bool)
    for t in range(1, T):
        chosen = np.asarray(policy(game, rng), np.int64)
        frames, reward, term, trunc, _ = game.step(chosen)
        # Worlds that ended last step start over (their step above is discarded): their row is
        # the reset frame.
        if done.any():
            game.reset_rows(done)
            frames = game.render()
            chosen = np.where(done, -1, chosen)
            reward = np.where(done, 0.0, reward)
            term, trunc = term & ~done, trunc & ~done
        obs[:, t], actions[:, t], rewards[:, t] = frames, chosen, reward
        terminated[:, t], truncated[:, t], is_first[:, t] = term, trunc, done
        done = term | trunc
    return {"obs": obs, "actions": actions, "rewards": rewards, "terminated": terminated,
            "truncated": truncated, "is_first": is_first,
            "game": np.full(N, game.game_index, np.int64)}
