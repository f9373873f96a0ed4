"""DreamerV3 speed on this CPU: milliseconds per training update, vector and 64x64 pixel inputs.

One process, one torch thread; the ``size1m`` and ``size12m`` presets, each on vector
observations (CartPole-v1 sizes: 4 observations, 2 discrete actions) and on 64x64 RGB images
(dm_control cartpole from pixels: 1 continuous action; ``pixels`` is the reference CNN with
stride-1 convolutions and max-pooling, ``pixels-strided`` the same channels with stride-2
convolutions, ``model.cnn_strided=true``), timed in interleaved rounds so that
every case sees the same machine load; reports the median over rounds of the wall time and of
the process CPU time (with one thread, the compute an update costs even when other processes
share the cores). An update is the agent's
full ``train_step`` on a batch of 16 windows x 64 rows (the paper's batch) sampled from a replay
buffer: world-model loss and step, imagination of 15 steps from all 1024 posterior states,
actor and critic losses and steps, slow-critic EMA. Peer figure: sheeprl DreamerV3 XS on this
kind of machine, 1.93 s (CartPole vector) and 4.97 s (cartpole-swingup pixels) per gradient step
(``../shared/anchors/peer_baselines_cpu.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks.common import plot_path, pyplot, write_result

PEERS_S = {"vector": 1.93, "pixels": 4.97}  # sheeprl 0.8.4 DreamerV3 XS, s per gradient step


def _buffer(obs_shape, action_dim: int, discrete: bool, rows: int, seed: int):
    import numpy as np

    from worldflux.data import ReplayBuffer

    rng = np.random.default_rng(seed)
    image = len(obs_shape) == 3
    buffer = ReplayBuffer(rows, obs_shape=obs_shape, action_dim=action_dim, seed=seed,
                          obs_dtype="uint8" if image else "float32")
    for t in range(rows):
        first = t % 200 == 0
        obs = (rng.integers(0, 256, obs_shape, dtype=np.uint8) if image
               else rng.normal(size=obs_shape).astype(np.float32))
        if discrete:
            action = np.eye(action_dim, dtype=np.float32)[rng.integers(action_dim)]
        else:
            action = rng.uniform(-1, 1, action_dim).astype(np.float32)
        buffer.add(obs, action * (not first), float(rng.uniform()), False, False, is_first=first)
    return buffer


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.data.tensors import to_torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks dreamerv3_speed")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    parser.add_argument("--updates", type=int, default=1, help="updates timed per round")
    parser.add_argument("--presets", default="size1m,size12m")
    parser.add_argument("--inputs", default="vector,pixels,pixels-strided",
                        help="pixels: the reference CNN (stride 1 + max-pool); pixels-strided: "
                             "model.cnn_strided=true")
    parser.add_argument("--batch", default="16x64", help="windows x rows per update")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    torch.set_num_threads(int(os.environ.get("WF_BENCH_THREADS", 1) or 1))
    batch_size, batch_length = (int(x) for x in args.batch.split("x"))
    presets = args.presets.split(",")
    inputs = args.inputs.split(",")
    load_before = os.getloadavg()
    specs = {"vector": ((4,), 2, True), "pixels": ((3, 64, 64), 1, False),
             "pixels-strided": ((3, 64, 64), 1, False)}
    cases, buffers, params = {}, {}, {}
    for kind in inputs:
        obs_shape, action_dim, discrete = specs[kind]
        buffers[kind] = _buffer(obs_shape, action_dim, discrete, 1000, args.seed)
        for preset in presets:
            spec = ActionSpec(action_dim, "discrete" if discrete else "continuous")
            agent = build_agent("dreamerv3", ObservationSpec(
                obs_shape, "uint8" if len(obs_shape) == 3 else "float32"), spec,
                device=torch.device("cpu"), seed=args.seed,
                overrides={"model.size": preset, "batch_size": str(batch_size),
                           "batch_length": str(batch_length),
                           "model.cnn_strided": str(kind == "pixels-strided")})
            key = f"{preset}_{kind}"
            cases[key] = agent
            params[key] = {"world_model": agent.model.num_parameters(),
                           "total": agent.model.num_parameters()
                           + sum(p.numel() for p in agent.actor.parameters())
                           + sum(p.numel() for p in agent.critic.parameters())}
            agent.train_step(to_torch(buffers[kind].sample(batch_size, batch_length)))  # warm-up
            print(f"{key}: {params[key]['total'] / 1e6:.2f}M parameters", flush=True)
    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for key, agent in cases.items():
            buffer = buffers[key.split("_")[1]]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.updates):
                agent.train_step(agent.sample(buffer))
            ms = (time.perf_counter() - t0) / args.updates * 1000
            cpu_ms = (time.process_time() - c0) / args.updates * 1000
            times.setdefault(key, []).append(ms)
            cpu_times.setdefault(key, []).append(cpu_ms)
            print(f"{key}: {ms:.0f} ms per update (CPU time {cpu_ms:.0f} ms)", flush=True)
    results = {}
    for key, values in times.items():
        preset, kind = key.split("_")
        results[key] = {"preset": preset, "inputs": kind, "parameters": params[key],
                        "ms_per_update_median": round(statistics.median(values), 1),
                        "ms_per_update_rounds": [round(v, 1) for v in values],
                        "cpu_ms_per_update_median": round(statistics.median(cpu_times[key]), 1),
                        "cpu_ms_per_update_rounds": [round(v, 1) for v in cpu_times[key]],
                        "sheeprl_xs_ms_per_update": PEERS_S[kind.split("-")[0]] * 1000}
    print(json.dumps({k: (r["ms_per_update_median"], r["cpu_ms_per_update_median"])
                      for k, r in results.items()}, indent=1))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    labels = list(results)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [results[k]["ms_per_update_median"] for k in labels], 0.4,
           label="worldflux, wall time")
    ax.bar(x + 0.2, [results[k]["cpu_ms_per_update_median"] for k in labels], 0.4,
           label="worldflux, process CPU time")
    for kind, seconds in PEERS_S.items():
        if kind in inputs:
            ax.axhline(seconds * 1000, ls="--", lw=0.8, color="C1" if kind == "vector" else "C3",
                       label=f"sheeprl XS, {kind}")
    ax.set_xticks(x, [k.replace("_", "\n") for k in labels])
    ax.set_yscale("log")
    ax.set_ylabel("ms per update (median, log scale)")
    ax.set_title(f"DreamerV3 update on this CPU (1 thread, batch {batch_size} x {batch_length})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("dreamerv3_speed"), dpi=120)
    path = write_result("dreamerv3_speed", {
        "seed": args.seed, "rounds": args.rounds, "updates_per_round": args.updates,
        "batch": f"{batch_size} x {batch_length}", "imagination": "15 steps from every "
        "posterior state (batch x length starts)", "threads": torch.get_num_threads(),
        "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                   "end": [round(v, 2) for v in os.getloadavg()]},
        "note": "other processes share the 2 cores: wall times grow with the load average; the "
                "process CPU time (1 thread) is the compute an update costs whatever the load",
        "results": results}, started)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
