"""AlphaZero (batched MCTS + policy-value network, self-play) on the issue's three tasks.

* tic-tac-toe: after training, 100 games as the first player and 100 as the second against a
  perfect minimax player (random among its optimal moves, so the games differ); target: no loss.
* connect-four: 100 games (50 first, 50 second) against a uniformly random player; target:
  >= 95% wins.
* 3x3 sliding puzzle: greedy searched episodes from fresh depth-32 scrambles (move budget 64);
  target: >= 95% solved.

The evaluation uses the trained network inside MCTS without root noise and picks the most
visited move. Training wall time is measured from the start of each task.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import write_result


def play(az, rules, opponent, games: int, az_first: np.ndarray, simulations: int,
         rng: np.random.Generator) -> np.ndarray:
    """Scores from AlphaZero's side: +1 win, 0 draw, -1 loss ``[games]``."""
    states = rules.initial_states(games)
    alive = np.ones(games, dtype=bool)
    score = np.zeros(games)
    for move in range(rules.cells):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        az_turn = az_first[idx] == (move % 2 == 0)
        actions = np.zeros(len(idx), dtype=np.int64)
        if az_turn.any():
            actions[az_turn] = az.choose(states[idx[az_turn]], simulations=simulations)
        if (~az_turn).any():
            actions[~az_turn] = opponent(states[idx[~az_turn]], rng)
        nxt, reward, done = rules.next_states(states[idx], actions)
        states[idx] = nxt
        ended = idx[done]
        score[ended] = np.where(az_turn[done], 1.0, -1.0) * reward[done]
        alive[ended] = False
    return score


def train_for(az, seconds: float, log: list) -> float:
    start = time.perf_counter()

    def callback(learner, metrics) -> bool:
        log.append({k: round(v, 4) for k, v in metrics.items()})
        return time.perf_counter() - start > seconds

    az.learn(10**9, callback=callback)
    return time.perf_counter() - start


def tictactoe(seconds: float, seed: int) -> dict:
    from worldflux.envs.puzzles import TicTacToe
    from worldflux.rl.alphazero import (
        AlphaZero,
        AlphaZeroConfig,
        MCTSConfig,
        minimax_moves,
        minimax_values,
    )

    rules = TicTacToe()
    # Dirichlet alpha ~ 10 / typical legal moves (the AlphaZero paper's scaling), ~1 here.
    config = AlphaZeroConfig(games_per_iteration=128, max_moves=9, temperature_moves=3,
                             train_steps=50, mcts=MCTSConfig(simulations=32, dirichlet_alpha=1.0))
    az = AlphaZero(rules, config, seed=seed)
    log: list = []
    wall = train_for(az, seconds, log)
    table = minimax_values(rules)
    rng = np.random.default_rng(seed + 1)

    def perfect(states, rng):
        return minimax_moves(rules, states, table, rng)

    results = {}
    for sims in (64, 200):
        first = play(az, rules, perfect, 100, np.ones(100, dtype=bool), sims, rng)
        second = play(az, rules, perfect, 100, np.zeros(100, dtype=bool), sims, rng)
        results[f"simulations_{sims}"] = {
            "as_first": {"losses": int((first < 0).sum()), "draws": int((first == 0).sum()),
                         "wins": int((first > 0).sum())},
            "as_second": {"losses": int((second < 0).sum()), "draws": int((second == 0).sum()),
                          "wins": int((second > 0).sum())}}
    return {"train_wall_time_s": round(wall, 1), "iterations": az.iterations,
            "self_play_moves": az.env_steps, "vs_minimax": results,
            "target_met": any(r["as_first"]["losses"] + r["as_second"]["losses"] == 0
                              for r in results.values()),
            "last_metrics": log[-1]}


