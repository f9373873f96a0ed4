"""TD-MPC2 speed on this CPU: milliseconds per update and per planning decision.

One process; the 1M and 5M presets, each with 1 and 2 torch threads, timed in interleaved rounds
so that every case sees the same machine load; reports the median over rounds. An update is
the agent's full ``train_step`` (sample 256 windows of horizon 3 + 1 rows from a replay buffer,
world-model loss and step, policy loss and step, Polyak update), a decision one MPPI plan with
the official settings (6 iterations of 488 Gaussian + 24 policy-prior sequences, 64 elites,
horizon 3). Observation and action sizes are dm_control cartpole-swingup's (5 and 1); with
``--pixels`` the observations are the last 3 RGB frames of 64x64 (uint8 ``[9, 64, 64]``, the
official pixel wrapper and encoder, with ``latent_dim // 16`` channels: 8 at 1M, 32 at 5M), the
size of the issue's pixel task.

``--compare REV`` times the ``src/`` of git revision REV against the working tree instead, each
in a worker process of its own (``benchmarks.versions``), one thread, interleaved round by round
with alternating order, and reports old / new per round (result ``tdmpc2_speed_compare[_pixels]``).

On a CUDA device, ``--modes graphs,eager`` times both the CUDA-graph replay of the update and
the decision (the agent's default there) and the eager launches, in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks.common import load_note, plot_path, pyplot, write_result
from benchmarks.versions import interleave, old_and_new, serve

PIXEL_SHAPE = (9, 64, 64)
"""3 stacked 64x64 RGB frames (official ``envs/wrappers/pixels.py``: num_frames 3)."""


def _buffer(obs_shape: tuple[int, ...], action_dim: int, rows: int, seed: int):
    """``rows`` random rows in episodes of 500 steps; uint8 noise for image shapes."""
    import numpy as np

    from worldflux.data import ReplayBuffer

    rng = np.random.default_rng(seed)
    image = len(obs_shape) == 3
    buffer = ReplayBuffer(rows, obs_shape=obs_shape, action_dim=action_dim, seed=seed,
                          obs_dtype=np.uint8 if image else np.float32)
    for t in range(rows):
        first = t % 501 == 0
        obs = (rng.integers(0, 256, obs_shape, dtype=np.uint8) if image
               else rng.normal(size=obs_shape).astype(np.float32))
        buffer.add(obs,
                   rng.uniform(-1, 1, action_dim).astype(np.float32) * (not first),
                   float(rng.uniform()), False, False, is_first=first)
    return buffer


def _agent(preset: int, pixels: bool, device, seed: int, mode: str = "eager"):
    """A TD-MPC2 agent of ``preset`` past its seed phase (``act`` plans), and its observation
    shape and dtype."""
    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec

    obs_shape = PIXEL_SHAPE if pixels else (5,)
    obs_spec = ObservationSpec(obs_shape, "uint8" if pixels else "float32")
    agent = build_agent("tdmpc2", obs_spec, ActionSpec(1), device=device, seed=seed,
                        overrides={"model.model_size": str(preset),
                                   "cuda_graphs": str(mode == "graphs").lower()})
    agent.set_episode_length(500)
    agent.env_steps = 10**9  # past the seed phase: act() plans
    return agent, obs_shape, obs_spec.dtype


def _time(agent, buffer, obs, updates: int, decisions: int,
          sync=lambda: None) -> dict[str, float]:
    """Wall and process-CPU milliseconds per update and per decision (``sync`` waits for the
    device before each clock reading)."""
    out = {}
    for what, count, call in (("update", updates, lambda: agent.train_step(buffer)),
                              ("decision", decisions, lambda: agent.act(obs, explore=True))):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(count):
            call()
        sync()
        out[f"{what}_ms"] = (time.perf_counter() - t0) / count * 1000
        out[f"{what}_cpu_ms"] = (time.process_time() - c0) / count * 1000
    return out


def _worker(args) -> None:
    """Serve timing requests ``{"preset", "updates", "decisions"}`` for the code on sys.path."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("WF_BENCH_THREADS", 1) or 1))
    agents: dict[int, tuple] = {}
    buffer = _buffer(PIXEL_SHAPE if args.pixels else (5,), 1, 1010, args.seed)

    def handle(request: dict) -> dict:
        preset = int(request["preset"])
        if preset not in agents:
            agent, shape, dtype = _agent(preset, args.pixels, torch.device("cpu"), args.seed)
            obs = np.zeros(shape, dtype)
            _time(agent, buffer, obs, 2, 2)  # warm-up
            agents[preset] = (agent, obs)
        agent, obs = agents[preset]
        out = _time(agent, buffer, obs, request["updates"], request["decisions"])
        return {**out, "parameters": agent.model.num_parameters()}

    serve(handle)


