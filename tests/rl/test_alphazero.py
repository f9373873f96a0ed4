"""Batched MCTS and AlphaZero: forced wins, single-agent search, minimax helper, learning."""

from __future__ import annotations

import numpy as np

from worldflux.envs.puzzles import ConnectFour, SlidingPuzzleRules, TicTacToe
from worldflux.rl.alphazero import (
    AlphaZero,
    AlphaZeroConfig,
    BatchedMCTS,
    MCTSConfig,
    minimax_moves,
    minimax_values,
    visit_policy,
)
from worldflux.rl.policy import PolicyConfig


def uniform(states, legal):
    return legal / legal.sum(1, keepdims=True), np.zeros(len(states), dtype=np.float32)


def test_mcts_finds_the_forced_win_and_the_only_block_in_tictactoe():
    rules = TicTacToe()
    # Player to move (+1) has 0 and 1: playing 2 wins. Opponent threatens 3-4-5 too.
    win = np.array([[1, 1, 0, -1, -1, 0, 0, 0, 0]], dtype=np.int8)
    # Player to move must block the opponent's 0-4-8 diagonal at 8.
    block = np.array([[-1, 1, 0, 0, -1, 0, 1, 0, 0]], dtype=np.int8)
    mcts = BatchedMCTS(rules, uniform, MCTSConfig(simulations=200))
    visits, value = mcts.search(np.concatenate([win, block]), np.random.default_rng(0))
    assert visits[0].argmax() == 2 and value[0] > 0.5
    assert visits[1].argmax() == 8
    assert visits.sum(1).tolist() == [200, 200]
    assert np.all(visits[:, [0, 1, 3, 4]][0] == 0)  # occupied cells are never visited


def test_dirichlet_noise_spreads_root_visits_and_temperature_zero_is_argmax():
    rules = ConnectFour()
    states = rules.initial_states(4)
    mcts = BatchedMCTS(rules, uniform, MCTSConfig(simulations=30, dirichlet_alpha=0.3))
    plain, _ = mcts.search(states, np.random.default_rng(0))
    noisy, _ = mcts.search(states, np.random.default_rng(0), noise=True)
    assert np.all(plain == plain[0])           # deterministic without noise
    assert not np.all(noisy == noisy[0])       # the noise differs per tree
    probs = visit_policy(np.array([[1.0, 5.0, 2.0]]), 0.0)
    assert probs.tolist() == [[0.0, 1.0, 0.0]]


def test_single_agent_search_solves_shallow_puzzles_without_a_network():
    rules = SlidingPuzzleRules(3)
    rng = np.random.default_rng(0)
    boards = rules.scramble(32, 3, rng)
    mcts = BatchedMCTS(rules, uniform, MCTSConfig(simulations=100, discount=0.9))
    solved = np.zeros(32, dtype=bool)
    for _ in range(6):
        visits, _ = mcts.search(boards, rng)
        boards, _, done = rules.next_states(boards, visits.argmax(1))
        solved |= done
    assert solved.mean() > 0.9


def test_minimax_knows_tictactoe_is_a_draw_and_never_loses():
    rules = TicTacToe()
    table = minimax_values(rules)
    assert table[rules.initial_states(1)[0].tobytes()] == 0
    assert len(table) > 4000  # every non-terminal reachable position
    rng = np.random.default_rng(0)
    boards = rules.initial_states(20)
    alive = np.ones(20, dtype=bool)
    for move in range(9):  # minimax (first) against random (second)
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        legal = rules.legal_mask(boards[idx])
        if move % 2 == 0:
            actions = minimax_moves(rules, boards[idx], table, rng)
        else:
            actions = (rng.random(legal.shape) * legal).argmax(1)
        boards[idx], reward, done = rules.next_states(boards[idx], actions)
        if move % 2 == 1:
            assert not reward[done].any()  # random never wins
        alive[idx[done]] = False


def test_alphazero_self_play_learns_tictactoe_targets():
    config = AlphaZeroConfig(games_per_iteration=64, max_moves=9, train_steps=30,
                             mcts=MCTSConfig(simulations=16, dirichlet_alpha=1.0),
                             policy=PolicyConfig(hidden=(64, 64), activation="relu",
                                                 shared=True))
    az = AlphaZero(TicTacToe(), config, seed=0)
    history = az.learn(4)
    assert history[-1]["loss/policy"] < history[0]["loss/policy"]
    assert az.env_steps > 4 * 64 * 5
    state = az.state_dict()
    az.load_state_dict(state)
    # A trained agent takes an immediate win.
    win = np.array([[1, 1, 0, -1, -1, 0, 0, 0, 0]], dtype=np.int8)
    assert az.choose(win, simulations=64)[0] == 2


def test_alphazero_single_agent_puzzle_episodes_and_value_targets():
    rules = SlidingPuzzleRules(3)

    def start(n, rng):
        return rules.scramble(n, 2, rng)

    config = AlphaZeroConfig(games_per_iteration=32, max_moves=6, train_steps=5,
                             mcts=MCTSConfig(simulations=24, discount=0.9),
                             policy=PolicyConfig(hidden=(32,), activation="relu", shared=True))
    az = AlphaZero(rules, config, start_states=start, seed=0)
    stats = az.play_episodes()
    assert stats["episode/success"] > 0.5  # depth-2 scrambles, untrained network + search
    values = np.concatenate(az._buffer["value"])
    assert values.max() == 1.0 and np.all(values <= 1.0) and np.all(values >= 0.0)
    assert np.any(np.isclose(values, 0.9))  # two moves from solved: discount^1
    az.train()
