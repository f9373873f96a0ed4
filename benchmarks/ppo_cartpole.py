"""PPO on gymnasium CartPole-v1 (native NumPy vector env), 3 seeds: wall time to a greedy
evaluation return >= 475 and the final return over 100 episodes.

Settings: rl-zoo's tuned CartPole PPO (8 envs x 32 steps, 20 epochs of one minibatch, gamma
0.98, GAE 0.8, no entropy bonus, Adam 1e-3 annealed), 100k steps. The peer figure to compare
with is sheeprl PPO's ~22 s from launch on this kind of machine
(``shared/anchors/peer_baselines_cpu.md``).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import write_result
from benchmarks.ppo_gym import plot, run_seed, summarise

TARGET = 475.0


def config():
    from worldflux.rl import PPOConfig

    return PPOConfig(num_envs=8, rollout_steps=32, minibatches=1, epochs=20, gamma=0.98,
                     gae_lambda=0.8, ent_coef=0.0, learning_rate=1e-3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ppo_cartpole")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    started = time.time()
    rows = [run_seed("CartPole-v1", config(), s, args.steps, TARGET, eval_every=25,
                     eval_episodes=20, stop_at_target=False) for s in args.seeds]
    summary = summarise(rows, TARGET)
    plot("ppo_cartpole", rows, TARGET, "PPO on CartPole-v1 (3 seeds)")
    from worldflux.core.config import to_dict

    path = write_result("ppo_cartpole", {"target": TARGET, "config": to_dict(config()),
                                         "summary": summary, "seeds": rows}, started)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
