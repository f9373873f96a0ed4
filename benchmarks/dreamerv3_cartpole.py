"""DreamerV3 learning on gymnasium CartPole-v1 (vector observations, 2 discrete actions).

Target of the issue: mean return >= 450 within 50k environment steps, smallest preset that
learns. One seed per invocation; each seed trains in ``runs/dreamerv3_cartpole/seed<S>`` (git
ignored) with checkpoints, so an interrupted seed continues where it stopped when the same
command runs again (``worldflux train --resume``). Results accumulate across invocations: every
seed writes ``results/dreamerv3_cartpole_seed<S>.json`` (its curve so far, finished or not),
and the aggregate ``results/dreamerv3_cartpole.json`` + ``.png`` are rebuilt from every seed file
present (``--no-aggregate`` leaves the aggregate alone). ``--report`` only rewrites the files
from the run directories (for a run still going).

Settings: ``size1m`` preset, batch 16 x 64, imagination horizon 15, every other hyperparameter
at the paper v1 value, except ``train_ratio`` (paper: 512-1024; default here 64 so that 50k
steps fit in a few CPU hours; the value used is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import RESULTS, plot_path, pyplot, write_result
from benchmarks.learning import compact_run

NAME = "dreamerv3_cartpole"
ROOT = Path(__file__).resolve().parent.parent / "runs" / NAME
TARGET = 450.0


def _run_name(seed: int, tag: str) -> str:
    return f"{tag}_seed{seed}" if tag else f"seed{seed}"


def _train(seed: int, steps: int, train_ratio: float, size: str, eval_every: int, tag: str,
           extra: dict[str, str]) -> None:
    import torch

    from worldflux.training.config import TrainConfig
    from worldflux.training.loop import train

    torch.set_num_threads(int(os.environ.get("WF_BENCH_THREADS", 1) or 1))
    out = ROOT / _run_name(seed, tag)
    overrides = {"model.size": size, "train_ratio": str(train_ratio), **extra}
    config = TrainConfig(env="CartPole-v1", steps=steps, seed=seed, eval_every=eval_every,
                         eval_episodes=5, checkpoint_every=eval_every, log_every=1000)
    # An existing run continues from its newest checkpoint (and may be extended by --steps).
    train("dreamerv3", config, overrides, str(out), progress=False,
          resume=(out / "config.json").is_file())


def _seed_report(seed: int, tag: str, settings: dict) -> dict:
    run = compact_run(ROOT / _run_name(seed, tag))
    steps = [e["step"] for e in run["evals"] if e["mean"] >= TARGET]
    run.update({"seed": seed, "tag": tag, "settings": settings,
                "first_eval_step_at_target": steps[0] if steps else None,
                "last_env_step": run["episodes"][-1][0] if run["episodes"] else 0})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}_{_run_name(seed, tag)}.json").write_text(json.dumps(run, indent=1))
    return run


def _aggregate(started: float, plot_tags: list[str] | None = None) -> None:
    """Rewrite the aggregate JSON from every seed file and plot the runs whose tag is in
    ``plot_tags`` (all when ``None``)."""
    seeds = sorted(RESULTS.glob(f"{NAME}_*seed*.json"))
    runs = [json.loads(p.read_text()) for p in seeds]
    write_result(NAME, {"target": f"eval mean return >= {TARGET} within 50k env steps",
                        "runs": {_run_name(r["seed"], r.get("tag", "")): {k: r[k] for k in (
                            "finished", "last_env_step", "elapsed_s",
                            "first_eval_step_at_target", "settings")} | {
                            "final_eval": r["evals"][-1] if r["evals"] else None}
                                  for r in runs}}, started)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    shown = [r for r in runs if plot_tags is None or r.get("tag", "") in plot_tags]
    tags = sorted({r.get("tag", "") for r in shown})
    markers = "osD^v*"
    for r in shown:
        color = f"C{tags.index(r.get('tag', '')) % 10}"  # one colour per variant
        if r["episodes"]:
            xs, ys = zip(*r["episodes"], strict=True)
            ax.plot(xs, ys, alpha=0.15, lw=0.6, color=color)
        if r["evals"]:
            ax.plot([e["step"] for e in r["evals"]], [e["mean"] for e in r["evals"]],
                    marker=markers[r["seed"] % len(markers)], color=color, lw=1.2,
                    label=f"{_run_name(r['seed'], r.get('tag', ''))} eval "
                          f"({r['elapsed_s'] / 60:.0f} min)")
    ax.axhline(TARGET, color="k", ls="--", lw=0.8, label=f"target {TARGET:.0f}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title("DreamerV3 on CartPole-v1 (training episodes faint, evaluations dots)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(plot_path(NAME), dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--train-ratio", type=float, default=64.0)
    parser.add_argument("--size", default="size1m")
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--tag", default="", help="names a variant: runs/.../TAG_seedS and "
                        "results/dreamerv3_cartpole_TAG_seedS.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra agent-config override (repeatable), e.g. model_lr=6e-4")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the result files from the run directories")
    parser.add_argument("--no-aggregate", action="store_true",
                        help="write only this seed's results/dreamerv3_cartpole_TAG_seedS.json, "
                        "leaving the aggregate dreamerv3_cartpole.json and .png as they are")
    parser.add_argument("--plot-tags", nargs="+", metavar="TAG",
                        help="plot only these variants (the aggregate JSON keeps every run); "
                             "'' names the untagged runs")
    args = parser.parse_args(argv)
    started = time.time()
    extra = dict(item.split("=", 1) for item in args.set)
    settings = {"steps": args.steps, "train_ratio": args.train_ratio, "size": args.size,
                "batch": "16 x 64", "eval_every": args.eval_every, "eval_episodes": 5,
                "overrides": extra}
    existing = RESULTS / f"{NAME}_{_run_name(args.seed, args.tag)}.json"
    if args.report and existing.exists():  # the run's settings, not this command line's
        settings = json.loads(existing.read_text())["settings"]
    if not args.report:
        _train(args.seed, args.steps, args.train_ratio, args.size, args.eval_every, args.tag,
               extra)
    _seed_report(args.seed, args.tag, settings)
    if not args.no_aggregate:
        _aggregate(started, args.plot_tags)


if __name__ == "__main__":
    main()
