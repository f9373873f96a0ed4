"""Shared benchmark plumbing: machine description, result files, plots."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, memory, library versions."""
    import numpy
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            mem_gib = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform(), "gpu": torch.cuda.is_available(),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, payload: dict[str, Any], started: float) -> Path:
    """Write ``results/NAME.json`` with the command, machine, commit and wall time."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": round(time.time() - started, 1),
        # Busy processes sharing the cores over the last 1 / 5 / 15 minutes: wall times and
        # per-decision speeds of a run grow with it.
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        **payload,
    }
    path = RESULTS / f"{name}.json"
    from worldflux.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2))
    return path


def load_note(cpu_wall_ms: list[tuple[float, float]]) -> str:
    """How to read wall against CPU time, from the share of a core a one-thread process had
    (``cpu_wall_ms``: pairs of process CPU and wall milliseconds of the timed cases)."""
    import statistics

    share = statistics.median(cpu / wall for cpu, wall in cpu_wall_ms)
    if share > 0.95:
        return (f"the process had a core to itself (CPU time {share:.0%} of wall time): wall "
                "and CPU times agree")
    return (f"other processes shared the cores (CPU time {share:.0%} of wall time): wall times "
            "grow with the load; the process CPU time is the compute an update costs, though "
            "cache and memory contention inflate it too")


def plot_path(name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}.png"


class Transitions:
    """Arrays ``obs [N, ...]``, ``action [N, A]``, ``reward [N]``, ``next_obs [N, ...]`` read
    like a replay buffer by an MPC agent's ``train_model`` (``all_transitions``)."""

    def __init__(self, obs, action, reward, next_obs) -> None:
        self.data = (obs, action, reward, next_obs)

    def all_transitions(self):
        import numpy as np

        obs, action, reward, next_obs = self.data
        return obs, action, reward, next_obs, np.zeros(len(obs), bool)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_anchors(task: str) -> dict[str, float]:
    """Published mean returns for a dm_control task from ``../shared/anchors`` (if present)."""
    here = Path(__file__).resolve().parent.parent
    for base in (here.parent / "shared" / "anchors", here / "shared" / "anchors"):
        path = base / "dmc_published_summary.csv"
        if path.is_file():
            lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
            header = lines[0].split(",")
            for line in lines[1:]:
                cells = line.split(",")
                if cells[0] == task:
                    return {h: float(c) for h, c in zip(header[1:], cells[1:], strict=True) if c}
    return {}
