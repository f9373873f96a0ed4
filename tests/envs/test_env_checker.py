"""check_env catches broken custom envs and says what is wrong."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from worldflux.core.errors import EnvCheckError
from worldflux.envs import check_env, make


class GoodEnv(gymnasium.Env):
    """A correct little env; subclasses below break one thing each."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return self.np_random.uniform(-1, 1, size=3).astype(np.float32)

    def step(self, action):
        self.t += 1
        return self._obs(), 0.5, False, self.t >= 5, {}

    def render(self):
        return np.zeros((8, 8, 3), np.uint8)


def test_good_env_and_real_envs_pass():
    check_env(GoodEnv())
    check_env(GoodEnv(render_mode="rgb_array"), obs_type="image")
    check_env(make("Pendulum-v1"))
    check_env(make("CartPole-v1"))


class NoObservationSpace(GoodEnv):
    def __init__(self):
        super().__init__()
        del self.observation_space


class ListActionSpace(GoodEnv):
    def __init__(self):
        super().__init__()
        self.action_space = [-1.0, 1.0]


class InfiniteActionBounds(GoodEnv):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)


class OldResetApi(GoodEnv):
    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed)[0]


class OldStepApi(GoodEnv):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class Float64Obs(GoodEnv):
    def step(self, action):
        obs, *rest = super().step(action)
        return (obs.astype(np.float64), *rest)


class WrongShapeObs(GoodEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return obs[:2], info


class NanObs(GoodEnv):
    def step(self, action):
        obs, *rest = super().step(action)
        obs[1] = np.nan
        return (obs, *rest)


class OutOfBoundsObs(GoodEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        obs[2] = 11.0
        return obs, info


class ArrayReward(GoodEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, np.array([0.5]), terminated, truncated, info


class InfiniteReward(GoodEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("inf"), terminated, truncated, info


class IntFlags(GoodEnv):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, int(terminated), truncated, info


class NotDeterministic(GoodEnv):
    def _obs(self):
        return np.random.uniform(-1, 1, size=3).astype(np.float32)  # ignores the seed


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        (NoObservationSpace(), {}, "env has no observation_space"),
        (ListActionSpace(), {}, r"action_space is a list .*gymnasium.spaces.Space"),
        (InfiniteActionBounds(), {}, r"action_space.low is not finite at index \[0, 1\]"),
        (OldResetApi(), {}, r"reset\(\) must return \(obs, info\), got ndarray"),
        (OldStepApi(), {}, r"must return 5 values .* got 4 values \(old gym API"),
        (Float64Obs(), {}, r"dtype float64 but observation_space expects dtype=float32"),
        (WrongShapeObs(), {}, r"reset\(\): observation has shape \(2,\) but .*shape=\(3,\)"),
        (NanObs(), {}, r"observation is not finite: 1 NaN/inf value\(s\), first at index \(1,\)"),
        (OutOfBoundsObs(), {}, r"outside observation_space bounds at index \(2,\): value 11.0"),
        (ArrayReward(), {}, r"reward must be a scalar float, got ndarray shape \(1,\)"),
        (InfiniteReward(), {}, r"reward is not finite \(inf\)"),
        (IntFlags(), {}, r"terminated must be a bool, got int"),
        (NotDeterministic(), {}, r"seeding is not deterministic: reset\(seed="),
        (GoodEnv(), {"obs_type": "image"}, r"render_mode is None, expected 'rgb_array'"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, gymnasium.Env) else None,
)
def test_broken_env_is_reported(env, kwargs, message):
    with pytest.raises(EnvCheckError, match=message):
        check_env(env, **kwargs)


def test_render_returning_wrong_frame_is_reported():
    class BadRender(GoodEnv):
        def render(self):
            return np.zeros((8, 8), np.float32)

    with pytest.raises(
        EnvCheckError, match=r"render\(\) returned ndarray dtype=float32 shape=\(8, 8\)"
    ):
        check_env(BadRender(render_mode="rgb_array"), obs_type="image")
