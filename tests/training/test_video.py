"""Videos: evaluation episodes and imagined rollouts written as GIFs, read back with Pillow.

Pendulum-v1 renders through pygame, which the test machines may lack; :class:`DrawnPendulum`
renders the same episodes with numpy (the rod at the env's true angle) so that the frames
follow the real dynamics. Real renderers are covered where installed (pygame, MuJoCo).
"""

from __future__ import annotations

import importlib.util

import gymnasium
import numpy as np
import pytest
import torch

from worldflux import envs
from worldflux.agents import build_agent
from worldflux.core.errors import ConfigError, DataError
from worldflux.data import ReplayBuffer
from worldflux.training.config import TrainConfig
from worldflux.training.environment import env_action, specs_for
from worldflux.training.video import (
    imagined_rollout,
    make_render_env,
    open_loop_mse,
    record_episode,
    side_by_side_plot_frames,
    write_gif,
    write_videos,
)

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageSequence  # noqa: E402

SIZE = 48
AGENT = {"model.hidden_size": "32", "model.num_layers": "2", "model.ensemble_size": "3",
         "planner.population": "24", "planner.elites": "4", "planner.iterations": "2",
         "planner.horizon": "5", "num_particles": "2", "max_epochs": "40", "patience": "40",
         "batch_size": "32", "seed_steps": "0"}


