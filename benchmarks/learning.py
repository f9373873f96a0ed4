"""Run several seeds of ``worldflux.training.train`` in parallel processes and gather curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from worldflux.training.loop import FINAL_EVALS_FILE


def run_seed(agent: str, train: dict[str, Any], overrides: dict[str, str], out_dir: str,
             threads: int, log: Path | None = None) -> subprocess.Popen:
    """Start one training run in a child process (``torch`` limited to ``threads``). A run
    directory that already holds a run (``config.json``) continues from its newest checkpoint.
    With ``log``, the child's output is appended to that file."""
    code = (
        # Linux: the child gets SIGTERM when this process dies (killed included), so stopping
        # the benchmark stops its training runs (they resume from their checkpoints).
        "try:\n    import ctypes, signal\n    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
        "except Exception:\n    pass\n"
        "import json, pathlib, sys, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from worldflux.training.config import TrainConfig\n"
        "from worldflux.training.loop import train\n"
        "args = json.loads(sys.argv[1])\n"
        "train(args['agent'], TrainConfig(**args['train']), args['overrides'], args['out'],"
        " progress=False, resume=(pathlib.Path(args['out']) / 'config.json').is_file())\n"
    )
    payload = json.dumps({"agent": agent, "train": train, "overrides": overrides, "out": out_dir})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    if log is None:
        return subprocess.Popen([sys.executable, "-c", code, payload], env=env)
    with open(log, "a", encoding="utf-8") as fh:  # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, "-c", code, payload], env=env, stdout=fh,
                                stderr=subprocess.STDOUT)


def run_seeds(agent: str, train: dict[str, Any], overrides: dict[str, str], seeds: list[int],
              jobs: int, root: str | os.PathLike | None = None,
              logs: bool = False) -> dict[int, Path]:
    """Train every seed (``jobs`` at a time, threads split between them) in ``ROOT/seed<S>``;
    returns the run dirs. With ``logs``, each seed's output goes to ``ROOT/seed<S>.log``."""
    root_dir = Path(root or tempfile.mkdtemp(prefix="wf-bench-"))
    root_dir.mkdir(parents=True, exist_ok=True)
    threads = int(os.environ.get("WF_BENCH_THREADS", 0)) or max(1, (os.cpu_count() or 1) // jobs)
    pending = list(seeds)
    running: list[tuple[int, subprocess.Popen]] = []
    dirs = {}
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            out = root_dir / f"seed{seed}"
            dirs[seed] = out
            log = root_dir / f"seed{seed}.log" if logs else None
            running.append((seed, run_seed(agent, {**train, "seed": seed}, overrides, str(out),
                                           threads, log)))
        seed, proc = running.pop(0)
        if proc.wait() != 0:
            raise RuntimeError(f"training seed {seed} failed with exit code {proc.returncode}")
    return dirs


def random_returns(train: dict[str, Any], seed: int, episodes: int,
                   eval_seed: int | None = None) -> list[float]:
    """Returns ``[episodes]`` of uniform random actions on the evaluation episodes that a run of
    ``train`` (``TrainConfig`` fields) with ``seed`` plays: the same env, action repeat and resets
    (``eval_seed``, by default ``seed + EVAL_SEED_OFFSET`` as in training and ``worldflux eval``),
    so a learned return can be set against it episode for episode."""
    import torch

    from worldflux.agents import build_agent
    from worldflux.training import TrainConfig
    from worldflux.training.environment import EVAL_SEED_OFFSET, make_env, specs_for
    from worldflux.training.evaluate import evaluate

    config = TrainConfig(**{"steps": 1, **train, "seed": seed})
    first = seed + EVAL_SEED_OFFSET if eval_seed is None else int(eval_seed)
    env = make_env(config, seed=first)
    obs_spec, action_spec = specs_for(env)
    agent = build_agent("random", obs_spec, action_spec, device=torch.device("cpu"))
    try:
        return [float(r) for r in evaluate(agent, env, episodes, first)["returns"]]
    finally:
        env.close()


def random_return(train: dict[str, Any], seed: int, episodes: int) -> float:
    """Mean of :func:`random_returns` on a run's evaluation episodes."""
    returns = random_returns(train, seed, episodes)
    return sum(returns) / len(returns)


def read_run(run_dir: Path) -> dict[str, Any]:
    """Episode returns (training), evaluations, the training wall time so far and the summary
    (None while the run is unfinished) of a run directory."""
    episodes, evals, elapsed = [], [], 0.0
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []:
        if not line.strip():
            continue
        row = json.loads(line)
        elapsed = max(elapsed, float(row.get("elapsed", 0.0)))
        if "episode/return" in row:
            episodes.append({"step": row["step"], "return": row["episode/return"]})
    eval_file, finals_file = run_dir / "eval.jsonl", run_dir / FINAL_EVALS_FILE
    if eval_file.exists():
        evals = [json.loads(line) for line in eval_file.read_text().splitlines() if line]
    if finals_file.exists():  # final evaluations of shorter budgets, cut when extended
        steps = {e["step"] for e in evals}
        finals = [json.loads(line) for line in finals_file.read_text().splitlines() if line]
        evals = sorted(evals + [e for e in finals if e["step"] not in steps],
                       key=lambda e: e["step"])
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    return {"episodes": episodes, "evals": evals, "summary": summary,
            "elapsed_s": round(elapsed, 1)}


def compact_run(run_dir: Path) -> dict[str, Any]:
    """:func:`read_run` for result files: evaluations as ``{step, mean, std, episodes}``,
    training episodes as ``[step, return]``, the wall time and whether the run finished."""
    run = read_run(run_dir)
    return {"evals": [{"step": e["step"], "mean": round(e["mean"], 1), "std": round(e["std"], 1),
                       "episodes": len(e["returns"]),
                       **({"final_before_extension": True} if e.get("final") else {})}
                      for e in run["evals"]],
            "episodes": [[e["step"], round(e["return"], 1)] for e in run["episodes"]],
            "elapsed_s": run["elapsed_s"], "finished": run["summary"] is not None}
