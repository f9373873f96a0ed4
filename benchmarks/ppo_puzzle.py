"""PPO on the 3x3 sliding puzzle against TwisteRL (Rust collection), in one run.

Criterion, the same for both: the greedy policy solves >= 95% of fresh scrambles of depth 32
(TwisteRL's 3x3 example trains its curriculum up to depth 32; a scramble is 32 uniformly random
moves, moves off the board are no-ops, the move budget is 2 x 32) within the move budget.
Wall time counts from the start of training (evaluations included) to the first evaluation
that meets it. Both run on this machine, one after the other, with the same torch thread count.

worldflux: PPO over 256 native batched puzzles, a shared 256-256 ReLU MLP on the one-hot
(position, tile) board (the same input TwisteRL uses), depths drawn uniformly from 1..32 per
episode (a curriculum without a schedule), masks on illegal moves. TwisteRL: its example config
(see ``peers/twisterl_puzzle.py``).

Also reported: environment steps per second of collection with the policy in the loop, for
both (worldflux: ``PPO.collect`` on 256 envs; TwisteRL: its ``PPOCollector`` on all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import plot_path, pyplot, write_result

DEPTH = 32
TARGET = 0.95


def ppo_config():
    from worldflux.rl import PolicyConfig, PPOConfig

    return PPOConfig(num_envs=256, rollout_steps=32, minibatches=4, epochs=4, gamma=0.99,
                     gae_lambda=0.95, ent_coef=0.01, learning_rate=1e-3, anneal_lr=False,
                     policy=PolicyConfig(hidden=(256, 256), activation="relu", shared=True))


def run_worldflux(seed: int, limit_s: float, eval_episodes: int, eval_every: int) -> dict:
    from worldflux.rl import PPO, make_batched_env
    from worldflux.rl.evaluate import run_episodes

    start = time.perf_counter()
    env = make_batched_env("puzzle/sliding-3x3", 256, seed=seed, depth=DEPTH, min_depth=1)
    ppo = PPO(env, ppo_config(), seed=seed)
    evaluation = make_batched_env("puzzle/sliding-3x3", eval_episodes, seed=10_000 + seed,
                                  depth=DEPTH)
    curve: list[dict] = []
    state = {"solved_at": None, "collect_s": 0.0, "update_s": 0.0}

    def callback(learner, metrics) -> bool:
        state["collect_s"] += metrics["time/collect_s"]
        state["update_s"] += metrics["time/update_s"]
        elapsed = time.perf_counter() - start
        if learner.updates % eval_every == 0:
            result = run_episodes(evaluation, lambda o, m: learner.act(o, m, deterministic=True),
                                  seed=10_000 + seed)
            elapsed = time.perf_counter() - start
            rate = float(result["success"].mean())
            curve.append({"elapsed_s": round(elapsed, 2), "env_steps": learner.env_steps,
                          "solve_rate": rate})
            if rate >= TARGET:
                state["solved_at"] = elapsed
                return True
        return elapsed > limit_s

    ppo.learn(10**10, callback=callback)
    wall = time.perf_counter() - start
    return {"seed": seed, "solved_at_s": state["solved_at"], "wall_time_s": round(wall, 2),
            "env_steps": ppo.env_steps, "curve": curve,
            "collect_time_share": round(state["collect_s"] / wall, 3),
            "update_time_share": round(state["update_s"] / wall, 3),
            "collect_steps_per_s": collection_speed(ppo)}


def collection_speed(trained, rollouts: int = 5) -> float:
    """Env steps per second of ``PPO.collect`` (policy forward, sampling, env step, GAE) with
    the trained policy on 256 puzzles at depth 32 (as the peer's figure)."""
    from worldflux.rl import PPO, make_batched_env

    env = make_batched_env("puzzle/sliding-3x3", 256, seed=1, depth=DEPTH)
    ppo = PPO(env, trained.config, policy=trained.policy, seed=1)
    ppo.collect()
    start = time.perf_counter()
    for _ in range(rollouts):
        ppo.collect()
    steps = rollouts * ppo.config.rollout_steps * ppo.env.num_envs
    return round(steps / (time.perf_counter() - start))


def run_twisterl(seed: int, limit_s: float, eval_episodes: int) -> dict:
    from benchmarks.peers.venv import peer_python

    python = peer_python("twisterl")
    script = Path(__file__).parent / "peers" / "twisterl_puzzle.py"
    out = subprocess.run([str(python), str(script), str(seed), str(TARGET), str(limit_s),
                          str(eval_episodes), "ppo"], capture_output=True, text=True, check=True,
                         env={**os.environ, "TWISTERL_THREADS": str(torch.get_num_threads())})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ppo_puzzle")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per run at most")
    parser.add_argument("--eval-episodes", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=10, help="worldflux: updates")
    parser.add_argument("--no-peer", action="store_true", help="skip TwisteRL")
    args = parser.parse_args(argv)
    started = time.time()
    ours = [run_worldflux(s, args.limit, args.eval_episodes, args.eval_every) for s in args.seeds]
    peer = [] if args.no_peer else [run_twisterl(s, args.limit, args.eval_episodes)
                                    for s in args.seeds]

    def median(rows, key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.median(values)) if values else None

    def first_at(rows, level):  # TwisteRL's own curriculum criterion is 85%
        times = [next((c["elapsed_s"] for c in r["curve"] if c["solve_rate"] >= level), None)
                 for r in rows]
        return [t for t in times if t is not None]

    summary = {
        "worldflux_time_to_85_s": first_at(ours, 0.85),
        "twisterl_time_to_85_s": first_at(peer, 0.85),
        "worldflux_time_to_target_s": median(ours, "solved_at_s"),
        "twisterl_time_to_target_s": median(peer, "solved_at_s"),
        "worldflux_collect_steps_per_s": median(ours, "collect_steps_per_s"),
        "twisterl_collect_steps_per_s": median(peer, "collect_steps_per_s"),
        "worldflux_reached": sum(r["solved_at_s"] is not None for r in ours),
        "twisterl_reached": sum(r["solved_at_s"] is not None for r in peer),
    }
    if summary["worldflux_time_to_target_s"] and peer:
        peer_time = summary["twisterl_time_to_target_s"]
        summary["wall_time_ratio_twisterl_over_worldflux"] = (
            round(peer_time / summary["worldflux_time_to_target_s"], 2) if peer_time else
            f"> {round(args.limit / summary['worldflux_time_to_target_s'], 2)} (TwisteRL did "
            f"not reach the target within {args.limit:.0f} s)")
    if summary["worldflux_collect_steps_per_s"] and summary["twisterl_collect_steps_per_s"]:
        summary["collect_speed_ratio_worldflux_over_twisterl"] = round(
            summary["worldflux_collect_steps_per_s"] / summary["twisterl_collect_steps_per_s"], 2)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for rows, name, color in ((ours, "worldflux PPO", "C0"), (peer, "TwisteRL PPO", "C3")):
        for i, row in enumerate(rows):
            ax.plot([c["elapsed_s"] for c in row["curve"]], [c["solve_rate"] for c in row["curve"]],
                    color=color, label=name if i == 0 else None, marker=".")
    ax.axhline(TARGET, color="gray", ls="--", lw=1)
    ax.set_xlabel("wall time (s), this machine")
    ax.set_ylabel(f"greedy solve rate, depth {DEPTH}")
    ax.set_title("3x3 sliding puzzle: PPO, worldflux vs TwisteRL")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path("ppo_puzzle"), dpi=120)
    path = write_result("ppo_puzzle", {
        "setting": {"depth": DEPTH, "target_solve_rate": TARGET,
                    "eval_episodes": args.eval_episodes, "seeds": args.seeds,
                    "limit_s": args.limit, "worldflux_config": _config_dict()},
        "summary": summary, "worldflux": ours, "twisterl": peer,
        "peer": "twisterl 0.5.1 (PyPI), own venv, example config ppo_puzzle8_v1",
    }, started)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


def _config_dict() -> dict:
    from worldflux.core.config import to_dict

    return to_dict(ppo_config())
