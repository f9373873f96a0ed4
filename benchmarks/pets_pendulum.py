"""PETS + CEM on gymnasium Pendulum-v1: evaluation return after 15 episodes, 3 seeds.

Target (issue: foundation): mean evaluation return >= -250 within 15 episodes of real
interaction. PETS-style settings: 5 x (3 x 200) ensemble, TS-inf with 20 particles, horizon 15,
learned reward. CEM population 200 x 5 iterations keeps 3 seeds inside a session on 2 cores
(the peer's learning run used 100); the planning-speed benchmark covers population 500.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.common import plot_path, pyplot, write_result
from benchmarks.learning import read_run, run_seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pets_pendulum")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=15)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--planner", default="cem")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="where run directories go (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.time()
    train = {"env": "Pendulum-v1", "steps": 200 * args.episodes, "eval_every": 0,
             "eval_episodes": args.eval_episodes, "tensorboard": False}
    overrides = {"planner.name": args.planner, "planner.population": str(args.population)}
    dirs = run_seeds("pets", train, overrides, args.seeds, args.jobs, args.out)
    runs = {seed: read_run(path) for seed, path in dirs.items()}
    finals = {seed: run["summary"]["final_eval"]["mean"] for seed, run in runs.items()}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, run in runs.items():
        ax.plot(range(1, len(run["episodes"]) + 1), [e["return"] for e in run["episodes"]],
                marker="o", ms=3, label=f"seed {seed} (final eval {finals[seed]:.0f})")
    ax.axhline(-250, color="k", ls="--", lw=1, label="target -250")
    ax.set_xlabel("episode (200 steps each)")
    ax.set_ylabel("training episode return")
    ax.set_title(f"PETS + {args.planner.upper()}-{args.population} on Pendulum-v1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("pets_pendulum"), dpi=120)
    passed = all(v >= -250 for v in finals.values())
    payload = {
        "task": "Pendulum-v1", "agent": "pets", "overrides": overrides, "train": train,
        "seeds": args.seeds,
        "final_eval_mean_by_seed": finals,
        "final_eval_mean_over_seeds": statistics.mean(finals.values()),
        "target": "mean evaluation return >= -250 after 15 episodes, every seed",
        "passed": passed,
        "episode_returns_by_seed": {s: [round(e["return"], 1) for e in r["episodes"]]
                                    for s, r in runs.items()},
        "final_eval_returns_by_seed": {s: r["summary"]["final_eval"]["returns"] for s, r in runs.items()},
        "wall_time_s_by_seed": {s: r["summary"]["wall_time_s"] for s, r in runs.items()},
    }
    path = write_result("pets_pendulum", payload, started)
    print(json.dumps({"final_eval_mean_by_seed": finals, "passed": passed}, indent=2))
    print(f"wrote {path}")
