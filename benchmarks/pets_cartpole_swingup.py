"""PETS on dm_control cartpole-swingup (proprioceptive, 5 numbers): return after 20 episodes.

Compared with the published curves in ``../shared/anchors`` (TD-MPC2, DreamerV3, SAC). Those
start at 100k agent steps with action repeat 2 (200k simulator steps); 20 episodes here are
20k simulator steps, a tenth of that, so the comparison says how far PETS gets with 10x less
data, not who wins at equal data.

Settings: action repeat 4 (250 decisions per 1000-step episode), iCEM population 300,
5 iterations, horizon 20 (0.8 s of lookahead), 20 particles TS-inf, the default 5 x (3 x 200)
ensemble with learned reward; one random episode first.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import load_anchors, plot_path, pyplot, write_result
from benchmarks.learning import read_run, run_seeds

TASK = "cartpole-swingup"
ACTION_REPEAT = 4
OVERRIDES = {"planner.name": "icem", "planner.population": "300", "planner.horizon": "20",
             "seed_steps": "250"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pets_cartpole_swingup")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/runs/pets_cartpole_swingup")
    args = parser.parse_args(argv)
    started = time.time()
    decisions = 1000 // ACTION_REPEAT
    train = {"env": f"dmc/{TASK}", "steps": decisions * args.episodes, "eval_every": 0,
             "eval_episodes": args.eval_episodes, "action_repeat": ACTION_REPEAT,
             "tensorboard": False}
    dirs = run_seeds("pets", train, OVERRIDES, args.seeds, args.jobs, args.out)
    runs = {seed: read_run(path) for seed, path in dirs.items()}
    anchors = load_anchors(TASK)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for seed, run in runs.items():
        steps = [e["step"] * ACTION_REPEAT for e in run["episodes"]]
        ax.plot(steps, [e["return"] for e in run["episodes"]], marker="o", ms=3,
                label=f"PETS seed {seed} (final eval {run['summary']['final_eval']['mean']:.0f})")
    for i, algo in enumerate(("tdmpc2", "dreamerv3", "sac")):
        if f"{algo}@100k" in anchors:
            ax.axhline(anchors[f"{algo}@100k"], color=f"C{i + 3}", ls="--", lw=1,
                       label=f"{algo} published @100k agent steps (200k sim steps)")
    ax.set_xlabel("simulator steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"PETS on dm_control {TASK} (proprioceptive)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot_path("pets_cartpole_swingup"), dpi=120)
    finals = {s: r["summary"]["final_eval"]["mean"] for s, r in runs.items()}
    payload = {
        "task": f"dm_control {TASK}", "agent": "pets", "overrides": OVERRIDES, "train": train,
        "episodes": args.episodes, "simulator_steps": 1000 * args.episodes,
        "final_eval_mean_by_seed": finals,
        "final_eval_returns_by_seed": {s: r["summary"]["final_eval"]["returns"] for s, r in runs.items()},
        "episode_returns_by_seed": {s: [round(e["return"], 1) for e in r["episodes"]]
                                    for s, r in runs.items()},
        "wall_time_s_by_seed": {s: r["summary"]["wall_time_s"] for s, r in runs.items()},
        "published_at_100k_agent_steps": {k: v for k, v in anchors.items() if k.endswith("@100k")},
        "note": "published values are at 100k agent steps with action repeat 2 (200k simulator "
                "steps); this run uses 10x fewer simulator steps",
    }
    path = write_result("pets_cartpole_swingup", payload, started)
    print(json.dumps({"final_eval_mean_by_seed": finals, "published": payload[
        "published_at_100k_agent_steps"]}, indent=2))
    print(f"wrote {path}")
