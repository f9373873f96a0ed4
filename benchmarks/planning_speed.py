"""Milliseconds per MPC decision of PETS: population 500, 5 iterations, horizon 15, 20 particles,
5-member ensemble of 3 x 200 SiLU MLPs, Pendulum-v1 dimensions (the peer's published setting).

Measured in one run: worldflux in float32 and in bfloat16 (``planning_dtype``), CEM and iCEM,
and mbrl-lib 0.2.0 (the well-known public PETS implementation) in its own venv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import plot_path, pyplot, write_result

SETTINGS = {"population": 500, "iterations": 5, "horizon": 15, "particles": 20,
            "ensemble_size": 5, "hidden_size": 200, "num_layers": 3}


def time_worldflux(planner: str, dtype: str, decisions: int, population: int) -> list[float]:
    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.envs import make

    env = make("Pendulum-v1", seed=0)
    agent = build_agent("pets", ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"),
                        seed=0, overrides={
                            "planner.name": planner, "planner.population": population,
                            "planner.iterations": SETTINGS["iterations"],
                            "planner.horizon": SETTINGS["horizon"], "planner.elites": 50,
                            "num_particles": SETTINGS["particles"], "planning_dtype": dtype})
    # Fit the normalisers on real random-policy data so the rollouts are representative.
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(200):
        action = agent.random_action()
        nxt, reward, *_ = env.step(action)
        rows.append((obs, action, reward, nxt))
        obs = nxt
    o, a, r, n = (torch.as_tensor(np.array(x), dtype=torch.float32) for x in zip(*rows, strict=True))
    agent.model.fit_normalizers(o, a, r, n)
    agent.trained = True
    agent.env_steps = 10**9
    times = []
    for _ in range(decisions + 2):
        start = time.perf_counter()
        action = agent.act(obs, explore=False)
        times.append((time.perf_counter() - start) * 1000)
        obs, *_ = env.step(action)
    return times[2:]


def time_peer(decisions: int, optimizer: str, population: int) -> dict:
    from benchmarks.peers.venv import peer_python

    python = peer_python("mbrl")
    script = Path(__file__).parent / "peers" / "mbrl_lib_planning.py"
    out = subprocess.run(
        [str(python), str(script), str(population), str(SETTINGS["iterations"]),
         str(SETTINGS["horizon"]), str(SETTINGS["particles"]), str(decisions), optimizer],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks planning_speed")
    parser.add_argument("--decisions", type=int, default=10)
    parser.add_argument("--no-peer", action="store_true", help="skip mbrl-lib")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(0)
    rows = {}
    for planner, population in (("cem", 500), ("icem", 200)):
        for dtype in ("float32", "bfloat16"):
            ms = time_worldflux(planner, dtype, args.decisions, population)
            rows[f"worldflux {planner}-{population} {dtype}"] = ms
    peer = {}
    if not args.no_peer:
        for optimizer, population in (("cem", 500), ("icem", 200)):
            result = time_peer(max(3, args.decisions // 3), optimizer, population)
            rows[f"mbrl-lib {optimizer}-{population} float32"] = result["ms_per_decision"]
            peer[optimizer] = result
    medians = {k: statistics.median(v) for k, v in rows.items()}
    ratios = {}
    for planner, population in (("cem", 500), ("icem", 200)):
        base = medians.get(f"mbrl-lib {planner}-{population} float32")
        if base:
            for dtype in ("float32", "bfloat16"):
                key = f"worldflux {planner}-{population} {dtype}"
                ratios[f"{key} speed-up vs mbrl-lib"] = round(base / medians[key], 2)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(medians)
    ax.barh(names, [medians[n] for n in names], color=["C0" if "worldflux" in n else "C3" for n in names])
    ax.set_xlabel("ms per MPC decision (median, lower is better)")
    ax.set_title("PETS planning, H=15, 20 particles, 5 x (3 x 200) ensemble")
    fig.tight_layout()
    fig.savefig(plot_path("planning_speed"), dpi=120)
    path = write_result("planning_speed", {
        "settings": SETTINGS, "ms_per_decision_median": medians, "speedup": ratios,
        "ms_per_decision_all": rows,
        "target": "worldflux CEM-500 at least 5x faster than the public implementation (~2.2-2.5 s)",
        "peer": {"library": "mbrl-lib 0.2.0 (PETS), own venv", **{k: {"torch": v["torch"],
                 "threads": v["threads"]} for k, v in peer.items()}},
    }, started)
    print(json.dumps({"medians_ms": medians, "speedup": ratios}, indent=2))
    print(f"wrote {path}")
