"""The ONNX + manifest bundle reproduces PyTorch's actions in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from worldflux.export.rl_policy import OnnxRLPolicy, export_rl_policy  # noqa: E402
from worldflux.rl import PPO, PolicyConfig, PPOConfig, make_batched_env  # noqa: E402


def test_exported_puzzle_policy_reproduces_masked_actions(tmp_path):
    env = make_batched_env("puzzle/sliding-3x3", 64, seed=0, depth=6)
    ppo = PPO(env, PPOConfig(num_envs=64, rollout_steps=8,
                             policy=PolicyConfig(normalize_obs=True)), seed=0)
    ppo.update(ppo.collect())  # non-trivial weights and normaliser statistics
    path = tmp_path / "puzzle.onnx"
    manifest = export_rl_policy(ppo.policy, env.observation_space, env.action_space, path,
                                action_mask=True)
    on_disk = json.loads((tmp_path / "puzzle.onnx.json").read_text())
    assert on_disk["action_space"] == {"type": "discrete", "n": 4}
    assert on_disk["observation_space"]["shape"] == [81] and on_disk["action_mask"] is True
    assert manifest["max_abs_diff"]["action_mismatches"] == 0
    runner = OnnxRLPolicy(path)
    obs, info = env.reset(seed=3)
    for _ in range(20):  # real observations and masks along a trajectory
        mask = info["action_mask"]
        expected = ppo.act(obs, mask, deterministic=True)
        np.testing.assert_array_equal(runner.act(obs, mask), expected)
        assert mask[np.arange(64), expected].all()
        obs, _, _, _, info = env.step(expected)


def test_exported_gaussian_policy_gives_the_clipped_mean(tmp_path):
    env = make_batched_env("Pendulum-v1", 2, seed=0)
    ppo = PPO(env, PPOConfig(num_envs=2, rollout_steps=4), seed=0)
    with torch.no_grad():
        ppo.policy.heads.action_head.bias.fill_(5.0)  # beyond the bound of 2
    export_rl_policy(ppo.policy, env.observation_space, env.action_space, tmp_path / "p.onnx")
    obs = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    action, mean, value = OnnxRLPolicy(tmp_path / "p.onnx").run(obs)
    np.testing.assert_allclose(mean, ppo.act(obs, deterministic=True), atol=1e-5)
    assert action.shape == (7, 1) and np.all(action == 2.0)
    assert value.shape == (7,)
