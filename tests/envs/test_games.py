"""The native 64x64 games: gymnasium form, batched stepping, rules, dataset layout."""

from __future__ import annotations

import numpy as np
import pytest

import worldflux.envs
from worldflux.core.errors import ConfigError
from worldflux.envs.games import GAMES, BreakoutBatch, CollectBatch, collect
from worldflux.envs.games.breakout64 import PADDLE_Y

IDS = ["worldflux/Breakout64-v0", "worldflux/Collect64-v0"]


@pytest.mark.parametrize("env_id", IDS)
def test_make_gives_64x64_frames_and_four_actions(env_id):
    env = worldflux.envs.make(env_id, obs_type="image", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
    assert env.action_space.n == 4
    worldflux.envs.check_env(env)
    for action in range(4):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.shape == (3, 64, 64) and isinstance(reward, float)
        assert not terminated and not truncated and info["lives"] == 3
    state = worldflux.envs.make(env_id, obs_type="state", seed=0)
    vector, _ = state.reset()
    assert vector.dtype == np.float32 and vector.ndim == 1
    small = worldflux.envs.make(env_id, obs_type="image", image_size=32, seed=0)
    assert small.reset()[0].shape == (3, 32, 32)


@pytest.mark.parametrize("env_id", IDS)
def test_listed_and_seeded(env_id):
    assert env_id in worldflux.envs.list_envs()
    a = worldflux.envs.make(env_id, obs_type="image")
    b = worldflux.envs.make(env_id, obs_type="image")
    first_a, first_b = a.reset(seed=3)[0], b.reset(seed=3)[0]
    np.testing.assert_array_equal(first_a, first_b)
    for action in [3, 3, 2, 0, 1] * 4:
        np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])


def test_breakout_paddle_follows_the_arrows_and_bricks_score():
    game = BreakoutBatch(2, seed=0)
    game.reset()
    start = game.paddle.copy()
    game.step(np.array([2, 3]))
    assert game.paddle[0] < start[0] and game.paddle[1] > start[1]
    frame = game.render()
    rows = frame[:, :, PADDLE_Y]  # the paddle's row: [N, 3, 64]
    assert (rows[0].sum(0) > 600).any()
    # A ball sent straight up into the bricks removes one and scores.
    game.ball[0] = (20.0, 31.0)
    game.velocity[0] = (0.0, -1.5)
    total = 0.0
    for _ in range(10):
        total += game.step(np.array([0, 0]))[1][0]
    assert total == 1.0 and game.bricks[0].sum() == 47 and game.score[0] == 1


def test_breakout_missing_the_ball_costs_a_life_and_ends_the_episode():
    game = BreakoutBatch(1, seed=0)
    game.reset()
    terminated = np.zeros(1, bool)
    for _ in range(3):
        game.paddle[:] = 1.0 if game.ball[0, 0] > 32 else 50.0
        game.ball[0] = (game.ball[0, 0], 61.5)
        game.velocity[0, 1] = 1.5
        _, _, terminated, _, info = game.step(np.array([0]))
    assert info["lives"][0] == 0 and terminated[0]


def test_collect_coins_score_and_enemies_cost_lives():
    game = CollectBatch(1, seed=0)
    game.reset()
    game.enemies[:] = (1.0, 60.0)
    game.enemy_velocity[:] = 0.0
    game.coins[0, 0] = game.player[0] + (6.0, 0.0)
    rewards = sum(game.step(np.array([3]))[1][0] for _ in range(3))
    assert rewards == 1.0
    game.enemies[0, 0] = game.player[0] + (4.0, 0.0)
    _, reward, _, _, info = game.step(np.array([3]))
    assert reward[0] == -1.0 and info["lives"][0] == 2


def test_bushes_hide_enemies():
    game = CollectBatch(1, seed=0)
    game.reset()
    game.enemy_velocity[:] = 0.0
    game.enemies[0, 0] = game.bushes[0, 0] + 4.0  # fully under the bush
    game.enemies[0, 1] = (1.0, 60.0)
    frame = game.render()[0].transpose(1, 2, 0)
    red = (frame[..., 0] > 200) & (frame[..., 1] < 80) & (frame[..., 2] < 80)
    x, y = game.enemies[0, 0].astype(int)
    assert not red[y:y + 4, x:x + 4].any()
    assert red.sum() == 16  # only the enemy in the open is drawn


@pytest.mark.parametrize("name", sorted(GAMES))
def test_collect_layout_matches_the_replay_buffer(name):
    game = GAMES[name](8, seed=0, time_limit=30)
    data = collect(game, 70, "scripted", seed=1)
    N, T = 8, 71
    assert data["obs"].shape == (N, T, 3, 64, 64)
    first, ended = data["is_first"], data["terminated"] | data["truncated"]
    assert first[:, 0].all() and ended.any()
    # Every finished episode is followed by a reset row with no action and no reward.
    n, t = np.nonzero(ended[:, :-1])
    assert first[n, t + 1].all()
    assert (data["actions"][first] == -1).all() and (data["rewards"][first] == 0).all()
    assert (data["actions"][~first] >= 0).all()
    assert first.sum() == N + ended[:, :-1].sum()
    # A reset row shows a fresh world: full lives in the top-left corner.
    assert (data["obs"][n, t + 1, 0, 2:4][..., [2, 3, 5, 6, 8, 9]] == 255).all()


@pytest.mark.parametrize("name", sorted(GAMES))
def test_scripted_policy_beats_random(name):
    scripted = collect(GAMES[name](16, seed=0), 150, "scripted", seed=0)["rewards"].sum()
    random = collect(GAMES[name](16, seed=0), 150, "random", seed=0)["rewards"].sum()
    assert scripted > random + 10


def test_bad_actions_are_rejected():
    game = BreakoutBatch(2, seed=0)
    game.reset()
    with pytest.raises(ConfigError, match="expected 0..3"):
        game.step(np.array([0, 4]))
    with pytest.raises(ConfigError, match=r"expected \(2,\)"):
        game.step(np.array([0]))
