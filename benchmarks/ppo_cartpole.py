"""PPO on gymnasium CartPole-v1 (native NumPy vector env), 3 seeds: wall time to a greedy
evaluation return >= 475 and the final return over 100 episodes.

Settings: rl-zoo's tuned CartPole PPO (8 envs x 32 steps, 20 epochs of one minibatch, gamma
0.98, GAE 0.8, no entropy bonus, Adam 1e-3 annealed), 100k steps. The peer figure to compare
with is sheeprl PPO's ~22 s from launch on this kind of machine
(``shared/anchors/peer_baselines_cpu.md``).
"""

from __future__ import annotations

from benchmarks.ppo_gym import main_for

TARGET = 475.0


def config():
    from worldflux.rl import PPOConfig

    return PPOConfig(num_envs=8, rollout_steps=32, minibatches=1, epochs=20, gamma=0.98,
                     gae_lambda=0.8, ent_coef=0.0, learning_rate=1e-3)


def main(argv: list[str] | None = None) -> None:
    main_for("ppo_cartpole", "CartPole-v1", config(), TARGET, "PPO on CartPole-v1 (3 seeds)",
             default_steps=100_000, eval_every=25, argv=argv)
