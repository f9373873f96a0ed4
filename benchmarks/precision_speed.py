"""bf16 against fp32 training on this CPU: the PETS ensemble's optimiser steps.

One process, the same data, fp32 and bf16 steps interleaved in rounds so that both see the same
machine load; reports the median wall time per optimiser step of each and their ratio, for the
default PETS ensemble (5 members, 3 x 200 SiLU) at the agent's batch size (64 per member) and at
a larger one (256), plus the loss each reaches after the same number of steps (bf16 must learn
as well, not only faster).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

from benchmarks.common import plot_path, pyplot, write_result


def _data(n: int, seed: int):
    """Random-action Pendulum-v1 transitions ``obs [n, 3], action [n, 1], reward [n], next``."""
    import gymnasium as gym
    import numpy as np
    import torch

    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {k: [] for k in ("obs", "action", "reward", "next_obs")}
    for t in range(n):
        action = rng.uniform(-2, 2, 1).astype(np.float32)
        nxt, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action / 2, reward, nxt), strict=True):
            rows[key].append(np.asarray(value, np.float32))
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset(seed=seed + t + 1)
    return {k: torch.as_tensor(np.stack(v)) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> None:
    import torch

    from worldflux.core.precision import MixedPrecision
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.models.pets import PETSConfig, PETSModel

    parser = argparse.ArgumentParser(prog="python -m benchmarks precision_speed")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per precision")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)
    data = _data(5000, args.seed)
    cases = {}
    for batch in (64, 256):
        base = PETSModel(PETSConfig(), ObservationSpec((3,)), ActionSpec(1))
        base.fit_normalizers(data["obs"], data["action"], data["reward"], data["next_obs"])
        runs = {}
        for mode in ("fp32", "bf16"):
            model = copy.deepcopy(base)
            runs[mode] = {"model": model, "amp": MixedPrecision(mode, "cpu"),
                          "opt": torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5),
                          "gen": torch.Generator().manual_seed(args.seed), "times": [],
                          "losses": []}
        per_round = args.steps // args.rounds
        for _ in range(args.rounds):
            for run in runs.values():  # same data order in both precisions
                t0 = time.perf_counter()
                for _ in range(per_round):
                    idx = torch.randint(5000, (5, batch), generator=run["gen"])
                    with run["amp"].autocast():
                        out = run["model"].transition_loss(data["obs"][idx], data["action"][idx],
                                                           data["reward"][idx],
                                                           data["next_obs"][idx])
                    run["opt"].zero_grad(set_to_none=True)
                    run["amp"].backward(out.loss)
                    run["amp"].step(run["opt"], run["model"].named_parameters())
                    run["losses"].append(out.metrics["nll"])
                run["times"].append((time.perf_counter() - t0) / per_round * 1000)
        result = {}
        for mode, run in runs.items():
            held = torch.randint(5000, (1000,), generator=torch.Generator().manual_seed(99))
            mse = run["model"].evaluation_mse(data["obs"][held], data["action"][held],
                                              data["reward"][held], data["next_obs"][held])
            result[mode] = {"ms_per_step_median": round(statistics.median(run["times"]), 3),
                            "ms_per_step_rounds": [round(t, 3) for t in run["times"]],
                            "final_nll_mean_last_20": round(statistics.mean(run["losses"][-20:]), 4),
                            "eval_mse_normalized": round(float(mse.mean()), 5)}
        result["bf16_over_fp32_time"] = round(result["bf16"]["ms_per_step_median"]
                                              / result["fp32"]["ms_per_step_median"], 3)
        cases[f"batch_{batch}"] = result
        print(batch, json.dumps(result))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, r in enumerate(cases.values()):
        for j, mode in enumerate(("fp32", "bf16")):
            ax.bar(i * 3 + j, r[mode]["ms_per_step_median"], color=f"C{j}",
                   label=mode if i == 0 else None)
        ax.text(i * 3 + 0.5, r["fp32"]["ms_per_step_median"] * 1.02,
                f"x{r['bf16_over_fp32_time']:.2f}", ha="center")
    ax.set_xticks([0.5, 3.5], list(cases))
    ax.set_ylabel("ms per optimiser step (median)")
    ax.set_title("PETS ensemble training: bf16 autocast vs fp32 (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path("precision_speed"), dpi=120)
    path = write_result("precision_speed", {
        "seed": args.seed, "steps_per_precision": args.steps, "rounds": args.rounds,
        "model": "PETS 5 x (3 x 200) SiLU, Pendulum-v1 sizes, Adam 1e-3",
        "results": cases}, started)
    print(f"wrote {path}")
