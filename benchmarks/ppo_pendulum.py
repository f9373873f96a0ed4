"""PPO with Gaussian actions on gymnasium Pendulum-v1, 3 seeds: wall time to a greedy
evaluation return >= -250 and the final return over 100 episodes.

Settings: 8 envs x 256 steps, 10 epochs of 32 minibatches, gamma 0.9, GAE 0.95, no entropy
bonus, Adam 1e-3 annealed, observation normalisation, rewards x 0.1, no value clipping, initial
log-std 0 (gamma, lambda, learning rate and epochs as rl-zoo's tuned Pendulum PPO).
"""

from __future__ import annotations

from benchmarks.ppo_gym import main_for

TARGET = -250.0


def config():
    from worldflux.rl import PolicyConfig, PPOConfig

    return PPOConfig(num_envs=8, rollout_steps=256, minibatches=32, epochs=10, gamma=0.9,
                     gae_lambda=0.95, ent_coef=0.0, learning_rate=1e-3, clip_value=False,
                     reward_scale=0.1,
                     policy=PolicyConfig(normalize_obs=True, init_log_std=0.0))


def main(argv: list[str] | None = None) -> None:
    main_for("ppo_pendulum", "Pendulum-v1", config(), TARGET, "PPO (Gaussian) on Pendulum-v1 (3 seeds)",
             default_steps=300_000, eval_every=5, argv=argv)