class DrawnPendulum(gymnasium.Wrapper):
    """``render()`` draws the pendulum rod from the env's true angle: ``uint8 [SIZE, SIZE, 3]``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def render(self) -> np.ndarray:
        theta = float(self.env.unwrapped.state[0])
        frame = np.full((SIZE, SIZE, 3), 255, np.uint8)
        c = SIZE // 2
        for r in np.linspace(0, SIZE * 0.4, 40):
            x, y = int(round(c + r * np.sin(theta))), int(round(c - r * np.cos(theta)))
            frame[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = (200, 60, 40)
        return frame


def pendulum(seed: int = 0) -> gymnasium.Env:
    return DrawnPendulum(envs.make("Pendulum-v1", seed=seed))


def make_agent(env):
    obs_spec, action_spec = specs_for(env)
    torch.manual_seed(0)
    return build_agent("pets", obs_spec, action_spec, device=torch.device("cpu"), seed=0,
                       overrides=AGENT)


@pytest.fixture(scope="module")
def agents():
    """``(trained, untrained)`` PETS agents; the trained one fitted on 600 random steps."""
    env = pendulum(seed=1)
    trained, untrained = make_agent(env), make_agent(env)
    obs_spec, action_spec = specs_for(env)
    buffer = ReplayBuffer(1000, obs_spec.shape, action_spec.dim, seed=0)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs, _ = env.reset(seed=100 + episode)
        buffer.add(obs, np.zeros(1, np.float32), 0.0, False, False, True)
        done = False
        while not done:
            action, stored = env_action(rng.uniform(-1, 1, 1), action_spec)
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            buffer.add(obs, stored, float(reward), terminated, truncated, False)
    metrics = trained.train_model(buffer)
    assert metrics["model/transitions"] == 600
    env.close()
    return trained, untrained


def gif_frames(path) -> tuple[list[np.ndarray], list[int]]:
    with Image.open(path) as image:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
        durations = [f.info["duration"] for f in ImageSequence.Iterator(image)]
    return frames, durations


def test_record_episode_aligns_frames_observations_and_actions(agents):
    trained, _ = agents
    env = pendulum()
    frames, obs, actions, total = record_episode(trained, env, seed=7, max_steps=30)
    assert frames.shape == (31, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert obs.shape == (31, 3) and actions.shape == (30, 1) and actions.dtype == np.float32
    first, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs[0], first)
    # Replaying the recorded actions reproduces the observations and the return.
    replay_total = 0.0
    for t, action in enumerate(actions):
        o, reward, *_ = env.step(action)
        np.testing.assert_allclose(o, obs[t + 1], rtol=1e-6)
        replay_total += reward
    assert total == pytest.approx(replay_total)
    assert np.all(np.abs(actions) <= 1.0)
    moving = sum(not np.array_equal(frames[t], frames[t + 1]) for t in range(30))
    assert moving >= 20


def test_imagined_rollout_of_a_trained_model_beats_an_untrained_one(agents):
    trained, untrained = agents
    _, obs, actions, _ = record_episode(trained, pendulum(), seed=11, max_steps=40)

    imagined = imagined_rollout(trained.world_model, obs, actions)
    baseline = imagined_rollout(untrained.world_model, obs, actions)

    assert imagined.shape == obs.shape == (41, 3) and imagined.dtype == np.float32
    np.testing.assert_array_equal(imagined[0], obs[0])  # PETS encodes observations as they are
    # Deterministic (ensemble mean): the same rollout twice is identical.
    np.testing.assert_array_equal(imagined, imagined_rollout(trained.world_model, obs, actions))
    trained_mse, untrained_mse = open_loop_mse(obs, imagined), open_loop_mse(obs, baseline)
    assert trained_mse.shape == (40,)
    assert trained_mse[0] < 0.1 * untrained_mse[0]
    assert trained_mse[:10].mean() < 0.1 * untrained_mse[:10].mean()
    assert trained_mse.mean() < 0.1 * untrained_mse.mean()
    assert trained.world_model.training == untrained.world_model.training


def test_write_videos_writes_both_gifs_and_leaves_the_agent_untouched(agents, tmp_path):
    trained, _ = agents
    before = trained.state_dict()
    generator_state = trained.generator.get_state().clone()
    torch_state = torch.get_rng_state().clone()

    result = write_videos(tmp_path, trained, pendulum(), step=4000, seed=3, max_steps=40,
                          names=["cos", "sin", "velocity"])

    eval_path, imagined_path = result["eval"], result["imagined"]
    assert eval_path == tmp_path / "videos" / "eval_step00004000.gif"
    assert imagined_path == tmp_path / "videos" / "imagined_step00004000.gif"
    frames, durations = gif_frames(eval_path)
    assert frames[0].shape == (SIZE, SIZE, 3)
    assert 20 <= len(frames) <= 41 and sum(durations) == 41 * 50  # 20 fps from the metadata
    assert not np.array_equal(frames[0], frames[-1])
    plots, plot_durations = gif_frames(imagined_path)
    assert len(plots) == 41 and sum(plot_durations) == 41 * 50  # the curves grow every frame
    assert plots[0].shape[1] == 512
    changed = [np.abs(plots[t + 1].astype(int) - plots[t]).sum() > 0 for t in range(40)]
    assert all(changed)

    errors = result["imagined_mse"]
    assert errors.shape == (40,) and result["length"] == 40
    metrics = result["metrics"]
    assert metrics["video/imagined_mse_h1"] == pytest.approx(errors[0])
    assert metrics["video/imagined_mse_h25"] == pytest.approx(errors[24])
    assert "video/imagined_mse_h50" not in metrics  # beyond the recorded episode
    assert metrics["video/return"] == pytest.approx(result["return"])

    assert torch.equal(trained.generator.get_state(), generator_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = trained.state_dict()
    assert after["planner"].keys() == before["planner"].keys()
    for key, value in before["planner"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after["planner"][key], value), key


def test_plot_frames_show_real_and_imagined_curves_growing():
    t = np.linspace(0, 6, 31)
    real = np.stack([np.sin(t), np.cos(t)], 1)
    imagined = real + 0.3
    frames = side_by_side_plot_frames(real, imagined, ["a", "b"])
    assert frames.shape[0] == 31 and frames.dtype == np.uint8 and frames.shape[-1] == 3
    orange = np.array([0xE8, 0x71, 0x0A])

    def orange_pixels(frame):
        return int((np.abs(frame.astype(int) - orange).sum(-1) < 60).sum())

    counts = [orange_pixels(f) for f in frames]
    assert counts[0] < counts[10] < counts[20] < counts[30]
    with pytest.raises(DataError, match="names: got 1 names"):
        side_by_side_plot_frames(real, imagined, ["a"])
    with pytest.raises(DataError, match="expected the real one"):
        side_by_side_plot_frames(real, imagined[:-1])


def test_image_observations_are_shown_real_left_imagined_right():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (5, 3, 8, 10), dtype=np.uint8)
    imagined = rng.integers(0, 256, (5, 3, 8, 10), dtype=np.uint8)
    frames = side_by_side_plot_frames(real, imagined)
    assert frames.shape == (5, 8, 22, 3)
    np.testing.assert_array_equal(frames[:, :, :10], real.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(frames[:, :, 12:], imagined.transpose(0, 2, 3, 1))
    assert np.all(frames[:, :, 10:12] == 255)
    gray = side_by_side_plot_frames(real[:, :1], imagined[:, :1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_write_gif_round_trip_and_errors(tmp_path):
    frames = np.zeros((6, 12, 16, 3), np.uint8)
    for i in range(6):
        frames[i, :, i * 2:i * 2 + 3] = (255, 0, 0)  # a red bar moving right
    path = write_gif(tmp_path / "sub" / "bar.gif", frames, fps=10)
    read, durations = gif_frames(path)
    assert len(read) == 6 and durations == [100] * 6
    for original, back in zip(frames, read, strict=True):
        np.testing.assert_array_equal(back, original)  # two colours survive the palette exactly
    assert sorted(p.name for p in path.parent.iterdir()) == ["bar.gif"]
    with pytest.raises(DataError, match=r"frames: got shape \(12, 16, 3\)"):
        write_gif(tmp_path / "x.gif", frames[0])
    with pytest.raises(DataError, match="expected uint8"):
        write_gif(tmp_path / "x.gif", frames.astype(np.float32))
    with pytest.raises(ConfigError, match="fps: got 0"):
        write_gif(tmp_path / "x.gif", frames, fps=0)


def test_imagined_rollout_checks_shapes(agents):
    trained, _ = agents
    with pytest.raises(DataError, match=r"obs: got shape \(5, 4\)"):
        imagined_rollout(trained.world_model, np.zeros((5, 4)), np.zeros((4, 1)))
    with pytest.raises(DataError, match="one fewer than the observations"):
        imagined_rollout(trained.world_model, np.zeros((5, 3)), np.zeros((5, 1)))


@pytest.mark.filterwarnings("ignore:.*render method without specifying any render mode")
def test_env_without_rgb_rendering_is_a_clear_error(agents):
    trained, _ = agents
    env = envs.make("Pendulum-v1", seed=0)  # render_mode None: render() returns None
    with pytest.raises(ConfigError, match="make_render_env"):
        record_episode(trained, env, seed=0, max_steps=2)


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None,
                    reason="Pendulum-v1 renders with pygame (gymnasium[classic-control])")
def test_pendulum_renders_for_real_through_make_render_env(agents, tmp_path):
    trained, _ = agents
    env = make_render_env(TrainConfig(env="Pendulum-v1"), seed=0)
    result = write_videos(tmp_path, trained, env, step=1, seed=0, max_steps=5, frame_size=64)
    frames, _ = gif_frames(result["eval"])
    assert frames[0].shape == (64, 64, 3)


@pytest.mark.skipif(importlib.util.find_spec("dm_control") is None, reason="needs worldflux[dmc]")
def test_dm_control_renders_through_make_render_env():
    env = make_render_env(TrainConfig(env="dmc/pendulum-swingup"), seed=0, size=32)
    obs_spec, action_spec = specs_for(env)
    agent = build_agent("random", obs_spec, action_spec, device=torch.device("cpu"), seed=0)
    frames, obs, actions, _ = record_episode(agent, env, seed=0, max_steps=6)
    env.close()
    assert frames.shape == (7, 32, 32, 3) and obs.shape == (7, 3) and actions.shape == (6, 1)
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])
