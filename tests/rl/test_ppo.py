"""PPO trains for real on tiny budgets: CartPole, the sliding puzzle, a continuous task."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worldflux.rl import POLICIES, PPO, Policy, PolicyConfig, PPOConfig, make_batched_env
from worldflux.rl.evaluate import run_episodes
from worldflux.rl.policy import build_policy


def _greedy(ppo):
    return lambda obs, mask: ppo.act(obs, mask, deterministic=True)


def test_ppo_learns_cartpole_far_above_random():
    env = make_batched_env("CartPole-v1", 8, seed=0)
    # rl-zoo's CartPole settings (a short rollout, many epochs).
    ppo = PPO(env, PPOConfig(rollout_steps=32, minibatches=1, epochs=20, gae_lambda=0.8,
                             gamma=0.98, ent_coef=0.0, learning_rate=1e-3), seed=0)
    history = ppo.learn(20_000)
    assert all(np.isfinite(h["loss/value"]) for h in history)
    result = run_episodes(make_batched_env("CartPole-v1", 10, seed=5), _greedy(ppo), seed=5)
    # A random policy averages ~22. At this budget the greedy return is 130-190 over seeds and
    # CPUs (one thread: seeds 0 / 1 / 2 gave 145 / 186 / 130 on one machine, seed 0 above 150 on
    # another: float rounding differs between CPUs), so the bar sits below that spread.
    assert result["returns"].mean() > 100


def test_ppo_solves_shallow_sliding_puzzles_with_masks():
    env = make_batched_env("puzzle/sliding-3x3", 128, seed=0, depth=4, min_depth=1)
    config = PPOConfig(num_envs=128, rollout_steps=16, learning_rate=1e-3, anneal_lr=False,
                       policy=PolicyConfig(hidden=(128, 128), activation="relu", shared=True))
    ppo = PPO(env, config, seed=0)
    ppo.learn(60_000)
    evaluation = make_batched_env("puzzle/sliding-3x3", 500, seed=9, depth=4)
    result = run_episodes(evaluation, _greedy(ppo), seed=9)
    assert result["success"].mean() > 0.9


def test_ppo_continuous_with_obs_normalisation_and_value_clipping_improves():
    env = make_batched_env("Pendulum-v1", 8, seed=0)
    config = PPOConfig(rollout_steps=64, gamma=0.9, epochs=10, learning_rate=1e-3,
                       ent_coef=0.0, clip_value=True,
                       policy=PolicyConfig(normalize_obs=True))
    ppo = PPO(env, config, seed=0)
    history = ppo.learn(6_000)
    assert ppo.policy.obs_normalizer.count > 5000
    assert abs(float(ppo.policy.obs_normalizer.mean[2])) < 2.0  # angular velocity stats
    assert history[-1]["loss/value"] < history[0]["loss/value"]
    actions = ppo.act(np.zeros((3, 3), dtype=np.float32), deterministic=True)
    assert actions.shape == (3, 1)


def test_conv_policies_and_a_custom_policy():
    board = make_batched_env("game/connect4", 4, seed=0)
    conv2d = build_policy(PolicyConfig(name="conv2d", channels=(8,)), board.observation_space,
                          board.action_space)
    logits, value = conv2d(torch.zeros(5, 2, 6, 7))
    assert logits.shape == (5, 7) and value.shape == (5,)
    from gymnasium import spaces

    conv1d = build_policy(PolicyConfig(name="conv1d"), spaces.Box(0, 1, (3, 10)),
                          spaces.Discrete(4))
    assert conv1d(torch.zeros(2, 3, 10))[0].shape == (2, 4)

    class Linear(Policy):
        def __init__(self, obs_shape, action_dim, continuous, config):
            super().__init__(obs_shape, action_dim, continuous, config)
            self.net = nn.Linear(int(np.prod(obs_shape)), action_dim + 1)

        def forward(self, obs):
            out = self.net(self.normalize(obs).flatten(1))
            return out[:, :-1], out[:, -1]

    POLICIES["test-linear"] = Linear
    try:
        ppo = PPO(board, PPOConfig(num_envs=4, rollout_steps=8,
                                   policy=PolicyConfig(name="test-linear")), seed=0)
        rollout = ppo.collect()
        assert rollout.mask is not None and rollout.mask.shape == (8, 4, 7)
        # Sampled actions are always legal.
        chosen = rollout.mask.gather(2, rollout.actions[..., None])
        assert chosen.all()
        ppo.update(rollout)
    finally:
        del POLICIES["test-linear"]
