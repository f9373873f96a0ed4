"""Episode .npz files: round trip, and bad files raise DataError naming file and key."""

from __future__ import annotations

import numpy as np
import pytest

from worldflux.core.errors import DataError
from worldflux.data import SCHEMA_VERSION, ReplayBuffer, load_episode, save_episode


def test_save_load_episode_round_trip(tmp_path, make_episode):
    episode = make_episode(3, 7, obs_shape=(3, 4, 4), dtype=np.uint8)
    path = save_episode(tmp_path / "one", episode)
    assert path.name == "one.npz"
    loaded = load_episode(path, obs_shape=(3, 4, 4), action_dim=2, obs_dtype=np.uint8)
    assert set(loaded) == set(episode)
    for key, value in episode.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    with np.load(path) as archive:
        assert archive["schema_version"].shape == () and int(archive["schema_version"]) == 1


def test_buffer_save_and_load_episodes_round_trip(tmp_path, make_episode, add_rows):
    buffer = ReplayBuffer(200, obs_shape=(2,), action_dim=2, seed=0)
    for episode in range(4):
        add_rows(buffer, make_episode(episode, 5 + episode))
    running = make_episode(9, 10)
    for key in running:
        running[key] = running[key][:4]
    add_rows(buffer, running, stream=1)
    paths = buffer.save_episodes(tmp_path)
    assert len(paths) == 5 and all(path.suffix == ".npz" for path in paths)

    restored = ReplayBuffer(200, obs_shape=(2,), action_dim=2, seed=0)
    assert restored.load_episodes(tmp_path) == 5
    assert len(restored) == len(buffer) and restored.num_episodes == buffer.num_episodes
    for (_, original), (_, copy) in zip(buffer.episodes(), restored.episodes(), strict=True):
        for key in original:
            np.testing.assert_array_equal(original[key], copy[key])
    original_t, copy_t = buffer.all_transitions(), restored.all_transitions()
    for original_field, copy_field in zip(original_t, copy_t, strict=True):
        np.testing.assert_array_equal(original_field, copy_field)

    from_files = ReplayBuffer.from_directory(tmp_path, seed=0)
    assert from_files.capacity == len(buffer) and from_files.obs_shape == (2,)


def corrupt(tmp_path, make_episode, **changes):
    arrays = make_episode(0, 5)
    arrays["schema_version"] = np.array(SCHEMA_VERSION, dtype=np.int64)
    arrays.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del arrays[key]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rewards": None}, r"missing key 'rewards'"),
        (
            {"actions": np.zeros((6, 2), np.float64)},
            r"key 'actions' has dtype float64, expected float32",
        ),
        ({"terminated": np.zeros(6, np.int8)}, r"key 'terminated' has dtype int8, expected bool"),
        ({"rewards": np.zeros(5, np.float32)}, r"key 'rewards' has shape \(5,\), expected \[6\]"),
        (
            {"actions": np.zeros((6, 3), np.float32)},
            r"key 'actions' has shape \(6, 3\), expected \[6, 2\]",
        ),
        ({"obs": np.zeros((6, 4), np.float32)}, r"key 'obs' has shape \(6, 4\), expected \[6, 2\]"),
        ({"obs": np.zeros((6, 2), np.int32)}, r"key 'obs' has dtype int32"),
        ({"schema_version": np.array(99)}, r"key 'schema_version' .* equal to 1"),
        ({"schema_version": None}, r"missing key 'schema_version'"),
        ({"extra": np.zeros(6)}, r"unknown key\(s\) \['extra'\]"),
        ({"rewards": np.full(6, np.nan, np.float32)}, r"key 'rewards' contains NaN"),
    ],
)
def test_bad_episode_file_names_file_and_key(tmp_path, changes, message, make_episode):
    path = corrupt(tmp_path, make_episode, **changes)
    with pytest.raises(DataError, match=message) as info:
        load_episode(path, obs_shape=(2,), action_dim=2)
    assert str(path) in str(info.value)


def test_pickled_truncated_and_missing_files_raise_data_error(tmp_path, make_episode):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obs=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load_episode(pickled)
    good = save_episode(tmp_path / "good.npz", make_episode(0, 5))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match="truncated.npz: not a readable .npz"):
        load_episode(truncated)
    with pytest.raises(DataError, match="no such episode file"):
        load_episode(tmp_path / "absent.npz")


def test_buffer_load_rejects_mismatched_shapes_before_adding(tmp_path, make_episode):
    save_episode(tmp_path / "a.npz", make_episode(0, 5))
    save_episode(tmp_path / "b.npz", make_episode(1, 5, obs_shape=(3,)))
    buffer = ReplayBuffer(100, obs_shape=(2,), action_dim=2)
    with pytest.raises(DataError, match=r"b.npz: key 'obs' has shape \(6, 3\)"):
        buffer.load_episodes(tmp_path)
    assert len(buffer) == 0
