"""ReplayBuffer(storage="disk"): memory-mapped files sample exactly as RAM, reopen, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldflux.core.errors import ConfigError, DataError
from worldflux.data import ReplayBuffer
from worldflux.data import replay as replay_module

FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "is_first")


def fill(buffer: ReplayBuffer, make_episode, add_rows, *, obs_shape, dtype, first=0) -> None:
    """Whole episodes, row-by-row episodes and two interleaved streams, some left open."""
    for episode in range(first, first + 4):
        buffer.add_episode(make_episode(episode, 20 + 7 * episode, obs_shape, dtype))
        add_rows(buffer, make_episode(100 + episode, 15 + episode, obs_shape, dtype))
    streams = [make_episode(200 + first + s, 40, obs_shape, dtype) for s in range(2)]
    for t in range(25):  # both stream episodes stay open
        buffer.add_batch(
            np.stack([e["obs"][t] for e in streams]),
            np.stack([e["actions"][t] for e in streams]),
            [e["rewards"][t] for e in streams],
            [e["terminated"][t] for e in streams],
            [e["truncated"][t] for e in streams],
            [e["is_first"][t] for e in streams],
            streams=[3, 5],
        )


def assert_same(first: dict | tuple, second: dict | tuple) -> None:
    if isinstance(first, dict):
        assert first.keys() == second.keys()
        first, second = [first[k] for k in FIELDS], [second[k] for k in FIELDS]
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("obs_shape,dtype", [((3,), np.float32), ((4, 4, 3), np.uint8)])
def test_disk_samples_as_memory_after_wrap_around(
    tmp_path, make_episode, add_rows, obs_shape, dtype
):
    capacity = 200  # the fill below writes 246 rows: the ring wraps
    memory = ReplayBuffer(capacity, obs_shape, 2, seed=3)
    disk = ReplayBuffer(capacity, obs_shape, 2, seed=3, storage="disk", directory=tmp_path / "rb")
    for buffer in (memory, disk):
        fill(buffer, make_episode, add_rows, obs_shape=obs_shape, dtype=dtype)
    assert len(disk) == len(memory) == capacity
    assert (disk.num_episodes, disk.num_steps) == (memory.num_episodes, memory.num_steps)
    for _ in range(3):
        batch = disk.sample(32, 12)
        assert_same(memory.sample(32, 12), batch)
        assert batch["obs"].dtype == np.dtype(dtype) and batch["obs"].shape[2:] == obs_shape
    assert_same(memory.sample_transitions(64), disk.sample_transitions(64))
    assert_same(memory.all_transitions(), disk.all_transitions())
    assert [i for i, _ in memory.episodes()] == [i for i, _ in disk.episodes()]
    for (_, a), (_, b) in zip(memory.episodes(), disk.episodes(), strict=True):
        assert_same(a, b)
    # The oldest episodes were overwritten on both.
    first_ids = {int(v) // 1000 for v in disk.sample(256, 1)["obs"].reshape(256, -1)[:, 0]}
    if dtype == np.float32:
        assert 0 not in first_ids
    disk.close()


def test_files_are_plain_npy_written_sparse(tmp_path, make_episode):
    directory = tmp_path / "rb"
    buffer = ReplayBuffer(100_000, (64, 64, 3), 2, storage="disk", directory=directory)
    obs_file = directory / "obs.npy"
    assert obs_file.stat().st_size > 100_000 * 64 * 64 * 3  # full capacity, apparent size
    assert obs_file.stat().st_blocks * 512 < 16 << 20  # but nothing allocated up front
    episode = make_episode(2, 9, (64, 64, 3), np.uint8)
    buffer.add_episode(episode)
    buffer.flush()
    expected = {f"{field}.npy" for field in FIELDS} | {"meta.json", "index.npz"}
    assert {path.name for path in directory.iterdir()} == expected
    stored = np.load(obs_file, mmap_mode="r")
    assert stored.shape == (100_000, 64, 64, 3) and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored[:10], episode["obs"])
    assert not stored[10:20].any()
    np.testing.assert_array_equal(np.load(directory / "rewards.npy")[:10], episode["rewards"])
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["state"], meta["size"], meta["capacity"]) == ("flushed", 10, 100_000)
    del stored
    buffer.close()


def test_reopened_buffer_samples_the_same_and_keeps_writing(tmp_path, make_episode, add_rows):
    directory = tmp_path / "rb"
    obs_shape = (4, 4, 3)
    memory = ReplayBuffer(300, obs_shape, 2, seed=5)
    with ReplayBuffer(300, obs_shape, 2, seed=5, storage="disk", directory=directory) as disk:
        for buffer in (memory, disk):
            fill(buffer, make_episode, add_rows, obs_shape=obs_shape, dtype=np.uint8)
            buffer.sample(8, 4)  # advance both samplers alike
    with pytest.raises(DataError, match="closed"):
        disk.sample(4, 2)

    reopened = ReplayBuffer.open(directory)
    assert reopened.storage == "disk" and reopened.capacity == 300
    assert (len(reopened), reopened.num_episodes) == (len(memory), memory.num_episodes)
    assert_same(memory.sample(32, 10), reopened.sample(32, 10))  # sampler state restored
    # Open stream episodes continue, new rows wrap the ring, and both still agree.
    for buffer in (memory, reopened):
        fill(buffer, make_episode, add_rows, obs_shape=obs_shape, dtype=np.uint8, first=10)
    assert len(reopened) == 300
    assert_same(memory.sample(32, 10), reopened.sample(32, 10))
    assert_same(memory.all_transitions(), reopened.all_transitions())
    reopened.close()
    assert_same(memory.sample(16, 6), ReplayBuffer.open(directory, seed=None).sample(16, 6))


def test_open_refuses_a_buffer_written_after_its_last_flush(tmp_path, make_episode):
    directory = tmp_path / "rb"
    buffer = ReplayBuffer(50, (3,), 2, storage="disk", directory=directory)
    with pytest.raises(DataError, match="'state' is 'writing'"):
        ReplayBuffer.open(directory)  # never flushed
    buffer.add_episode(make_episode(0, 9, (3,)))
    buffer.flush()
    assert len(ReplayBuffer.open(directory)) == 10
    buffer.add_episode(make_episode(1, 9, (3,)))  # the flushed state no longer holds
    with pytest.raises(DataError, match="after its last flush"):
        ReplayBuffer.open(directory)
    buffer.close()
    assert len(ReplayBuffer.open(directory)) == 20
    with pytest.raises(DataError, match="no replay buffer here"):
        ReplayBuffer.open(tmp_path / "elsewhere")
    (directory / "index.npz").unlink()
    with pytest.raises(DataError, match="missing replay index"):
        ReplayBuffer.open(directory)


def test_open_refuses_damaged_files(tmp_path, make_episode):
    directory = tmp_path / "rb"
    with ReplayBuffer(50, (3,), 2, storage="disk", directory=directory) as buffer:
        buffer.add_episode(make_episode(0, 9, (3,)))
    np.save(directory / "rewards.npy", np.zeros(49, np.float32))
    with pytest.raises(DataError, match=r"rewards.npy: holds an array of shape \(49,\)"):
        ReplayBuffer.open(directory)


def test_bad_storage_arguments(tmp_path):
    with pytest.raises(ConfigError, match="storage: got 'dsik'.*Did you mean: disk"):
        ReplayBuffer(10, (3,), 1, storage="dsik", directory=tmp_path)
    with pytest.raises(ConfigError, match="directory: storage='disk' needs a directory"):
        ReplayBuffer(10, (3,), 1, storage="disk")
    with pytest.raises(ConfigError, match="only used with storage='disk'"):
        ReplayBuffer(10, (3,), 1, directory=tmp_path)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        ReplayBuffer(10, (3,), 1, storage="disk", directory=a_file)


def test_existing_buffer_directory_needs_overwrite(tmp_path, make_episode):
    directory = tmp_path / "rb"
    with ReplayBuffer(20, (3,), 2, storage="disk", directory=directory) as buffer:
        buffer.add_episode(make_episode(0, 9, (3,)))
    with pytest.raises(ConfigError, match="already holds a replay buffer.*overwrite=True"):
        ReplayBuffer(20, (3,), 2, storage="disk", directory=directory)
    fresh = ReplayBuffer(30, (3,), 2, storage="disk", directory=directory, overwrite=True)
    assert len(fresh) == 0 and not (directory / "index.npz").exists()
    with pytest.raises(DataError, match="'state' is 'writing'"):
        ReplayBuffer.open(directory)
    fresh.close()
    assert ReplayBuffer.open(directory).capacity == 30


def _rss_mib() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_written_pages_do_not_stay_resident(tmp_path, monkeypatch, make_episode):
    monkeypatch.setattr(replay_module, "_RELEASE_BYTES", 1 << 20)
    buffer = ReplayBuffer(2400, (64, 64, 3), 2, storage="disk", directory=tmp_path / "rb")
    episode = make_episode(0, 99, (64, 64, 3), np.uint8)  # 100 rows, 1.2 MB of obs
    before = _rss_mib()
    growth = 0.0
    for _ in range(24):  # 29.5 MB written in all
        buffer.add_episode(episode)
        now = _rss_mib()
        growth = max(growth, now["RssFile"] - before["RssFile"])
    assert growth < 8, f"mapped file pages kept resident: +{growth:.1f} MiB"
    for _ in range(10):  # 10 x 12.6 MB read
        batch = buffer.sample(16, 64)
        growth = max(growth, _rss_mib()["RssFile"] - before["RssFile"])
    assert growth < 12, f"mapped file pages kept resident: +{growth:.1f} MiB"
    assert batch["obs"].dtype == np.uint8 and (batch["obs"][:, :, 0, 0, 0] < 100).all()
    buffer.close()
