"""Run several seeds of ``worldflux.training.train`` in parallel processes and gather curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_seed(agent: str, train: dict[str, Any], overrides: dict[str, str], out_dir: str,
             threads: int) -> subprocess.Popen:
    """Start one training run in a child process (``torch`` limited to ``threads``)."""
    code = (
        "import json, sys, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from worldflux.training.config import TrainConfig\n"
        "from worldflux.training.loop import train\n"
        "args = json.loads(sys.argv[1])\n"
        "train(args['agent'], TrainConfig(**args['train']), args['overrides'], args['out'],"
        " progress=False)\n"
    )
    payload = json.dumps({"agent": agent, "train": train, "overrides": overrides, "out": out_dir})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen([sys.executable, "-c", code, payload], env=env)


def run_seeds(agent: str, train: dict[str, Any], overrides: dict[str, str], seeds: list[int],
              jobs: int, root: str | None = None) -> dict[int, Path]:
    """Train every seed (``jobs`` at a time, threads split between them); returns run dirs."""
    root_dir = Path(root or tempfile.mkdtemp(prefix="wf-bench-"))
    threads = int(os.environ.get("WF_BENCH_THREADS", 0)) or max(1, (os.cpu_count() or 1) // jobs)
    pending = list(seeds)
    running: list[tuple[int, subprocess.Popen]] = []
    dirs = {}
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            out = root_dir / f"seed{seed}"
            dirs[seed] = out
            running.append((seed, run_seed(agent, {**train, "seed": seed}, overrides, str(out), threads)))
        seed, proc = running.pop(0)
        if proc.wait() != 0:
            raise RuntimeError(f"training seed {seed} failed with exit code {proc.returncode}")
    return dirs


def read_run(run_dir: Path) -> dict[str, Any]:
    """Episode returns (training), evaluations and the summary of a finished run."""
    episodes, evals = [], []
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if "episode/return" in row:
                episodes.append({"step": row["step"], "return": row["episode/return"]})
    eval_file = run_dir / "eval.jsonl"
    if eval_file.exists():
        evals = [json.loads(line) for line in eval_file.read_text().splitlines() if line]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"episodes": episodes, "evals": evals, "summary": summary}
