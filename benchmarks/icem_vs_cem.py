"""iCEM against CEM on one learned model: equal return with at most a third of the samples?

Loads a trained PETS agent (by default the run of ``pets_cartpole_swingup``; ``--run`` picks
another, e.g. a ``pets_pendulum`` seed), then evaluates
the same model with two planners on the same evaluation episodes (same seeds):
CEM with population 500 x 5 iterations (2500 sequences per decision) and iCEM with population
200 decaying by 1.25 (about 700 sequences per decision, elites and the mean included).
Holding the model fixed isolates the planner.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

from benchmarks.common import plot_path, pyplot, write_result

PLANNERS = {
    "cem": {"name": "cem", "population": 500, "iterations": 5, "elites": 50},
    "icem": {"name": "icem", "population": 200, "iterations": 5, "elites": 20},
}


def main(argv: list[str] | None = None) -> None:
    import torch

    from worldflux.planners import make_planner
    from worldflux.training.environment import EVAL_SEED_OFFSET, make_env
    from worldflux.training.evaluate import evaluate, load_run

    parser = argparse.ArgumentParser(prog="python -m benchmarks icem_vs_cem")
    parser.add_argument("--run", default="benchmarks/results/runs/pets_cartpole_swingup/seed0")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--icem-population", type=int, default=200)
    parser.add_argument("--icem-elites", type=int, default=20)
    parser.add_argument("--icem-beta", type=float, default=2.0, help="coloured-noise exponent")
    parser.add_argument("--icem-execute", default="best", choices=["best", "mean"])
    parser.add_argument("--icem-planner", default="icem",
                        help="planner of the low-budget slot (cem here gives the budget control)")
    parser.add_argument("--icem-unbounded-std", action="store_true",
                        help="let iCEM's sampling std exceed the room to the action bounds")
    parser.add_argument("--icem-iterations", type=int, default=5)
    parser.add_argument("--icem-decay", type=float, default=1.25, help="population decay per iteration")
    parser.add_argument("--icem-init-std", type=float, default=None, help="default: the run's planner")
    parser.add_argument("--cem-from", default=None,
                        help="reuse the CEM figures of an earlier result JSON of the same run and "
                             "episodes instead of re-running CEM (for sweeps)")
    parser.add_argument("--name-suffix", default="", help="appended to the result file name")
    args = parser.parse_args(argv)
    PLANNERS["icem"] = {"name": args.icem_planner, "population": args.icem_population,
                        "iterations": args.icem_iterations, "population_decay": args.icem_decay,
                        "elites": args.icem_elites, "noise_beta": args.icem_beta,
                        "icem_execute": args.icem_execute}
    if args.icem_unbounded_std:
        PLANNERS["icem"]["bounded_std"] = False
    if args.icem_init_std is not None:
        PLANNERS["icem"]["init_std"] = args.icem_init_std
    started = time.time()
    agent, train_config, checkpoint, step = load_run(args.run, device="cpu")
    env = make_env(train_config, seed=train_config.seed + EVAL_SEED_OFFSET)
    results = {}
    if args.cem_from:
        with open(args.cem_from) as f:
            earlier = json.load(f)
        if earlier["run"] != args.run or earlier["episodes"] != args.episodes:
            raise SystemExit(f"--cem-from: {args.cem_from} was made with run={earlier['run']!r}, "
                             f"episodes={earlier['episodes']}; expected {args.run!r}, {args.episodes}")
        results["cem"] = dict(earlier["results"]["cem"], reused_from=args.cem_from)
    for label, settings in PLANNERS.items():
        if label in results:
            continue
        cfg = copy.deepcopy(agent.config.planner)
        for key, value in settings.items():
            setattr(cfg, key, value)
        agent.planner = make_planner(cfg, agent.action_spec.dim, device=agent.device,
                                     generator=torch.Generator().manual_seed(0))
        evaluated: list[float] = []
        original = agent.plan

        def counting_plan(obs, _original=original, _evaluated=evaluated):
            result = _original(obs)
            _evaluated.append(result.extras["wf.planner.evaluated"])
            return result

        agent.plan = counting_plan
        t0 = time.time()
        out = evaluate(agent, env, args.episodes, train_config.seed + EVAL_SEED_OFFSET)
        agent.plan = original
        results[label] = {"settings": settings, "mean": out["mean"], "std": out["std"],
                          "returns": out["returns"],
                          "sequences_per_decision": statistics.mean(evaluated),
                          "seconds": round(time.time() - t0, 1)}
        print(label, json.dumps(results[label]))
    ratio = results["icem"]["sequences_per_decision"] / results["cem"]["sequences_per_decision"]
    # Returns can be negative (Pendulum): compare by difference, tolerance 5% of |CEM return|.
    difference = results["icem"]["mean"] - results["cem"]["mean"]
    tolerance = 0.05 * abs(results["cem"]["mean"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, (label, r) in enumerate(results.items()):
        ax.bar(i, r["mean"], yerr=r["std"], color=f"C{i}",
               label=f"{label}: {r['sequences_per_decision']:.0f} sequences/decision")
    ax.set_xticks(range(len(results)), list(results))
    ax.set_ylabel("evaluation return")
    ax.set_title(f"Same learned model, {train_config.env}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "icem_vs_cem_" + train_config.env.replace("/", "_").lower() + args.name_suffix
    fig.savefig(plot_path(name), dpi=120)
    payload = {"run": args.run, "task": train_config.env, "checkpoint_step": step, "episodes": args.episodes,
               "results": results, "icem_over_cem_sequences": round(ratio, 3),
               "icem_minus_cem_return": round(difference, 2),
               "target": "iCEM return >= CEM return - 5% of |CEM return|, with <= 1/3 of the "
                         "sequences per decision",
               "passed": ratio <= 1 / 3 and difference >= -tolerance}
    path = write_result(name, payload, started)
    print(json.dumps({k: payload[k] for k in ("icem_over_cem_sequences", "icem_minus_cem_return",
                                             "passed")}, indent=2))
    print(f"wrote {path}")
