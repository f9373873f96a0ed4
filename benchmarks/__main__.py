"""``python -m benchmarks NAME [options]``; ``python -m benchmarks list`` shows the names."""

from __future__ import annotations

import importlib
import os
import sys

BENCHMARKS = {
    "planning_speed": "ms per PETS MPC decision (CEM-500 x 5, H15, 20 particles) vs mbrl-lib",
    "pets_pendulum": "PETS + CEM learning on Pendulum-v1, 15 episodes, 3 seeds",
    "pets_cartpole_swingup": "PETS on dm_control cartpole-swingup, 20 episodes, vs published curves",
    "icem_vs_cem": "iCEM vs CEM on the same learned cartpole-swingup model: return per samples",
    "precision_speed": "bf16 autocast vs fp32: ms per PETS ensemble optimiser step, same run",
    "nav3d_mpc": "PETS MPC on Nav3D (state), 3 seeds: success, and risk-averse vs neutral collisions",
    "nav3d_fidelity": "open-loop fidelity, calibration and OOD of 4 dynamics families on Nav3D",
    "nav3d_pixel_mpc": "MPC from 64x64 stacked frames vs from state on Nav3D: success, decisions/s",
    "nav3d_latent": "state autoencoder error; latent vs raw-observation dynamics on Nav3D, 3 seeds",
    "replay_memory": "peak memory of a 1M-frame 64x64x3 replay buffer: in RAM vs on disk",
    "tdmpc2_speed": "ms per TD-MPC2 update (batch 256, H3) and MPPI decision, 1M/5M, 1-2 threads",
    "tdmpc2_pendulum": "TD-MPC2's CPU test recipe on Pendulum-v1 over seeds and budgets: margin over random",
    "tdmpc2_dmc": "TD-MPC2 on dm_control (cartpole-swingup ...), seeds side by side, vs published",
    "dreamerv3_dmc": "DreamerV3 on dm_control, state or --pixels, seeds side by side, vs published",
    "token_games": "token family on Breakout64/Collect64: history 1 vs 4, rollouts, two games",
    "token_speed": "token family: frames/s parallel vs causal decoding with and without KV cache",
    "ppo_cartpole": "PPO on CartPole-v1, 3 seeds: wall time to greedy return >= 475",
    "ppo_pendulum": "PPO (Gaussian) on Pendulum-v1, 3 seeds: wall time to greedy return >= -250",
    "ppo_puzzle": "PPO on the 3x3 sliding puzzle (depth 32, 95% solved) vs TwisteRL, + collection",
    "alphazero_games": "AlphaZero: tic-tac-toe vs minimax, connect-four vs random, 3x3 puzzle",
    "dreamerv3_speed": "ms per DreamerV3 update (16 x 64, H15), vector and 64x64 pixels, size1m/12m",
    "dreamerv3_cartpole": "DreamerV3 size1m on CartPole-v1: return vs env steps, one seed per run",
    "dreamerv3_heads": "updates DreamerV3's zero-init two-hot reward/critic heads need, by width",
    "dreamerv3_pixel_probe": "world-model updates DreamerV3 needs to draw the cart in 64x64 pixels",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("list", "-h", "--help"):
        for name, text in BENCHMARKS.items():
            print(f"{name:24s} {text}")
        return
    name = sys.argv[1]
    if name not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    threads = int(os.environ.get("WF_BENCH_THREADS", 0))
    if threads:
        # On a loaded 2-core machine, one thread per process avoids OpenMP barrier stalls.
        import torch

        torch.set_num_threads(threads)
    importlib.import_module(f"benchmarks.{name}").main(sys.argv[2:])


if __name__ == "__main__":
    main()
