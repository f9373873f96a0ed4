"""Native batched puzzles and board games: rules, masks, wins, auto-reset."""

from __future__ import annotations

import numpy as np
import pytest

from worldflux.core.errors import ConfigError
from worldflux.envs.puzzles import (
    BoardGameEnv,
    ConnectFour,
    GridWorld,
    SlidingPuzzle,
    SlidingPuzzleConfig,
    SlidingPuzzleRules,
    TicTacToe,
    random_legal,
)

OPPOSITE = np.array([2, 3, 0, 1])


def _solvable(tiles: np.ndarray, size: int) -> bool:
    """Classic invariant: permutation parity of the tiles (blank included) equals the parity of
    the blank's Manhattan distance from its home cell."""
    perm = list(tiles)
    swaps, seen = 0, [False] * len(perm)
    for start in range(len(perm)):
        length, j = 0, start
        while not seen[j]:
            seen[j] = True
            j = perm[j]
            length += 1
        swaps += max(length - 1, 0)
    blank = int(np.argmin(tiles))
    return swaps % 2 == (blank % size + blank // size) % 2


@pytest.mark.parametrize("size", [3, 4])
def test_sliding_moves_are_invertible_and_masks_match_the_board(size):
    rules = SlidingPuzzleRules(size)
    rng = np.random.default_rng(0)
    tiles = rules.scramble(512, 20, rng)
    mask = rules.legal_mask(tiles)
    blank = rules.blank(tiles)
    x, y = blank % size, blank // size
    assert np.array_equal(mask, np.stack([x > 0, y > 0, x < size - 1, y < size - 1], 1))
    actions = random_legal(mask, rng)
    moved = rules.apply(tiles, actions)
    assert not np.array_equal(moved, tiles)
    assert np.array_equal(rules.apply(moved, OPPOSITE[actions]), tiles)
    # An illegal move is a no-op (TwisteRL's convention).
    illegal = np.flatnonzero(~mask.all(1))
    bad = (~mask[illegal]).argmax(1)
    assert np.array_equal(rules.apply(tiles[illegal], bad), tiles[illegal])


def test_sliding_scrambles_are_solvable_permutations_and_never_solved():
    rules = SlidingPuzzleRules(3)
    tiles = rules.scramble(300, 32, np.random.default_rng(1))
    assert not rules.solved(tiles).any()
    for row in tiles:
        assert sorted(row.tolist()) == list(range(9))
        assert _solvable(row, 3)
    assert rules.solved(rules.scramble(5, 0, np.random.default_rng(0))).all()
    obs = rules.observe(tiles)
    assert obs.shape == (300, 81) and np.array_equal(obs.sum(1), np.full(300, 9.0))


def test_sliding_env_rewards_truncation_and_auto_reset():
    env = SlidingPuzzle(64, SlidingPuzzleConfig(depth=1), seed=0)
    obs, info = env.reset()
    assert obs.shape == (64, 81) and info["action_mask"].shape == (64, 4)
    # Most depth-1 boards are one move from solved (a move off the board is a no-op, and such
    # boards get scrambled further): undo that move.
    tiles = env.tiles.copy()
    one_move = np.stack([env.rules.solved(env.rules.apply(tiles, np.full(64, a)))
                         for a in range(4)], 1)
    near = one_move.any(1)
    assert near.sum() > 16
    obs, reward, terminated, truncated, info = env.step(one_move.argmax(1))
    assert np.array_equal(terminated, near) and not truncated[near].any()
    assert np.all(reward[near] == 1.0) and np.all(reward[~near] < 0)
    assert np.array_equal(info["success"], near) and "final_obs" in info
    assert not env.rules.solved(env.tiles).any()  # auto-reset to fresh scrambles
    # Moving away twice runs out the budget (2 x depth) without solving.
    env.reset(seed=3)
    away = np.zeros(64, dtype=bool)
    for _ in range(2):
        mask = env.action_mask()
        _, reward, terminated, truncated, info = env.step(random_legal(mask, env.rng))
        away |= terminated
    assert np.all(truncated | away)
    with pytest.raises(ConfigError):
        SlidingPuzzle(2, SlidingPuzzleConfig(depth=0))


def test_tictactoe_lines_draws_and_canonical_flip():
    rules = TicTacToe()
    assert len(rules.windows) == 8
    boards = rules.initial_states(1)
    # X: 0, 4, 8 (diagonal); O: 1, 2.
    for move in (0, 1, 4, 2):
        boards, reward, done = rules.next_states(boards, np.array([move]))
        assert not done[0] and reward[0] == 0
    assert boards[0, 0] == 1 and boards[0, 1] == -1  # X to move sees its stones as +1
    boards, reward, done = rules.next_states(boards, np.array([8]))
    assert done[0] and reward[0] == 1.0
    # A full board without a line is a draw.
    draw = np.array([[1, -1, 1, 1, -1, -1, -1, 1, 0]], dtype=np.int8)
    _, reward, done = rules.next_states(draw, np.array([8]))
    assert done[0] and reward[0] == 0.0


@pytest.mark.parametrize("cells", [
    [0, 1, 2, 3],            # horizontal, bottom row
    [3, 10, 17, 24],         # vertical
    [0, 8, 16, 24],          # diagonal up-right
    [6, 12, 18, 24],         # diagonal up-left
])
def test_connect_four_detects_every_line_direction(cells):
    rules = ConnectFour()
    assert len(rules.windows) == 69
    board = np.zeros((1, 42), dtype=np.int8)
    board[0, cells] = 1
    assert rules.wins(board)[0]
    board[0, cells[-1]] = -1
    assert not rules.wins(board)[0]


def test_connect_four_gravity_and_full_columns():
    rules = ConnectFour()
    boards = rules.initial_states(1)
    for _ in range(6):
        boards, _, _ = rules.next_states(boards, np.array([3]))
    assert (boards[0].reshape(6, 7)[:, 3] != 0).all()
    assert not rules.legal_mask(boards)[0, 3] and rules.legal_mask(boards)[0].sum() == 6
    # Vertical four by the first player: columns 0 (x4) against column 1 (x3).
    boards = rules.initial_states(1)
    for move in (0, 1, 0, 1, 0, 1):
        boards, _, done = rules.next_states(boards, np.array([move]))
        assert not done[0]
    _, reward, done = rules.next_states(boards, np.array([0]))
    assert done[0] and reward[0] == 1.0


def test_board_game_env_against_random_opponent():
    env = BoardGameEnv(TicTacToe(), 128, seed=0)
    obs, info = env.reset()
    assert obs.shape == (128, 2, 3, 3)
    outcomes = []
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(random_legal(info["action_mask"], env.rng))
        outcomes.append(reward[terminated])
    outcomes = np.concatenate(outcomes)
    assert set(np.unique(outcomes)) <= {-1.0, 0.0, 1.0} and len(outcomes) > 128
    env.reset(seed=1)
    _, _, _, _, info = env.step(random_legal(env.action_mask(), env.rng))  # no game ends yet
    with pytest.raises(ConfigError, match="illegal"):
        env.step((~info["action_mask"]).argmax(1))  # an occupied cell in every game


def test_grid_world_reaches_goal_along_a_shortest_path():
    env = GridWorld(32, seed=0)
    obs, info = env.reset()
    assert obs.shape == (32, 2, 5, 5)
    size = env.config.size
    done = np.zeros(32, dtype=bool)
    for _ in range(2 * size):
        ax, ay, gx, gy = env.agent % size, env.agent // size, env.goal % size, env.goal // size
        action = np.where(ax > gx, 0, np.where(ax < gx, 2, np.where(ay > gy, 1, 3)))
        _, reward, terminated, _, info = env.step(action)
        assert np.all(reward[terminated & ~done] == 1.0)
        done |= terminated
    assert done.all()
