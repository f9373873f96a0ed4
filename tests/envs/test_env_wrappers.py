"""Wrappers: action repeat, action normalisation, pixels, time-limit truncation."""

from __future__ import annotations

import os

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from worldflux.envs import ActionRepeat, NormalizeAction, make
from worldflux.envs.wrappers import ChannelFirst, StateObservation


class CountingEnv(gymnasium.Env):
    """Reward = step index (1, 2, 3, ...); terminates after ``length`` steps; records actions."""

    def __init__(self, length: int = 10, low=(-2.0, 0.0), high=(2.0, 10.0)) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(np.array(low), np.array(high), dtype=np.float64)
        self.length = length
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action))
        self.t += 1
        return np.full(1, self.t, np.float32), float(self.t), self.t >= self.length, False, {}


def test_action_repeat_sums_rewards_and_stops_at_termination():
    env = ActionRepeat(CountingEnv(length=5), 2)
    env.reset()
    _, reward, terminated, _, _ = env.step(np.zeros(2))
    assert reward == 1.0 + 2.0 and not terminated
    env.step(np.zeros(2))  # steps 3 and 4
    obs, reward, terminated, truncated, _ = env.step(np.zeros(2))
    assert reward == 5.0  # stopped after step 5, not 5 + 6
    assert terminated and not truncated
    assert obs[0] == 5.0 and len(env.unwrapped.actions) == 5


def test_action_repeat_rejects_bad_repeat():
    with pytest.raises(ValueError, match="repeat"):
        ActionRepeat(CountingEnv(), 0)


def test_normalize_action_maps_unit_box_to_true_bounds():
    inner = CountingEnv()
    env = NormalizeAction(inner)
    assert env.action_space == spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    env.reset()
    for action, expected in (([-1, -1], [-2, 0]), ([1, 1], [2, 10]), ([0, 0.5], [0, 7.5])):
        env.step(np.array(action, np.float32))
        np.testing.assert_allclose(inner.actions[-1], expected)
        assert inner.actions[-1].dtype == np.float64
    env.step(np.array([5.0, -5.0], np.float32))  # clipped to [-1, 1] first
    np.testing.assert_allclose(inner.actions[-1], [2, 0])


def test_normalize_action_passes_discrete_through():
    env = NormalizeAction(gymnasium.make("CartPole-v1"))
    assert env.action_space == spaces.Discrete(2)
    assert env.action(1) == 1


def test_normalize_action_rejects_infinite_bounds():
    with pytest.raises(ValueError, match="finite"):
        NormalizeAction(CountingEnv(low=(-np.inf, 0.0)))


def test_pendulum_truncates_at_200_and_never_terminates():
    env = make("Pendulum-v1", seed=0)
    env.reset()
    flags = []
    for _ in range(200):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        flags.append((terminated, truncated))
    assert flags[-1] == (False, True)
    assert not any(terminated or truncated for terminated, truncated in flags[:-1])


def test_max_episode_steps_counts_inner_steps_before_action_repeat():
    env = make("Pendulum-v1", seed=0, max_episode_steps=10, action_repeat=3)
    env.reset()
    results = [env.step(env.action_space.sample())[2:4] for _ in range(4)]
    assert results == [(False, False)] * 3 + [(False, True)]  # 3 + 3 + 3 + 1 inner steps


def test_cartpole_termination_is_not_truncation():
    env = make("CartPole-v1", seed=0)
    env.reset()
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(0)  # always push left: falls quickly
    assert terminated and not truncated


def test_state_observation_flattens_dict_in_sorted_key_order():
    class DictEnv(gymnasium.Env):
        observation_space = spaces.Dict(
            {"velocity": spaces.Box(-1, 1, (2,)), "angle": spaces.Box(-1, 1, (1, 1))}
        )
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return {"velocity": np.array([0.1, 0.2]), "angle": np.array([[0.3]])}, {}

    env = StateObservation(DictEnv())
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and env.observation_space.shape == (3,)
    np.testing.assert_allclose(obs, [0.3, 0.1, 0.2], rtol=1e-6)


def test_channel_first_adds_channel_axis():
    class ImageEnv(gymnasium.Env):
        observation_space = spaces.Box(0, 255, (4, 6), np.uint8)
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return np.arange(24, dtype=np.uint8).reshape(4, 6), {}

    env = ChannelFirst(ImageEnv())
    obs, _ = env.reset()
    assert env.observation_space.shape == (1, 4, 6) and obs.shape == (1, 4, 6)
    assert obs.dtype == np.uint8 and obs[0, 1, 2] == 8


def test_pixel_observation_from_mujoco_env_is_uint8_chw():
    pytest.importorskip("mujoco")
    pytest.importorskip("imageio")  # gymnasium's MuJoCo renderer imports it
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = make("InvertedPendulum-v5", obs_type="image", image_size=32, seed=0)
    obs, _ = env.reset()
    assert env.observation_space.shape == (3, 32, 32)
    assert obs.shape == (3, 32, 32) and obs.dtype == np.uint8
    assert obs.std() > 1.0  # a real picture, not a constant frame
    env.close()


def test_stacked_frames_show_motion_and_start_from_copies():
    from worldflux.core.errors import ConfigError

    env = make("worldflux/Nav3D-v0", obs_type="image", frame_stack=2, seed=0, gust_std=0.0)
    assert env.observation_space.shape == (6, 64, 64)
    obs, _ = env.reset()
    assert obs.shape == (6, 64, 64) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[:3], obs[3:])  # the first frame fills every slot
    previous = obs[3:].copy()
    obs, *_ = env.step(np.array([1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(obs[:3], previous)  # oldest first: the frame before
    assert np.any(obs[3:] != obs[:3])  # the body moved between the two frames
    assert env.observation_space.contains(obs)
    with pytest.raises(ConfigError, match="frame_stack"):
        make("worldflux/Nav3D-v0", frame_stack=2)  # state observations are not stacked
    with pytest.raises(ConfigError, match="frame_stack"):
        make("worldflux/Nav3D-v0", obs_type="image", frame_stack=0)
