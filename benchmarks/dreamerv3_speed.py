"""DreamerV3 speed on this CPU: milliseconds per training update, vector and 64x64 pixel inputs.

One process, one torch thread; the ``size1m`` and ``size12m`` presets, each on vector
observations (CartPole-v1 sizes: 4 observations, 2 discrete actions; ``vector-continuous``:
dm_control cartpole-swingup's 5 observations and 1 continuous action) and on 64x64 RGB images
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

``--compare REV`` also times the code of git revision ``REV`` (its ``src/``, extracted with
``git archive``) against the working tree's, each in its own worker process holding the same
cases (same seed, same replay data, same sampled batches); every round runs both versions on
each case back to back, alternating which goes first, so that the ratio old / new is taken under
the same machine load. ``--ab KEY=VALUE`` does the same with the working tree under an agent
setting (old) against the working tree as it is (new), e.g. ``--ab retain_freed_memory=false``.
``--units`` stacks a width on the presets (``--units 256``: the paper v1's XS width for encoder,
decoder, heads, actor and critic).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks.common import load_note, plot_path, pyplot, write_result
from benchmarks.versions import interleave, old_and_new, serve

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


# (observation shape, action size, discrete). ``vector-continuous`` is dm_control
# cartpole-swingup from its state (5 observations, 1 continuous action): the actor learns by
# backpropagation through the imagined dynamics (``actor_grad_continuous``), a larger update than
# the discrete case's REINFORCE.
SPECS = {"vector": ((4,), 2, True), "vector-continuous": ((5,), 1, False),
         "pixels": ((3, 64, 64), 1, False), "pixels-strided": ((3, 64, 64), 1, False)}


def _case_keys(presets: list[str], units: list[str], inputs: list[str]) -> list[str]:
    """``PRESET[-uUNITS]_INPUTS`` for every combination."""
    return [f"{preset}{'-u' + u if u else ''}_{kind}" for kind in inputs for preset in presets
            for u in units]


class _Cases:
    """Agents and replay buffers of the timed cases, built on first use (one per key)."""

    def __init__(self, batch_size: int, batch_length: int, seed: int,
                 extra: dict[str, str] | None = None) -> None:
        self.batch_size, self.batch_length, self.seed = batch_size, batch_length, seed
        self.extra = dict(extra or {})
        self.agents: dict = {}
        self.buffers: dict = {}
        self.params: dict = {}

    def get(self, key: str):
        import torch

        from worldflux.agents import build_agent
        from worldflux.core.spec import ActionSpec, ObservationSpec
        from worldflux.data.tensors import to_torch

        if key in self.agents:
            return self.agents[key], self.buffers[key.split("_")[1]]
        name, kind = key.split("_")
        preset, _, units = name.partition("-u")
        obs_shape, action_dim, discrete = SPECS[kind]
        if kind not in self.buffers:
            self.buffers[kind] = _buffer(obs_shape, action_dim, discrete, 1000, self.seed)
        spec = ActionSpec(action_dim, "discrete" if discrete else "continuous")
        overrides = {"model.size": preset, "batch_size": str(self.batch_size),
                     "batch_length": str(self.batch_length),
                     "model.cnn_strided": str(kind == "pixels-strided")}
        if units:
            overrides["model.units"] = units
        overrides.update(self.extra)
        # "precision" is the training loop's setting (train.precision), not the agent's.
        precision = overrides.pop("precision", "fp32")
        agent = build_agent("dreamerv3", ObservationSpec(
            obs_shape, "uint8" if len(obs_shape) == 3 else "float32"), spec,
            device=torch.device("cpu"), seed=self.seed, overrides=overrides)
        agent.configure_training(precision=precision)
        self.params[key] = {"world_model": agent.model.num_parameters(),
                            "total": agent.model.num_parameters()
                            + sum(p.numel() for p in agent.actor.parameters())
                            + sum(p.numel() for p in agent.critic.parameters())}
        t0 = time.process_time()
        agent.train_step(to_torch(self.buffers[kind].sample(self.batch_size,
                                                            self.batch_length)))  # warm-up
        self.params[key]["warmup_cpu_s"] = round(time.process_time() - t0, 1)
        self.agents[key] = agent
        return agent, self.buffers[kind]

    def time(self, key: str, updates: int) -> dict[str, float]:
        """Wall and process-CPU milliseconds per update over ``updates`` updates."""
        agent, buffer = self.get(key)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(updates):
            agent.train_step(agent.sample(buffer))
        return {"ms": (time.perf_counter() - t0) / updates * 1000,
                "cpu_ms": (time.process_time() - c0) / updates * 1000}


def _worker(args) -> None:
    """Serve timing requests on stdin (one JSON object a line) for the code on ``sys.path``."""
    import torch

    torch.set_num_threads(int(os.environ.get("WF_BENCH_THREADS", 1) or 1))
    cases = _Cases(args.batch_size, args.batch_length, args.seed, _settings(args.set))

    def handle(request: dict) -> dict:
        out = cases.time(request["key"], request["updates"])
        return {**out, "params": cases.params[request["key"]]}

    serve(handle)


def _worker_args(args, settings: list[str]) -> list[str]:
    """Command-line arguments of a worker with the agent ``settings``."""
    cmd = ["--batch", args.batch, "--seed", str(args.seed)]
    for setting in settings:
        cmd += ["--set", setting]
    return cmd


def _settings(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> agent overrides."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set/--ab: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks dreamerv3_speed")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    parser.add_argument("--updates", type=int, default=1, help="updates timed per round")
    parser.add_argument("--presets", default="size1m,size12m")
    parser.add_argument("--units", default="",
                        help="comma list of model.units to stack on each preset ('' = preset)")
    parser.add_argument("--inputs", default="vector,pixels,pixels-strided",
                        help="pixels: the reference CNN (stride 1 + max-pool); pixels-strided: "
                             "model.cnn_strided=true")
    parser.add_argument("--batch", default="16x64", help="windows x rows per update")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", default="", metavar="REV",
                        help="also time the src/ of this git revision, interleaved")
    parser.add_argument("--ab", default="", metavar="KEY=VALUE",
                        help="instead of --compare: the working tree with this agent setting "
                             "(old) against the working tree as it is (new), interleaved")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="agent setting for every timed case (repeatable); precision=bf16 "
                             "sets the training precision (train.precision)")
    parser.add_argument("--name", default="", help="result file name (default dreamerv3_speed, "
                                                   "dreamerv3_speed_compare with --compare)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_size, args.batch_length = (int(x) for x in args.batch.split("x"))
    if args.worker:
        _worker(args)
        return
    started = time.time()
    torch.set_num_threads(int(os.environ.get("WF_BENCH_THREADS", 1) or 1))
    batch_size, batch_length = args.batch_size, args.batch_length
    presets = args.presets.split(",")
    inputs = args.inputs.split(",")
    units = args.units.split(",")
    keys = _case_keys(presets, units, inputs)
    load_before = os.getloadavg()
    if args.compare or args.ab:
        _compare(args, keys, started, load_before)
        return
    cases = _Cases(batch_size, batch_length, args.seed, _settings(args.set))
    for key in keys:
        cases.get(key)
        print(f"{key}: {cases.params[key]['total'] / 1e6:.2f}M parameters", flush=True)
    params = cases.params
    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for key in keys:
            out = cases.time(key, args.updates)
            ms, cpu_ms = out["ms"], out["cpu_ms"]
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
    name = args.name or "dreamerv3_speed"
    fig.savefig(plot_path(name), dpi=120)
    path = write_result(name, {
        "seed": args.seed, "rounds": args.rounds, "updates_per_round": args.updates,
        "batch": f"{batch_size} x {batch_length}", "imagination": "15 steps from every "
        "posterior state (batch x length starts)", "threads": torch.get_num_threads(),
        "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                   "end": [round(v, 2) for v in os.getloadavg()]},
        "note": load_note([(r["cpu_ms_per_update_median"], r["ms_per_update_median"])
                           for r in results.values()]),
        "settings": args.set, "results": results}, started)
    print(f"wrote {path}")


def _compare(args, keys: list[str], started: float, load_before) -> None:
    """Old (``--compare REV``) and new code in two workers, interleaved round by round."""
    import numpy as np
    import torch

    rows: dict[str, dict[str, list[float]]] = {k: {} for k in keys}
    params = {}
    with old_and_new("benchmarks.dreamerv3_speed", None if args.ab else args.compare,
                     _worker_args(args, args.set + ([args.ab] if args.ab else [])),
                     _worker_args(args, args.set)) as versions:
        names = list(versions)
        for key in keys:  # build and warm up every case in both workers first
            for name in names:
                out = versions[name].request({"key": key, "updates": 1})
                params[key] = out["params"]
                print(f"{key} [{name}] built: {out['params']}", flush=True)
        for r, key, name, out in interleave(versions, keys, args.rounds,
                                            lambda k: {"key": k, "updates": args.updates}):
            rows[key].setdefault(f"{name}_ms", []).append(out["ms"])
            rows[key].setdefault(f"{name}_cpu_ms", []).append(out["cpu_ms"])
            print(f"round {r} {key} [{name}]: {out['ms']:.0f} ms wall, "
                  f"{out['cpu_ms']:.0f} ms CPU", flush=True)
    old, new = names
    old_label = f"working tree, {args.ab}" if args.ab else args.compare
    results = {}
    for key in keys:
        row = rows[key]
        cpu_ratios = [a / b for a, b in zip(row[f"{old}_cpu_ms"], row[f"{new}_cpu_ms"],
                                            strict=True)]
        wall_ratios = [a / b for a, b in zip(row[f"{old}_ms"], row[f"{new}_ms"], strict=True)]
        preset, kind = key.split("_")
        results[key] = {
            "preset": preset, "inputs": kind, "parameters": params[key],
            **{f"{name}_{unit}_median": round(statistics.median(row[f"{name}_{unit}"]), 1)
               for name in names for unit in ("ms", "cpu_ms")},
            **{f"{name}_{unit}_rounds": [round(v, 1) for v in row[f"{name}_{unit}"]]
               for name in names for unit in ("ms", "cpu_ms")},
            "speedup_cpu_median": round(statistics.median(cpu_ratios), 3),
            "speedup_cpu_rounds": [round(v, 3) for v in cpu_ratios],
            "speedup_wall_median": round(statistics.median(wall_ratios), 3),
            "sheeprl_xs_ms_per_update": PEERS_S[kind.split("-")[0]] * 1000}
        print(f"{key}: {old} {results[key][f'{old}_cpu_ms_median']:.0f} ms CPU, {new} "
              f"{results[key][f'{new}_cpu_ms_median']:.0f} ms CPU; speedup (median of per-round "
              f"ratios) {results[key]['speedup_cpu_median']:.2f}x CPU, "
              f"{results[key]['speedup_wall_median']:.2f}x wall", flush=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(keys))
    for i, name in enumerate(names):
        ax.bar(x + (i - 0.5) * 0.4, [results[k][f"{name}_cpu_ms_median"] for k in keys], 0.4,
               label=f"{name} ({old_label if name == 'old' else 'working tree'})")
    for k, xi in zip(keys, x, strict=True):
        ax.text(xi, results[k][f"{old}_cpu_ms_median"] * 1.05,
                f"{results[k]['speedup_cpu_median']:.2f}x", ha="center", fontsize=8)
    for kind, seconds in PEERS_S.items():
        if any(k.endswith("_" + kind) or k.endswith("_" + kind + "-strided") for k in keys):
            ax.axhline(seconds * 1000, ls="--", lw=0.8, color="C3" if kind == "pixels" else "C2",
                       label=f"sheeprl XS, {kind} (wall)")
    ax.set_xticks(x, [k.replace("_", "\n") for k in keys])
    ax.set_ylabel("process CPU ms per update (median)")
    ax.set_title(f"DreamerV3 update, 1 thread, batch {args.batch_size} x {args.batch_length}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = args.name or "dreamerv3_speed_compare"
    fig.savefig(plot_path(name), dpi=120)
    path = write_result(name, {
        "seed": args.seed, "rounds": args.rounds, "updates_per_round": args.updates,
        "batch": f"{args.batch_size} x {args.batch_length}",
        "compared": {old: old_label, new: "working tree"}, "settings": args.set,
        "threads": torch.get_num_threads(),
        "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                   "end": [round(v, 2) for v in os.getloadavg()]},
        "note": "one worker process per code version, same cases and data; each round times "
                "both versions on each case back to back (alternating the order); speedup = "
                "median over rounds of old / new process CPU time",
        "results": results}, started)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
