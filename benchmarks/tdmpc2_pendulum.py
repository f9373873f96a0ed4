"""TD-MPC2's CPU learning test, over seeds and budgets: how far above random on Pendulum-v1.

``tests/agents/test_tdmpc2_agent.py::test_tdmpc2_learns_pendulum_beyond_random`` trains the
reduced recipe below (the 1M preset's layout at width 128, batch 32, a smaller MPPI) for one
seed and asserts the greedy planner's return clears a random policy's by :data:`MARGIN`. A test
that passes for its own seed only proves little; this benchmark trains the same recipe for
several seeds at several budgets (agent steps) and reports each seed's margin over random on the
same evaluation episodes, so the test's budget can be chosen where every seed clears the bar.

``python -m benchmarks tdmpc2_pendulum --seeds 0 1 2 3 4 5 6 7 --steps 1000 2000``
(one seed at a time, one thread each unless ``--jobs``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks import learning
from benchmarks.common import plot_path, pyplot, write_result
from benchmarks.learning import read_run, run_seeds

RECIPE = {"model.model_size": "1", "model.enc_dim": "128", "model.mlp_dim": "128",
          "model.latent_dim": "64", "batch_size": "32", "seed_steps": "200",
          "pretrain_updates": "200", "planner.population": "56", "planner.iterations": "3",
          "planner.elites": "8", "num_pi_trajs": "8"}
"""Agent overrides of the CPU test: 200 random seed steps, 200 pretraining updates, then one
update per step."""

MARGIN = 300.0
"""Return over the random policy's (same evaluation episodes) that the test asks for."""

EVAL_EPISODES = 2


def random_return(seed: int, episodes: int) -> float:
    """Mean return of uniform random actions on the evaluation episodes of a run with ``seed``
    (the episodes the trained agent's final evaluation plays)."""
    return learning.random_return({"env": "Pendulum-v1"}, seed, episodes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tdmpc2_pendulum")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000],
                        help="budgets in agent steps (200 per episode)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None, help="run directories (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.time()
    budgets = {}
    for steps in args.steps:
        train = {"env": "Pendulum-v1", "steps": steps, "eval_every": 0,
                 "eval_episodes": EVAL_EPISODES, "log_every": 100, "tensorboard": False}
        root = f"{args.out}/steps{steps}" if args.out else None
        dirs = run_seeds("tdmpc2", train, RECIPE, args.seeds, args.jobs, root)
        rows = {}
        for seed, path in dirs.items():
            summary = read_run(path)["summary"]
            learned = float(summary["final_eval"]["mean"])
            baseline = random_return(seed, EVAL_EPISODES)
            rows[str(seed)] = {"learned": round(learned, 1), "random": round(baseline, 1),
                               "margin": round(learned - baseline, 1),
                               "wall_time_s": summary["wall_time_s"]}
        margins = [r["margin"] for r in rows.values()]
        budgets[str(steps)] = {
            "seeds": rows, "min_margin": min(margins), "median_margin": statistics.median(margins),
            "seeds_clearing_margin": sum(m > MARGIN for m in margins), "of": len(margins)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (steps, budget) in enumerate(budgets.items()):
        seeds = [int(s) for s in budget["seeds"]]
        ax.bar([s + 0.8 * (i / len(budgets) - 0.4) for s in seeds],
               [r["margin"] for r in budget["seeds"].values()], width=0.8 / len(budgets),
               align="edge", label=f"{steps} steps ({budget['seeds_clearing_margin']}"
                                   f"/{budget['of']} clear)")
    ax.axhline(MARGIN, color="k", ls="--", lw=1, label=f"test's bar: random + {MARGIN:.0f}")
    ax.set_xlabel("seed")
    ax.set_ylabel("greedy return - random return (2 episodes)")
    ax.set_title("TD-MPC2 CPU test recipe on Pendulum-v1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("tdmpc2_pendulum"), dpi=120)
    path = write_result("tdmpc2_pendulum", {
        "task": "Pendulum-v1", "agent": "tdmpc2", "recipe": RECIPE,
        "eval_episodes": EVAL_EPISODES, "bar": f"greedy return > random + {MARGIN:.0f}",
        "budgets": budgets}, started)
    for steps, budget in budgets.items():
        print(f"{steps} steps: {budget['seeds_clearing_margin']}/{budget['of']} seeds clear "
              f"random + {MARGIN:.0f}; margins {[r['margin'] for r in budget['seeds'].values()]}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