def _compare(args, started: float) -> None:
    """Old (``--compare REV``) and new code in two workers, interleaved round by round."""
    import numpy as np

    presets = [int(p) for p in args.presets.split(",")]
    load_before = os.getloadavg()
    cmd = ["--seed", str(args.seed)] + (["--pixels"] if args.pixels else [])
    rows: dict[int, dict[str, list[float]]] = {p: {} for p in presets}
    params: dict[int, int] = {}
    request = {"updates": args.updates, "decisions": args.decisions}
    with old_and_new("benchmarks.tdmpc2_speed", args.compare, cmd, cmd) as versions:
        names = list(versions)
        for r, preset, name, out in interleave(versions, presets, args.rounds,
                                               lambda p: {**request, "preset": p}):
            params[preset] = out["parameters"]
            for key in ("update_ms", "update_cpu_ms", "decision_ms", "decision_cpu_ms"):
                rows[preset].setdefault(f"{name}_{key}", []).append(out[key])
            print(f"round {r} {preset}M [{name}]: update {out['update_cpu_ms']:.0f} ms CPU, "
                  f"decision {out['decision_cpu_ms']:.0f} ms CPU", flush=True)
    results = {}
    for preset, row in rows.items():
        result: dict = {"preset": preset, "parameters": params[preset]}
        for what in ("update", "decision"):
            for name in names:
                for unit in ("ms", "cpu_ms"):
                    values = row[f"{name}_{what}_{unit}"]
                    result[f"{name}_{what}_{unit}_median"] = round(statistics.median(values), 1)
                    result[f"{name}_{what}_{unit}_rounds"] = [round(v, 1) for v in values]
            ratios = [a / b for a, b in zip(row[f"old_{what}_cpu_ms"], row[f"new_{what}_cpu_ms"],
                                            strict=True)]
            result[f"{what}_speedup_cpu_median"] = round(statistics.median(ratios), 3)
            result[f"{what}_speedup_cpu_rounds"] = [round(v, 3) for v in ratios]
        results[f"{preset}M"] = result
        print(f"{preset}M: update {result['old_update_cpu_ms_median']:.0f} -> "
              f"{result['new_update_cpu_ms_median']:.0f} ms CPU "
              f"({result['update_speedup_cpu_median']:.2f}x), decision "
              f"{result['old_decision_cpu_ms_median']:.0f} -> "
              f"{result['new_decision_cpu_ms_median']:.0f} ms CPU "
              f"({result['decision_speedup_cpu_median']:.2f}x)", flush=True)
    name = "tdmpc2_speed_compare" + ("_pixels" if args.pixels else "")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    labels = [f"{k} {what}" for k in results for what in ("update", "decision")]
    x = np.arange(len(labels))
    for i, version in enumerate(names):
        values = [results[k][f"{version}_{what}_cpu_ms_median"] for k in results
                  for what in ("update", "decision")]
        ax.bar(x + (i - 0.5) * 0.4, values, 0.4,
               label=args.compare if version == "old" else "working tree")
    for xi, (k, what) in enumerate((k, w) for k in results for w in ("update", "decision")):
        ax.text(xi, results[k][f"old_{what}_cpu_ms_median"] * 1.04,
                f"{results[k][f'{what}_speedup_cpu_median']:.2f}x", ha="center", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.1)  # room for the ratios
    ax.set_ylabel("process CPU ms (median over rounds)")
    ax.set_title("TD-MPC2, 1 thread" + (", 3 stacked 64x64 frames" if args.pixels else "")
                 + f": {args.compare} against the working tree", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=120)
    pairs = [(r[f"new_{w}_cpu_ms_median"], r[f"new_{w}_ms_median"]) for r in results.values()
             for w in ("update", "decision")]
    path = write_result(name, {
        "compare": args.compare, "seed": args.seed, "rounds": args.rounds,
        "updates_per_round": args.updates, "decisions_per_round": args.decisions,
        "obs_shape": list(PIXEL_SHAPE if args.pixels else (5,)),
        "threads": int(os.environ.get("WF_BENCH_THREADS", 1) or 1),
        "load_average_1_5_15min": {"start": [round(x, 2) for x in load_before],
                                   "end": [round(x, 2) for x in os.getloadavg()]},
        "note": load_note(pairs) + "; speedup = median over rounds of old / new CPU time",
        "results": results}, started)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks tdmpc2_speed")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--updates", type=int, default=4, help="updates timed per round")
    parser.add_argument("--decisions", type=int, default=4, help="decisions timed per round")
    parser.add_argument("--presets", default="1,5", help="model sizes (millions of parameters)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts")
    parser.add_argument("--modes", default="graphs,eager",
                        help="CUDA only: graphs (captured update and decision), eager, or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels", action="store_true",
                        help="64x64 RGB observations (pixel encoder) instead of a 5-vector")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--name", default=None,
                        help="result name (default tdmpc2_speed, tdmpc2_speed_cuda on a GPU)")
    parser.add_argument("--compare", default="", metavar="REV",
                        help="time the src/ of this git revision against the working tree (CPU)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    if args.compare:
        _compare(args, time.time())
        return
    from worldflux.core.device import resolve_device

    device = resolve_device(args.device)
    name = args.name or ("tdmpc2_speed" + ("" if device.type == "cpu" else f"_{device.type}")
                         + ("_pixels" if args.pixels else ""))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.time()
    action_dim = 1
    presets = [int(p) for p in args.presets.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()
    buffer = _buffer(PIXEL_SHAPE if args.pixels else (5,), action_dim, 5010, args.seed)
    modes = args.modes.split(",") if device.type == "cuda" else ["eager"]
    agents, params = {}, {}
    for preset in presets:
        for mode in modes:
            agent, obs_shape, obs_dtype = _agent(preset, args.pixels, device, args.seed, mode)
            agents[preset, mode] = agent
            params[preset] = agent.model.num_parameters()
            for _ in range(5):  # warm-up (graphs: 3 eager calls, then the capture)
                agent.train_step(buffer)
                agent.act(np.zeros(obs_shape, obs_dtype), explore=True)
    times: dict[str, list[float]] = {}
    obs = np.zeros(obs_shape, obs_dtype)

    def case(preset: int, mode: str, threads: int) -> str:
        return f"{preset}M_{threads}t" + (f"_{mode}" if device.type == "cuda" else "")

    for _ in range(args.rounds):
        for (preset, mode), agent in agents.items():
            for threads in thread_counts:
                torch.set_num_threads(threads)
                timed = _time(agent, buffer, obs, args.updates, args.decisions, sync)
                update_ms, decision_ms = timed["update_ms"], timed["decision_ms"]
                key = case(preset, mode, threads)
                times.setdefault(f"{key}_update", []).append(update_ms)
                times.setdefault(f"{key}_decision", []).append(decision_ms)
                print(f"{key}: update {update_ms:.2f} ms, decision {decision_ms:.2f} ms",
                      flush=True)
    results = {}
    for preset, mode in agents:
        for threads in thread_counts:
            key = case(preset, mode, threads)
            up, dec = times[f"{key}_update"], times[f"{key}_decision"]
            results[key] = {
                "preset": preset, "threads": threads, "parameters": params[preset],
                "mode": mode,
                "ms_per_update_median": round(statistics.median(up), 2),
                "ms_per_decision_median": round(statistics.median(dec), 2),
                "ms_per_update_rounds": [round(t, 2) for t in up],
                "ms_per_decision_rounds": [round(t, 2) for t in dec],
                "ms_per_agent_step_median": round(statistics.median(up)
                                                  + statistics.median(dec), 2)}
    for key, result in results.items():  # graphs against eager, same preset and threads
        eager = results.get(key.replace("_graphs", "_eager"))
        if result["mode"] == "graphs" and eager:
            result["speedup_vs_eager"] = {
                "update": round(eager["ms_per_update_median"] / result["ms_per_update_median"], 2),
                "decision": round(eager["ms_per_decision_median"]
                                  / result["ms_per_decision_median"], 2)}
    print(json.dumps({k: {m: v for m, v in r.items() if "median" in m or "speedup" in m}
                      for k, r in results.items()}, indent=1))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(results)), 3.6))
    labels = list(results)
    x = np.arange(len(labels))
    ups = [results[k]["ms_per_update_median"] for k in labels]
    decs = [results[k]["ms_per_decision_median"] for k in labels]
    ax.bar(x - 0.2, ups, 0.4, label="update (batch 256, H 3)")
    ax.bar(x + 0.2, decs, 0.4, label="planning decision (MPPI 6 x 512)")
    ax.set_xticks(x, [k.replace("_", ", ").replace("t", " thr") for k in labels], fontsize=7)
    ax.set_ylabel("ms (median over rounds)")
    ax.set_title(f"TD-MPC2 on {device.type}" + (", 64x64 pixels" if args.pixels else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=120)
    path = write_result(name, {
        "device": str(device),
        "seed": args.seed, "rounds": args.rounds, "updates_per_round": args.updates,
        "decisions_per_round": args.decisions, "obs_shape": list(obs_shape),
        "action_dim": action_dim,
        "settings": "official defaults: batch 256, horizon 3, MPPI 6 iterations, 488 + 24 "
                    "samples, 64 elites; fp32",
        "modes": modes,
        "load_average_1_5_15min": {"start": [round(x, 2) for x in load_before],
                                   "end": [round(x, 2) for x in os.getloadavg()]},
        "note": "2 threads are slower than 1 whenever other processes load the 2 cores "
                "(OpenMP threads wait for each other); compare cases within one run",
        "results": results}, started)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
