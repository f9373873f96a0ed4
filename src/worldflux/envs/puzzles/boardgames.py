"""Two-player board games (tic-tac-toe, connect-four), N games at once in NumPy.

A position is a *canonical* board ``[N, H*W]`` (int8) seen by the player to move: ``+1`` their
stones, ``-1`` the opponent's, ``0`` empty. A move puts a ``+1`` stone, checks whether it completes
a line, then flips the sign so the board is seen by the next player. Search and the env share
the rules (:class:`BoardGameRules`); :class:`BoardGameEnv` is a batched env against a fixed
opponent (random by default) for single-agent learners such as PPO.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from worldflux.core.errors import ConfigError

__all__ = ["BoardGameEnv", "BoardGameRules", "ConnectFour", "TicTacToe", "line_windows"]


def line_windows(height: int, width: int, length: int) -> np.ndarray:
    """Cell indices of every straight line of ``length`` cells ``[L, length]`` (row-major,
    horizontal, vertical and both diagonals)."""
    lines = []
    for row in range(height):
        for col in range(width):
            for d_row, d_col in ((0, 1), (1, 0), (1, 1), (1, -1)):
                end_row, end_col = row + d_row * (length - 1), col + d_col * (length - 1)
                if 0 <= end_row < height and 0 <= end_col < width:
                    lines.append([(row + d_row * k) * width + col + d_col * k
                                  for k in range(length)])
    return np.asarray(lines, dtype=np.int64)


class BoardGameRules:
    """Rules of a two-player line game on an ``height x width`` board (pure batch functions)."""

    two_player = True

    def __init__(self, height: int, width: int, line: int, gravity: bool) -> None:
        self.height, self.width, self.line, self.gravity = height, width, line, gravity
        self.cells = height * width
        self.num_actions = width if gravity else self.cells
        self.windows = line_windows(height, width, line)

    @property
    def state_size(self) -> int:
        return self.cells

    def initial_states(self, num: int) -> np.ndarray:
        """``num`` empty boards ``[num, H*W]`` int8."""
        return np.zeros((num, self.cells), dtype=np.int8)

    def legal_mask(self, boards: np.ndarray) -> np.ndarray:
        """``[N, A]`` bool: empty cells, or (gravity) columns with room."""
        if self.gravity:  # the top row is the last one (row 0 is the bottom)
            return boards[:, (self.height - 1) * self.width:] == 0
        return boards == 0

    def cell_of(self, boards: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Board cell a move fills ``[N]``."""
        if not self.gravity:
            return actions
        filled = (boards.reshape(-1, self.height, self.width) != 0).sum(axis=1)
        return filled[np.arange(len(actions)), actions] * self.width + actions

    def wins(self, boards: np.ndarray, player: int = 1) -> np.ndarray:
        """``[N]`` bool: ``player`` (+1 or -1 in canonical terms) holds a full line."""
        return (boards[:, self.windows] == player).all(axis=2).any(axis=1)

    def next_states(self, boards: np.ndarray, actions: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Play ``actions [N]`` (assumed legal): ``(next boards seen by the next player,
        reward for the player who moved [N] (+1 win, 0 otherwise), done [N])``."""
        actions = np.asarray(actions, dtype=np.int64)
        cells = self.cell_of(boards, actions)
        nxt = boards.copy()
        nxt[np.arange(len(actions)), cells] = 1
        won = self.wins(nxt, 1)
        done = won | (nxt != 0).all(axis=1)
        return -nxt, won.astype(np.float32), done

    def observe(self, boards: np.ndarray) -> np.ndarray:
        """Planes ``[N, 2, H, W]`` float32: stones of the player to move, then the opponent's."""
        grid = boards.reshape(-1, 1, self.height, self.width)
        return np.concatenate([grid == 1, grid == -1], axis=1).astype(np.float32)


class TicTacToe(BoardGameRules):
    """3x3, three in a row."""

    def __init__(self) -> None:
        super().__init__(3, 3, 3, gravity=False)


class ConnectFour(BoardGameRules):
    """6 rows x 7 columns with gravity, four in a row; an action is a column."""

    def __init__(self) -> None:
        super().__init__(6, 7, 4, gravity=True)


class BoardGameEnv:
    """N games against a fixed opponent, as a batched env (the learner moves first or second
    at random per game).

    Reward is +1 for a win, -1 for a loss, 0 for a draw, given on the final step.
    ``info["action_mask"] [N, A]``; ``info["final_obs"]`` on rows that ended.

    Args:
        rules: the game (:class:`TicTacToe` or :class:`ConnectFour`).
        num_envs: games played at once.
        opponent: ``"random"`` (uniform over legal moves); or a callable
            ``(boards [M, H*W], legal [M, A], rng) -> actions [M]``.
    """

    def __init__(self, rules: BoardGameRules, num_envs: int, *, opponent="random",
                 seed: int | None = None) -> None:
        if opponent != "random" and not callable(opponent):
            raise ConfigError(f"opponent: got {opponent!r}, expected 'random' or a callable")
        self.rules = rules
        self.num_envs = int(num_envs)
        self.opponent = opponent
        self.rng = np.random.default_rng(seed)
        self.observation_space = spaces.Box(0.0, 1.0, (2, rules.height, rules.width), np.float32)
        self.action_space = spaces.Discrete(rules.num_actions)
        self.boards = rules.initial_states(self.num_envs)

    def _opponent_moves(self, boards: np.ndarray) -> np.ndarray:
        legal = self.rules.legal_mask(boards)
        if self.opponent == "random":
            return random_legal(legal, self.rng)
        return np.asarray(self.opponent(boards, legal, self.rng), dtype=np.int64)

    def _new_games(self, rows: np.ndarray) -> None:
        boards = self.rules.initial_states(len(rows))
        second = self.rng.random(len(rows)) < 0.5
        if second.any():  # the opponent opens these games
            idx = np.flatnonzero(second)
            boards[idx], _, _ = self.rules.next_states(boards[idx], self._opponent_moves(boards[idx]))
        self.boards[rows] = boards

    def action_mask(self) -> np.ndarray:
        return self.rules.legal_mask(self.boards)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._new_games(np.arange(self.num_envs))
        return self.rules.observe(self.boards), {"action_mask": self.action_mask()}

    def step(self, actions: np.ndarray):
        """Learner moves ``actions [N]``, then the opponent answers where the game goes on."""
        rules = self.rules
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        legal = rules.legal_mask(self.boards)
        illegal = ~legal[np.arange(self.num_envs), actions]
        if illegal.any():
            raise ConfigError(f"actions: illegal move in games {np.flatnonzero(illegal)[:5]}; "
                              "expected moves allowed by info['action_mask']")
        boards, won, done = rules.next_states(self.boards, actions)
        reward = won.copy()
        going = np.flatnonzero(~done)
        if len(going):
            after, opp_won, opp_done = rules.next_states(boards[going], self._opponent_moves(boards[going]))
            boards[going] = after
            reward[going] -= opp_won
            done[going] = opp_done
        self.boards = boards
        info: dict[str, np.ndarray] = {"success": reward > 0}
        if done.any():
            finished = np.flatnonzero(done)
            final_obs = np.zeros((self.num_envs, *self.observation_space.shape), dtype=np.float32)
            final_obs[finished] = rules.observe(self.boards[finished])
            info["final_obs"] = final_obs
            self._new_games(finished)
        info["action_mask"] = self.action_mask()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return rules.observe(self.boards), reward.astype(np.float32), done, truncated, info


def random_legal(legal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random legal action per row of ``legal [N, A]`` -> ``[N]``."""
    scores = rng.random(legal.shape) * legal - (~legal)
    return scores.argmax(axis=1)
