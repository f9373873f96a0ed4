"""PPO on gymnasium control tasks (shared by ``ppo_cartpole`` and ``ppo_pendulum``).

Each seed trains from launch of the run; every ``eval_every`` updates the greedy policy plays
``eval_episodes`` episodes (same seeds each time) and the first evaluation at or above the target
is timed. A final evaluation over 100 episodes is reported too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def run_seed(env_id: str, config: Any, seed: int, steps: int, target: float, eval_every: int,
             eval_episodes: int, stop_at_target: bool) -> dict:
    from worldflux.rl import PPO, make_batched_env
    from worldflux.rl.evaluate import run_episodes

    start = time.perf_counter()
    env = make_batched_env(env_id, config.num_envs, seed=seed)
    ppo = PPO(env, config, seed=seed)
    evaluation = make_batched_env(env_id, eval_episodes, seed=1000 + seed)
    curve: list[dict] = []
    state: dict[str, Any] = {"reached_at": None, "reached_steps": None}

    def greedy(obs, mask):
        return ppo.act(obs, mask, deterministic=True)

    def callback(learner, metrics) -> bool:
        if learner.updates % eval_every:
            return False
        mean = float(run_episodes(evaluation, greedy, seed=1000 + seed)["returns"].mean())
        elapsed = time.perf_counter() - start
        curve.append({"elapsed_s": round(elapsed, 2), "env_steps": learner.env_steps,
                      "eval_return": round(mean, 1)})
        if mean >= target and state["reached_at"] is None:
            state["reached_at"], state["reached_steps"] = round(elapsed, 2), learner.env_steps
            return stop_at_target
        return False

    ppo.learn(steps, callback=callback)
    wall = time.perf_counter() - start
    final_env = make_batched_env(env_id, 100, seed=5000 + seed)
    final = run_episodes(final_env, greedy, seed=5000 + seed)["returns"]
    return {"seed": seed, "time_to_target_s": state["reached_at"],
            "steps_to_target": state["reached_steps"], "train_wall_time_s": round(wall, 2),
            "env_steps": ppo.env_steps, "final_eval_100_mean": round(float(final.mean()), 1),
            "final_eval_100_std": round(float(final.std()), 1), "curve": curve}


def summarise(rows: list[dict], target: float) -> dict:
    times = [r["time_to_target_s"] for r in rows if r["time_to_target_s"] is not None]
    finals = [r["final_eval_100_mean"] for r in rows]
    return {"seeds_reaching_target": f"{len(times)}/{len(rows)}",
            "time_to_target_s_per_seed": [r["time_to_target_s"] for r in rows],
            "time_to_target_s_median": float(np.median(times)) if times else None,
            "final_eval_100_mean_per_seed": finals,
            "final_eval_mean_over_seeds": round(float(np.mean(finals)), 1),
            "all_final_at_or_above_target": all(f >= target for f in finals)}


def plot(name: str, rows: list[dict], target: float, title: str) -> None:
    from benchmarks.common import plot_path, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ax.plot([c["elapsed_s"] for c in row["curve"]], [c["eval_return"] for c in row["curve"]],
                marker=".", label=f"seed {row['seed']}")
    ax.axhline(target, color="gray", ls="--", lw=1)
    ax.set_xlabel("wall time from launch (s)")
    ax.set_ylabel("greedy evaluation return")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=120)


def main_for(name: str, env_id: str, config: Any, target: float, title: str, *,
             default_steps: int, eval_every: int, argv: list[str] | None) -> None:
    """The whole benchmark ``name``: ``--seeds`` runs of ``config`` on ``env_id``, their
    summary against ``target``, a plot and ``results/NAME.json``."""
    import argparse
    import json

    from benchmarks.common import write_result
    from worldflux.core.config import to_dict

    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=default_steps)
    args = parser.parse_args(argv)
    started = time.time()
    rows = [run_seed(env_id, config, s, args.steps, target, eval_every=eval_every,
                     eval_episodes=20, stop_at_target=False) for s in args.seeds]
    summary = summarise(rows, target)
    plot(name, rows, target, title)
    path = write_result(name, {"target": target, "config": to_dict(config),
                               "summary": summary, "seeds": rows}, started)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
