"""ReplayBuffer: windows stay inside episodes, ring overwrite, dtypes, transitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.core.errors import DataError
from worldflux.data import ReplayBuffer, to_torch


def assert_windows_inside_episodes(batch: dict) -> None:
    values = batch["obs"].reshape(*batch["obs"].shape[:2], -1)[..., 0].astype(np.int64)
    episodes, steps = values // 1000, values % 1000
    assert (episodes == episodes[:, :1]).all(), "a window crosses episodes"
    assert (np.diff(steps, axis=1) == 1).all(), "rows of a window are not consecutive"
    # The row fields travel with their obs: action[t][0] = t, reward[t] = t.
    np.testing.assert_array_equal(batch["actions"][..., 0], steps)
    np.testing.assert_array_equal(batch["rewards"], steps)
    np.testing.assert_array_equal(batch["is_first"], steps == 0)


def test_sampled_windows_never_cross_episodes(make_episode, add_rows):
    buffer = ReplayBuffer(1000, obs_shape=(2,), action_dim=2, seed=0)
    lengths = [3, 12, 5, 20, 8, 1, 15]
    for episode, length in enumerate(lengths):
        add_rows(buffer, make_episode(episode, length, terminal=episode % 2 == 0))
    assert len(buffer) == sum(lengths) + len(lengths)
    assert buffer.num_episodes == len(lengths) and buffer.num_steps == sum(lengths)
    batch = buffer.sample(256, 6)
    assert batch["obs"].shape == (256, 6, 2) and batch["actions"].shape == (256, 6, 2)
    assert batch["rewards"].shape == (256, 6) and batch["rewards"].dtype == np.float32
    for key in ("terminated", "truncated", "is_first"):
        assert batch[key].dtype == bool and batch[key].shape == (256, 6)
    assert_windows_inside_episodes(batch)
    seen = set(np.unique(batch["obs"][:, 0, 0] // 1000).astype(int))
    assert seen == {1, 2, 3, 4, 6}  # only episodes with >= 6 rows (L >= 5)
    # Terminal vs truncated flags land on the last row of their episode only.
    last = (
        batch["obs"][:, :, 0] % 1000
        == np.array(lengths)[(batch["obs"][:, :, 0] // 1000).astype(int)]
    )
    assert not (batch["terminated"] & batch["truncated"]).any()
    assert ((batch["terminated"] | batch["truncated"]) == last).all()


def test_whole_episode_windows_start_at_the_first_row(make_episode):
    buffer = ReplayBuffer(100, obs_shape=(2,), action_dim=2, seed=1)
    for episode in range(3):
        buffer.add_episode(make_episode(episode, 9))
    batch = buffer.sample(32, 10)
    assert batch["is_first"][:, 0].all() and (batch["terminated"][:, -1]).all()


def test_unfinished_episode_is_sampled(make_episode, add_rows):
    buffer = ReplayBuffer(100, obs_shape=(2,), action_dim=2, seed=0)
    episode = make_episode(7, 10)
    for key in episode:
        episode[key] = episode[key][:6]  # still running
    add_rows(buffer, episode)
    batch = buffer.sample(8, 6)
    np.testing.assert_array_equal(batch["obs"][:, :, 0], np.tile(7000 + np.arange(6), (8, 1)))


def test_interleaved_streams_keep_episodes_apart(make_episode):
    buffer = ReplayBuffer(500, obs_shape=(2,), action_dim=2, seed=0)
    episodes = [make_episode(stream, 30) for stream in range(3)]
    for t in range(31):
        buffer.add_batch(
            np.stack([e["obs"][t] for e in episodes]),
            np.stack([e["actions"][t] for e in episodes]),
            [e["rewards"][t] for e in episodes],
            [e["terminated"][t] for e in episodes],
            [e["truncated"][t] for e in episodes],
            [e["is_first"][t] for e in episodes],
        )
    assert buffer.num_episodes == 3
    assert_windows_inside_episodes(buffer.sample(128, 16))


def test_wrap_around_overwrites_oldest_and_invalidates_their_windows(make_episode, add_rows):
    buffer = ReplayBuffer(25, obs_shape=(2,), action_dim=2, seed=0)
    for episode in range(4):
        add_rows(buffer, make_episode(episode, 9))  # 10 rows each, 40 rows into 25
    assert len(buffer) == 25
    # Kept: last 5 rows of episode 1, all of episodes 2 and 3.
    assert buffer.num_episodes == 3 and buffer.num_steps == 25 - 3
    stored = buffer.all_transitions().next_obs[:, 0].astype(int)
    assert stored.min() == 1006 and 0 not in stored // 1000
    batch = buffer.sample(512, 5)
    assert_windows_inside_episodes(batch)
    starts = batch["obs"][:, 0, 0].astype(int)
    assert set(starts[starts // 1000 == 1] % 1000) == {5}  # only rows 1005..1009 survive
    assert set(np.unique(starts // 1000)) == {1, 2, 3}
    assert 1 not in buffer.sample(512, 6)["obs"][:, 0, 0] // 1000  # 5 rows left: too short
    with pytest.raises(DataError, match="no episode has 11"):
        buffer.sample(1, 11)


def test_episode_longer_than_capacity_keeps_its_tail(make_episode, add_rows):
    buffer = ReplayBuffer(8, obs_shape=(2,), action_dim=2, seed=0)
    add_rows(buffer, make_episode(0, 20))
    assert len(buffer) == 8 and buffer.num_episodes == 1 and buffer.num_steps == 7
    batch = buffer.sample(16, 8)
    np.testing.assert_array_equal(batch["obs"][:, :, 0], np.tile(np.arange(13, 21), (16, 1)))
    buffer.add_episode(make_episode(1, 20))
    np.testing.assert_array_equal(
        buffer.sample(4, 8)["obs"][:, :, 0], np.tile(1013 + np.arange(8), (4, 1))
    )


def test_uint8_images_stay_uint8_and_lazy_allocation(make_episode):
    buffer = ReplayBuffer(1_000_000, obs_shape=(3, 16, 16), action_dim=2, seed=0)
    assert buffer.obs_dtype == np.uint8
    assert buffer._obs.nbytes == 0  # nothing allocated before the first row
    episode = make_episode(0, 30, obs_shape=(3, 16, 16), dtype=np.uint8)
    episode["obs"] = episode["obs"] % 251  # fit in uint8, still distinct per row
    buffer.add_episode(episode)
    assert buffer._obs.shape[0] < 10_000
    batch = buffer.sample(4, 5)
    assert batch["obs"].dtype == np.uint8 and batch["obs"].shape == (4, 5, 3, 16, 16)
    tensors = to_torch(batch, "cpu")
    assert tensors["obs"].dtype == torch.uint8 and tensors["rewards"].dtype == torch.float32
    assert tensors["is_first"].dtype == torch.bool and tensors["actions"].shape == (4, 5, 2)
    with pytest.raises(DataError, match="uint8"):
        buffer.add(np.zeros((3, 16, 16), np.float32), np.zeros(2), 0.0, False, False, True)


def test_sample_transitions_next_obs_follows_obs(make_episode, add_rows):
    buffer = ReplayBuffer(200, obs_shape=(2,), action_dim=2, seed=0)
    for episode in range(6):
        add_rows(buffer, make_episode(episode, 4 + episode))
    transitions = buffer.sample_transitions(300)
    obs, next_obs = transitions.obs[:, 0], transitions.next_obs[:, 0]
    np.testing.assert_array_equal(next_obs, obs + 1)  # same episode, next step
    np.testing.assert_array_equal(transitions.actions[:, 0], next_obs % 1000)
    np.testing.assert_array_equal(transitions.rewards, next_obs % 1000)
    episodes, steps = (next_obs // 1000).astype(int), (next_obs % 1000).astype(int)
    np.testing.assert_array_equal(transitions.terminated, steps == 4 + episodes)
    every = buffer.all_transitions()
    assert len(every.obs) == buffer.num_steps == sum(4 + e for e in range(6))
    np.testing.assert_array_equal(every.next_obs, every.obs + 1)
    assert (np.diff(every.obs[:, 0]) > 0).all()  # oldest first


def test_errors_are_clear(make_episode, add_rows):
    buffer = ReplayBuffer(100, obs_shape=(2,), action_dim=2)
    with pytest.raises(DataError, match="empty"):
        buffer.sample(1, 1)
    with pytest.raises(DataError, match="is_first=True"):
        buffer.add(np.zeros(2), np.zeros(2), 0.0, False, False, is_first=False)
    with pytest.raises(DataError, match=r"obs: got shape \(1, 3\), expected \[1, 2\]"):
        buffer.add(np.zeros(3), np.zeros(2), 0.0, False, False, is_first=True)
    add_rows(buffer, make_episode(0, 3))
    with pytest.raises(DataError, match="is_first=True"):  # the episode was closed
        buffer.add(np.zeros(2), np.zeros(2), 0.0, False, False, is_first=False)
    with pytest.raises(DataError, match="no episode has 5 consecutive rows"):
        buffer.sample(2, 5)
