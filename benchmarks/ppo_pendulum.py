"""PPO with Gaussian actions on gymnasium Pendulum-v1, 3 seeds: wall time to a greedy
evaluation return >= -250 and the final return over 100 episodes.

Settings: 8 envs x 256 steps, 10 epochs of 32 minibatches, gamma 0.9, GAE 0.95, no entropy
bonus, Adam 1e-3 annealed, observation normalisation, rewards x 0.1, no value clipping, initial
log-std 0 (gamma, lambda, learning rate and epochs as rl-zoo's tuned Pendulum PPO).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import write_result
from benchmarks.ppo_gym import plot, run_seed, summarise

TARGET = -250.0


def config():
    from worldflux.rl import PolicyConfig, PPOConfig

    return PPOConfig(num_envs=8, rollout_steps=256, minibatches=32, epochs=10, gamma=0.9,
                     gae_lambda=0.95, ent_coef=0.0, learning_rate=1e-3, clip_value=False,
                     reward_scale=0.1,
                     policy=PolicyConfig(normalize_obs=True, init_log_std=0.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ppo_pendulum")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300_000)
    args = parser.parse_args(argv)
    started = time.time()
    rows = [run_seed("Pendulum-v1", config(), s, args.steps, TARGET, eval_every=5,
                     eval_episodes=20, stop_at_target=False) for s in args.seeds]
    summary = summarise(rows, TARGET)
    plot("ppo_pendulum", rows, TARGET, "PPO (Gaussian) on Pendulum-v1 (3 seeds)")
    from worldflux.core.config import to_dict

    path = write_result("ppo_pendulum", {"target": TARGET, "config": to_dict(config()),
                                         "summary": summary, "seeds": rows}, started)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
