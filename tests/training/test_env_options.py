"""``train.env_options``: keyword arguments of the environment, from the CLI to every env."""

from __future__ import annotations

import pytest

from worldflux.core.config import apply_overrides
from worldflux.core.errors import ConfigError
from worldflux.evaluation.collect import collect_episodes
from worldflux.training.config import TrainConfig
from worldflux.training.environment import make_env


def test_env_options_reach_training_and_evaluation_envs():
    config = apply_overrides(TrainConfig(env="worldflux/Nav3D-v0"), {
        "env_options": '{"obstacle_observation": "each", "num_obstacles": 3}'})
    assert config.env_options == {"obstacle_observation": "each", "num_obstacles": 3}
    env = make_env(config, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (18,) and env.unwrapped.config.num_obstacles == 3
    episodes = collect_episodes(config, "random", 1, seed=5, max_steps=5)
    assert episodes[0]["obs"].shape == (6, 18)
    with pytest.raises(ConfigError, match="env_options"):
        apply_overrides(TrainConfig(), {"env_options": "[1, 2]"})


def test_unknown_env_option_is_named():
    config = TrainConfig(env="worldflux/Nav3D-v0", env_options={"obstacle_obs": "each"})
    with pytest.raises(Exception, match="obstacle_obs"):
        make_env(config, seed=0)