def connect4(seconds: float, seed: int) -> dict:
    from worldflux.envs.puzzles import ConnectFour, random_legal
    from worldflux.rl import PolicyConfig
    from worldflux.rl.alphazero import AlphaZero, AlphaZeroConfig, MCTSConfig

    rules = ConnectFour()
    config = AlphaZeroConfig(games_per_iteration=128, max_moves=42, temperature_moves=8,
                             train_steps=100, buffer_size=100_000,
                             mcts=MCTSConfig(simulations=48, dirichlet_alpha=1.0),
                             policy=PolicyConfig(name="conv2d", channels=(32, 32),
                                                 hidden=(128,), activation="relu", shared=True))
    az = AlphaZero(rules, config, seed=seed)
    log: list = []
    wall = train_for(az, seconds, log)
    rng = np.random.default_rng(seed + 1)

    def random_player(states, rng):
        return random_legal(rules.legal_mask(states), rng)

    az_first = np.arange(100) % 2 == 0
    score = play(az, rules, random_player, 100, az_first, 48, rng)
    # The untrained network with the same search, for reference.
    fresh = AlphaZero(rules, config, seed=seed + 7)
    score_fresh = play(fresh, rules, random_player, 100, az_first, 48, rng)
    return {"train_wall_time_s": round(wall, 1), "iterations": az.iterations,
            "self_play_moves": az.env_steps,
            "win_rate_vs_random": float((score > 0).mean()),
            "loss_rate_vs_random": float((score < 0).mean()),
            "untrained_network_win_rate_vs_random": float((score_fresh > 0).mean()),
            "target_met": float((score > 0).mean()) >= 0.95, "last_metrics": log[-1]}


def puzzle(seconds: float, seed: int) -> dict:
    from worldflux.envs.puzzles import SlidingPuzzleRules
    from worldflux.rl import PolicyConfig
    from worldflux.rl.alphazero import AlphaZero, AlphaZeroConfig, MCTSConfig

    rules = SlidingPuzzleRules(3)
    depth = 32

    def start(n, rng):  # depths 1..32 per episode: a curriculum without a schedule
        return rules.scramble(n, rng.integers(1, depth + 1, size=n), rng)

    config = AlphaZeroConfig(games_per_iteration=256, max_moves=2 * depth, temperature_moves=0,
                             train_steps=100, buffer_size=100_000,
                             mcts=MCTSConfig(simulations=24, discount=0.97,
                                             dirichlet_alpha=0.5),
                             policy=PolicyConfig(hidden=(256, 256), activation="relu",
                                                 shared=True))
    az = AlphaZero(rules, config, start_states=start, seed=seed)
    log: list = []
    wall = train_for(az, seconds, log)
    rng = np.random.default_rng(seed + 1)
    results = {}
    for sims in (24, 64):
        states = rules.scramble(500, depth, rng)
        solved = np.zeros(500, dtype=bool)
        for _ in range(2 * depth):
            idx = np.flatnonzero(~solved)
            if not len(idx):
                break
            nxt, _, done = rules.next_states(states[idx], az.choose(states[idx],
                                                                    simulations=sims))
            states[idx] = nxt
            solved[idx[done]] = True
        results[f"simulations_{sims}"] = float(solved.mean())
    return {"train_wall_time_s": round(wall, 1), "iterations": az.iterations,
            "search_moves": az.env_steps, "solve_rate_depth_32": results,
            "target_met": max(results.values()) >= 0.95, "last_metrics": log[-1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks alphazero_games")
    parser.add_argument("--tasks", nargs="+", default=["tictactoe", "connect4", "puzzle"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[120, 300, 400],
                        help="training seconds per task, in the order of --tasks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    tasks = {"tictactoe": tictactoe, "connect4": connect4, "puzzle": puzzle}
    out = {}
    for name, seconds in zip(args.tasks, args.seconds, strict=True):
        out[name] = tasks[name](seconds, args.seed)
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "last_metrics"}),
              flush=True)
    # A run of some of the tasks gets its own file, so it never overwrites the full run.
    name = "alphazero_games" if len(args.tasks) == 3 else "alphazero_" + "_".join(args.tasks)
    path = write_result(name, {"seed": args.seed, "seconds": args.seconds, "tasks": out},
                        started)
    print(f"wrote {path}")
