"""State-based MPC on worldflux/Nav3D-v0, and risk-sensitive against risk-neutral planning.

For each seed: PETS (5 x 3 x 200 Gaussian ensemble, learned dynamics, the env's known reward
function of observations as in PETS' known-reward setting) trained online with CEM, then the
final model is evaluated on the same held-out episodes (same seeds, same gusts) with the
risk-neutral objective (mean of the particle returns) and with a risk-averse one (CVaR over the
particles by default). Targets (issue: uncertainty-aware MPC):

* success >= 90% of evaluation episodes (risk-neutral planner);
* risk-sensitive planning cuts collisions by >= 25% against risk-neutral planning, losing at
  most 10 points of success rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.common import plot_path, pyplot, write_result
from benchmarks.learning import read_run, run_seeds

TRAIN = {"env": "worldflux/Nav3D-v0", "eval_every": 0, "tensorboard": False}
AGENT = {"reward_source": "env", "planner.name": "cem", "planner.population": "150",
         "planner.elites": "15", "planner.iterations": "3", "planner.horizon": "15",
         "num_particles": "20", "seed_steps": "400"}
"""The demo's settings (worldflux.training.demo): two random episodes, then CEM 150 x 3."""


def _evaluate_measures(run_dir: Path, episodes: int, measures: dict[str, dict[str, str]],
                       ) -> dict[str, dict]:
    """The run's final agent, evaluated with each risk setting on the same episodes."""
    import copy

    from worldflux.planners import RiskConfig
    from worldflux.training.environment import EVAL_SEED_OFFSET, make_env
    from worldflux.training.evaluate import evaluate, load_run

    agent, cfg, _, _ = load_run(run_dir, device="cpu")
    out = {}
    for label, risk in measures.items():
        agent.config = copy.deepcopy(agent.config)
        agent.config.risk = RiskConfig(**{k: (v if k == "measure" else float(v))
                                          for k, v in risk.items()})
        seed = cfg.seed + 2 * EVAL_SEED_OFFSET  # not the seeds of the evaluations in training
        env = make_env(cfg, seed=seed)
        t0 = time.time()
        try:
            result = evaluate(agent, env, episodes, seed)
        finally:
            env.close()
        steps = sum(result["lengths"])
        result["decisions_per_s"] = round(steps / (time.time() - t0), 2)
        out[label] = result
        print(run_dir.name, label, json.dumps({k: result[k] for k in (
            "mean", "success_rate", "collision_rate", "collisions_per_episode")}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nav3d_mpc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--eval-episodes", type=int, default=15)
    parser.add_argument("--risk", default="cvar", help="risk-averse measure to compare")
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/runs/nav3d_mpc")
    parser.add_argument("--skip-training", action="store_true",
                        help="reuse the run directories in --out")
    args = parser.parse_args(argv)
    started = time.time()
    train = {**TRAIN, "steps": args.steps, "eval_episodes": 10}
    if args.skip_training:
        dirs = {s: Path(args.out) / f"seed{s}" for s in args.seeds}
    else:
        dirs = run_seeds("pets", train, AGENT, args.seeds, args.jobs, args.out)
    averse = {"measure": args.risk, "alpha": str(args.alpha), "lam": str(args.lam)}
    measures = {"neutral": {"measure": "mean"}, "averse": averse}
    runs, evals = {}, {}
    for seed, path in dirs.items():
        runs[seed] = read_run(path)
        evals[seed] = _evaluate_measures(path, args.eval_episodes, measures)

    def mean_over(label: str, key: str) -> float:
        return statistics.mean(evals[s][label][key] for s in evals)

    success_n, success_a = mean_over("neutral", "success_rate"), mean_over("averse", "success_rate")
    coll_n = mean_over("neutral", "collisions_per_episode")
    coll_a = mean_over("averse", "collisions_per_episode")
    rate_n, rate_a = mean_over("neutral", "collision_rate"), mean_over("averse", "collision_rate")
    cut = 1.0 - coll_a / coll_n if coll_n > 0 else float("nan")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for seed, run in runs.items():
        axes[0].plot([e["step"] for e in run["episodes"]], [e["return"] for e in run["episodes"]],
                     marker="o", ms=3, label=f"seed {seed}")
    axes[0].set_xlabel("agent step")
    axes[0].set_ylabel("training episode return")
    axes[0].set_title("PETS + CEM on Nav3D (state)")
    axes[0].legend(fontsize=8)
    labels = ["success rate", "episodes with a collision", "collisions / episode"]
    neutral = [success_n, rate_n, coll_n]
    risky = [success_a, rate_a, coll_a]
    xs = range(len(labels))
    axes[1].bar([x - 0.2 for x in xs], neutral, 0.4, label="risk-neutral (mean)")
    axes[1].bar([x + 0.2 for x in xs], risky, 0.4, label=f"risk-averse ({args.risk})")
    axes[1].set_xticks(list(xs), labels, fontsize=8)
    axes[1].set_title(f"same models, {args.eval_episodes} episodes x {len(dirs)} seeds")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("nav3d_mpc"), dpi=120)
    payload = {
        "task": TRAIN["env"], "agent": "pets", "overrides": AGENT, "train": train,
        "seeds": args.seeds, "eval_episodes_per_measure": args.eval_episodes,
        "risk_averse": averse,
        "success_rate_neutral": success_n, "success_rate_averse": success_a,
        "collisions_per_episode_neutral": coll_n, "collisions_per_episode_averse": coll_a,
        "collision_rate_neutral": rate_n, "collision_rate_averse": rate_a,
        "collision_cut": cut,
        "targets": {"success >= 0.9 (neutral)": success_n >= 0.9,
                    "collisions cut >= 25% with <= 10 points less success":
                        bool(cut >= 0.25 and success_n - success_a <= 0.10)},
        "by_seed": {s: {label: {k: e[k] for k in ("mean", "std", "success_rate",
                                                  "collision_rate", "collisions_per_episode",
                                                  "decisions_per_s")}
                        for label, e in evals[s].items()} for s in evals},
        "final_eval_in_training_by_seed": {s: r["summary"]["final_eval"] for s, r in runs.items()},
        "training_wall_time_s_by_seed": {s: r["summary"]["wall_time_s"] for s, r in runs.items()},
    }
    path = write_result("nav3d_mpc", payload, started)
    print(json.dumps({k: payload[k] for k in ("success_rate_neutral", "success_rate_averse",
                                             "collisions_per_episode_neutral",
                                             "collisions_per_episode_averse", "collision_cut",
                                             "targets")}, indent=2))
    print(f"wrote {path}")
