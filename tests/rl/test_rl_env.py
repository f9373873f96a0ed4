"""The batched env interface over gymnasium envs and the env registry."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from worldflux.core.errors import RegistryError
from worldflux.rl.env import BatchedEnv, GymnasiumAdapter, make_batched_env
from worldflux.rl.evaluate import run_episodes


def test_native_vector_cartpole_marks_reset_steps_as_skip():
    env = make_batched_env("CartPole-v1", 4, seed=0)
    assert isinstance(env, BatchedEnv) and env.next_step_reset
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 4) and obs.dtype == np.float32
    ended_before = np.zeros(4, dtype=bool)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))
        assert np.array_equal(info["skip"], ended_before)
        done = terminated | truncated
        if done.any():
            assert np.array_equal(info["final_obs"][done], obs[done])
        ended_before = done
    assert info["skip"].dtype == bool


def test_sync_vector_pendulum_gives_final_obs_and_clips_actions():
    env = make_batched_env("Pendulum-v1", 3, seed=0)
    assert not env.next_step_reset
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(np.full((3, 1), 10.0))
    assert truncated.all()
    assert info["final_obs"].shape == (3, 3) and not np.array_equal(info["final_obs"], obs)
    assert np.all(reward <= 0)


def test_single_env_adapter_and_run_episodes():
    env = GymnasiumAdapter(gymnasium.make("CartPole-v1"))
    assert env.num_envs == 1
    result = run_episodes(make_batched_env("CartPole-v1", 5, seed=1),
                          lambda obs, mask: np.zeros(len(obs), dtype=np.int64), seed=1)
    assert result["returns"].shape == (5,) and np.all(result["returns"] >= 8)
    assert np.array_equal(result["returns"], result["lengths"])


def test_native_ids_and_unknown_ids():
    env = make_batched_env("puzzle/sliding-3x3", 2, seed=0, depth=4)
    assert env.config.depth == 4
    assert make_batched_env("game/connect4", 2).action_space.n == 7
    with pytest.raises(RegistryError, match="sliding-3x3"):
        make_batched_env("puzzle/sliding-3x4", 2)
    with pytest.raises(RegistryError):
        make_batched_env("NoSuchEnv-v0", 2)
