"""make / make_vector / list_envs / env_spec, including dm_control and Atari when installed."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from worldflux.core.errors import ConfigError, RegistryError
from worldflux.envs import env_spec, list_envs, make, make_vector


def test_gymnasium_id_state_obs_float32_and_spec():
    env = make("Pendulum-v1", seed=0)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (3,)
    spec = env_spec(env)
    assert spec["obs_shape"] == (3,) and spec["obs_dtype"] == np.float32
    assert spec["action_kind"] == "continuous" and spec["action_dim"] == 1
    np.testing.assert_array_equal(spec["action_low"], [-1.0])
    np.testing.assert_array_equal(spec["action_high"], [1.0])


def test_discrete_env_spec():
    spec = env_spec(make("CartPole-v1"))
    assert spec["action_kind"] == "discrete" and spec["action_dim"] == 2
    assert spec["action_low"] is None and spec["action_high"] is None


def test_seed_makes_first_reset_and_actions_reproducible():
    first = [make("Pendulum-v1", seed=3) for _ in range(2)]
    obs = [env.reset()[0] for env in first]
    np.testing.assert_array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(first[0].action_space.sample(), first[1].action_space.sample())
    other, _ = make("Pendulum-v1", seed=4).reset()
    assert not np.array_equal(obs[0], other)


def test_unknown_id_lists_close_matches():
    with pytest.raises(RegistryError, match="Pendulum-v1"):
        make("Pendulm-v1")


def test_bad_obs_type_is_config_error():
    with pytest.raises(ConfigError, match="obs_type"):
        make("Pendulum-v1", obs_type="pixels")


def test_list_envs_holds_classic_control_and_no_box2d():
    ids = list_envs()
    assert "Pendulum-v1" in ids and "CartPole-v1" in ids
    assert not any(env_id.startswith("LunarLander") for env_id in ids)
    assert ids == sorted(ids)


def test_make_vector_stacks_and_seeds_each_copy():
    envs = make_vector("Pendulum-v1", 3, seed=0)
    obs, _ = envs.reset()
    assert obs.shape == (3, 3) and obs.dtype == np.float32
    assert len({tuple(row) for row in obs}) == 3  # seeds 0, 1, 2 differ
    obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert reward.shape == (3,) and terminated.dtype == bool and truncated.dtype == bool
    assert env_spec(envs)["obs_shape"] == (3,)
    envs.close()


# ---------------------------------------------------------------- dm_control


def test_dmc_cartpole_swingup_state_is_flat_float32_of_size_5():
    pytest.importorskip("dm_control")
    pytest.importorskip("shimmy")
    for env_id in ("dmc/cartpole-swingup", "dm_control/cartpole-swingup-v0"):
        env = make(env_id, seed=0)
        obs, _ = env.reset()
        assert obs.shape == (5,) and obs.dtype == np.float32
        assert env.observation_space.shape == (5,)
        assert env_spec(env)["action_dim"] == 1
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape == (5,) and np.isfinite(reward)
    assert "dmc/cartpole-swingup" in list_envs()


def test_dmc_episode_ends_by_truncation_at_1000_steps_with_repeat():
    pytest.importorskip("dm_control")
    pytest.importorskip("shimmy")
    env = make("dmc/cartpole-swingup", seed=0, action_repeat=4)
    env.reset()
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    assert steps == 250 and truncated and not terminated


def test_dmc_unknown_task_suggests_close_match():
    pytest.importorskip("dm_control")
    pytest.importorskip("shimmy")
    with pytest.raises(RegistryError, match="dmc/cartpole-swingup"):
        make("dmc/cartpole-swingupp")


def test_dmc_pixels_are_uint8_chw_and_change_over_time():
    pytest.importorskip("dm_control")
    pytest.importorskip("shimmy")
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = make("dmc/cartpole-swingup", obs_type="image", image_size=48, seed=0)
    first, _ = env.reset()
    assert first.shape == (3, 48, 48) and first.dtype == np.uint8
    assert first.std() > 1.0
    for _ in range(20):
        obs, *_ = env.step(np.ones(1, np.float32))
    assert not np.array_equal(first, obs)
    assert env.unwrapped.physics.model.light_castshadow.sum() == 0  # shadows switched off
    env.close()


# ---------------------------------------------------------------- Atari


def test_atari_pong_preprocessed_uint8_chw():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    env = make("atari/pong", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (1, 64, 64) and obs.dtype == np.uint8 and obs.std() > 0
    ale = env.unwrapped
    assert ale._frameskip == 1  # frame skipping happens in AtariPreprocessing
    assert env_spec(env)["action_kind"] == "discrete"
    color = make("atari/pong", seed=0, grayscale=False, image_size=32)
    assert color.reset()[0].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="image"):
        make("atari/pong", obs_type="state")


@pytest.mark.parametrize(
    ("env_id", "module", "extra"),
    [("atari/pong", "ale_py", "atari"), ("dmc/cartpole-swingup", "dm_control", "dmc")],
)
def test_missing_extra_message_names_the_pip_extra(monkeypatch, env_id, module, extra):
    import worldflux.envs.registry as registry

    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    registry._atari_games.cache_clear()
    try:
        with pytest.raises(ImportError, match=rf'pip install "worldflux\[{extra}\]"'):
            make(env_id)
    finally:
        registry._atari_games.cache_clear()
