"""``ReplayBuffer``: flat NumPy ring storage of rows, sampled as windows inside one episode.

See :mod:`worldflux.data` for the row convention. Storage is one array per field with
``capacity`` rows at most, allocated lazily and grown geometrically, plus three int64 arrays
per row: the episode id, the row's position in its episode, and the ring index of the next row
of the same episode (``-1`` while there is none). Rows of parallel streams may interleave in
the ring; the next-row links keep each episode's order.

Storage (``storage=``): ``"memory"`` keeps the row fields in NumPy arrays in RAM; ``"disk"``
keeps them in sparse memory-mapped ``.npy`` files of the full capacity in ``directory`` (see
:class:`~worldflux.data.mapped_array.MappedArray`). Both run the same writing and sampling
code; only how the row arrays are created (and grown) differs. The index (episode id, position
and next-row link per row: 24 bytes per row, plus 16 bytes per episode) is in RAM either way.

Validity of a window is O(1) per start row: the ring overwrites rows in write order and an
episode writes its rows in position order, so the rows of an episode still stored are always a
suffix of it. A stored row at position ``p`` of episode ``e`` therefore starts a valid window
of ``T`` rows iff ``episode_length[e] - p >= T``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worldflux.core.errors import ConfigError, DataError, close_matches
from worldflux.core.io import atomic_write_bytes, atomic_write_text
from worldflux.data.episodes import (
    EPISODE_KEYS,
    _coerce,
    load_episode,
    save_episode,
    validate_episode,
)
from worldflux.data.mapped_array import MappedArray

logger = logging.getLogger(__name__)

__all__ = ["STORAGES", "ReplayBuffer", "Transitions"]

STORAGES = ("memory", "disk")
_INITIAL_ROWS = 1024
_REJECTION_ROUNDS = 8
# Row fields (kept by the storage backend) and the per-row index (always in RAM).
_ROW_FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "is_first")
_INDEX_FIELDS = ("episode_ids", "positions", "next_rows")
# Disk storage: written (or read) mapped bytes after which pages are synced and dropped from
# the process, so its resident memory stays bounded by about this much per direction.
_RELEASE_BYTES = 64 << 20
_META_FILE = "meta.json"
_INDEX_FILE = "index.npz"
_META_FORMAT = "worldflux-replay-buffer"
_META_VERSION = 1


class Transitions(NamedTuple):
    """One-step transitions ``(obs, actions, rewards, next_obs, terminated)``.

    Attributes:
        obs: ``[N, *obs_shape]`` observation before the action (buffer's obs dtype).
        actions: ``[N, A]`` float32 action taken from ``obs``.
        rewards: ``[N]`` float32 reward received on the transition.
        next_obs: ``[N, *obs_shape]`` observation after the action.
        terminated: ``[N]`` bool, ``next_obs`` is terminal (time-limit truncation is not).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray


class ReplayBuffer:
    """Ring buffer of rows ``(obs, action, reward, terminated, truncated, is_first)``.

    Args:
        capacity: maximum number of rows kept; when full the oldest rows are overwritten, and
            windows that would need an overwritten row are no longer sampled.
        obs_shape: shape of one observation, e.g. ``(5,)`` or ``(3, 64, 64)``.
        action_dim: action size ``A`` (discrete actions are stored one-hot).
        obs_dtype: storage dtype of observations; default uint8 for 3-D (image) shapes and
            float32 otherwise. uint8 observations are never converted to float.
        seed: seed of the sampling random generator.
        storage: where the rows live.

            * ``"memory"`` (default): NumPy arrays in RAM, grown geometrically up to
              ``capacity``. Fastest; use it whenever ``capacity`` rows fit in RAM with room
              to spare (state observations always do: 1M rows of 64 floats are 0.3 GB).
            * ``"disk"``: sparse memory-mapped ``.npy`` files of ``capacity`` rows in
              ``directory``, one per row field. Use it for long pixel runs: 1M rows of
              64x64x3 uint8 images are 12.3 GB, which then cost disk instead of RAM. The
              process keeps the 24-byte-per-row index in RAM; pages of the files it writes or
              reads are synced and unmapped every 64 MiB of rows, so it holds at most a few
              hundred MiB of them (kernel read-ahead maps about 3x what sampling reads). The
              kernel's page cache keeps recently used rows while memory is free and evicts
              them when it is not. Sampling reads the sampled rows from the files (page cache,
              or the disk when the data is larger than free memory): slower than RAM, so
              prefer ``"memory"`` when the data fits.
        directory: folder of the disk storage (created if missing; required with
            ``storage="disk"``, refused otherwise). It must not already hold a buffer unless
            ``overwrite`` is set; reopen a flushed one with :meth:`open` instead.
        overwrite: with ``storage="disk"``, replace a buffer already stored in ``directory``.

    Disk storage is persistent: :meth:`flush` (and :meth:`close`, also run when a ``with``
    block ends) writes the pending rows and the index (``index.npz``) and metadata
    (``meta.json``, which includes the sampler state) atomically; :meth:`open` reopens the
    directory as it was at the last flush. A directory written to after its last flush (for
    instance by a process that crashed) is refused by :meth:`open`, since its rows may no longer
    match its index. One process at a time may use a directory.

    Example::

        buffer = ReplayBuffer(100_000, obs_shape=(5,), action_dim=1, seed=0)
        buffer.add(obs, np.zeros(1), 0.0, False, False, is_first=True)
        ...
        batch = buffer.sample(batch_size=16, seq_len=64)   # batch["obs"]: [16, 64, 5]

        pixels = ReplayBuffer(1_000_000, (3, 64, 64), 6, seed=0, storage="disk",
                              directory="runs/replay")       # 12.3 GB on disk, not in RAM
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_dim: int,
        obs_dtype: Any = None,
        seed: int | None = None,
        *,
        storage: str = "memory",
        directory: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> None:
        if storage not in STORAGES:
            raise ConfigError(
                f"storage: got {storage!r}, expected one of {list(STORAGES)}."
                + close_matches(str(storage), STORAGES)
            )
        if storage == "disk" and directory is None:
            raise ConfigError(
                "directory: storage='disk' needs a directory for its files, got None"
            )
        if storage == "memory" and directory is not None:
            raise ConfigError(
                f"directory: got {str(directory)!r}, but it is only used with storage='disk' "
                "(storage is 'memory')"
            )
        self._setup(capacity, obs_shape, action_dim, obs_dtype, seed)
        if storage == "disk":
            self._create_files(_storage_directory(directory, overwrite))

    def _setup(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_dim: int,
        obs_dtype: Any,
        seed: int | None,
    ) -> None:
        """Check the sizes and build an empty in-memory buffer (shared by ``open``)."""
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"capacity: expected an integer >= 1, got {capacity!r}")
        if int(action_dim) != action_dim or action_dim < 0:
            raise ValueError(f"action_dim: expected an integer >= 0, got {action_dim!r}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(int(size) for size in obs_shape)
        self.action_dim = int(action_dim)
        if obs_dtype is None:
            obs_dtype = np.uint8 if len(self.obs_shape) == 3 else np.float32
        self.obs_dtype = np.dtype(obs_dtype)
        if self.obs_dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
            raise ValueError(f"obs_dtype: expected float32 or uint8, got {self.obs_dtype}")
        self._rng = np.random.default_rng(seed)

        self.storage = "memory"
        self.directory: Path | None = None
        self._closed = False
        self._allocated = 0
        self._size = 0
        self._cursor = 0
        self._obs = np.empty((0, *self.obs_shape), dtype=self.obs_dtype)
        self._actions = np.empty((0, self.action_dim), dtype=np.float32)
        self._rewards = np.empty(0, dtype=np.float32)
        self._terminated = np.empty(0, dtype=bool)
        self._truncated = np.empty(0, dtype=bool)
        self._is_first = np.empty(0, dtype=bool)
        self._episode_ids = np.empty(0, dtype=np.int64)
        self._positions = np.empty(0, dtype=np.int64)
        self._next_rows = np.empty(0, dtype=np.int64)

        # Per episode id (ids are never reused): rows written so far, and rows still stored.
        self._episode_lengths = np.zeros(64, dtype=np.int64)
        self._episode_live = np.zeros(64, dtype=np.int64)
        self._next_episode_id = 0
        self._num_live_episodes = 0

        # Per stream: open episode id (-1: none) and ring index of its last row.
        self._stream_episode = np.full(1, -1, dtype=np.int64)
        self._stream_last_row = np.full(1, -1, dtype=np.int64)

        # Disk storage only: the mapped files, and what was written/read since pages were
        # last released; ``_flushed``: the files and meta.json agree (meta state "flushed").
        self._mapped: dict[str, MappedArray] = {}
        self._written_bytes = 0
        self._read_bytes = 0
        self._flushed = False
        self._index_saved = False

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Number of rows stored."""
        return self._size

    @property
    def num_episodes(self) -> int:
        """Episodes with at least one row stored (unfinished ones included)."""
        return self._num_live_episodes

    @property
    def num_steps(self) -> int:
        """Transitions stored: pairs of consecutive rows of one episode."""
        return self._size - self._num_live_episodes

    def __repr__(self) -> str:
        where = f"'disk', directory={str(self.directory)!r}" if self._mapped else "'memory'"
        return (
            f"ReplayBuffer(rows={self._size}/{self.capacity}, episodes={self.num_episodes}, "
            f"obs_shape={self.obs_shape}, obs_dtype={self.obs_dtype}, "
            f"action_dim={self.action_dim}, storage={where})"
        )

    def sampler_state(self) -> dict[str, Any]:
        """State of the sampling random generator (for checkpoints; the rows are saved apart)."""
        return {"bit_generator": self._rng.bit_generator.state}

    def load_sampler_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`sampler_state`."""
        self._rng.bit_generator.state = dict(state["bit_generator"])

    # ------------------------------------------------------------------ disk storage
    def _field_layouts(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape ``[capacity, ...]`` and dtype of each row field's array."""
        flags = ((self.capacity,), np.dtype(bool))
        return {
            "obs": ((self.capacity, *self.obs_shape), self.obs_dtype),
            "actions": ((self.capacity, self.action_dim), np.dtype(np.float32)),
            "rewards": ((self.capacity,), np.dtype(np.float32)),
            "terminated": flags,
            "truncated": flags,
            "is_first": flags,
        }

    def _row_bytes(self) -> int:
        """Bytes of row-field data per row (all fields)."""
        return sum(
            int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for shape, dtype in self._field_layouts().values()
        )

    def _create_files(self, directory: Path) -> None:
        self.storage = "disk"
        self.directory = directory
        (directory / _INDEX_FILE).unlink(missing_ok=True)
        self._write_meta(state="writing")  # first: an interrupted creation is never reopened
        for field, (shape, dtype) in self._field_layouts().items():
            self._mapped[field] = MappedArray.create(directory / f"{field}.npy", shape, dtype)
            setattr(self, f"_{field}", self._mapped[field].array)

    def _write_meta(self, state: str) -> None:
        assert self.directory is not None
        meta = {
            "format": _META_FORMAT,
            "version": _META_VERSION,
            "state": state,
            "capacity": self.capacity,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": str(self.obs_dtype),
            "action_dim": self.action_dim,
            "fields": {field: f"{field}.npy" for field in _ROW_FIELDS},
            "size": int(self._size),
            "cursor": int(self._cursor),
            "next_episode_id": int(self._next_episode_id),
            "num_live_episodes": int(self._num_live_episodes),
            "sampler": self.sampler_state(),
        }
        atomic_write_text(self.directory / _META_FILE, json.dumps(meta, indent=2))
        self._flushed = state == "flushed"

    def _release_pages(self) -> None:
        """Sync written pages to the files and drop the mapped pages from the process.

        The pages stay in the kernel's page cache (clean, so reclaimable at once): reading
        them again is cheap while memory allows, and the kernel evicts them when it needs
        the memory. The process's own resident memory no longer holds them.
        """
        for mapped in self._mapped.values():
            mapped.release(drop_cache=False)
        self._written_bytes = 0
        self._read_bytes = 0

    def _note_read(self, rows: int) -> None:
        if self._mapped:
            self._read_bytes += rows * self._row_bytes()
            if self._read_bytes >= _RELEASE_BYTES:
                self._release_pages()

    def _check_open(self) -> None:
        if self._closed:
            hint = (
                f"reopen {str(self.directory)!r} with ReplayBuffer.open"
                if self._mapped
                else "create a new one"
            )
            raise DataError(f"this ReplayBuffer was closed; {hint}")

    def flush(self) -> None:
        """Disk storage: write the pending rows, the index and the metadata to ``directory``.

        Afterwards :meth:`open` reopens the directory as it is now (rows, episodes, open
        stream episodes and sampler state). The index (``index.npz``, 24 bytes per row) is
        rewritten only when rows were added since the last flush. Memory storage: nothing to do.
        """
        if not self._mapped or self._closed:
            return
        assert self.directory is not None
        self._release_pages()
        if not self._index_saved:
            arrays = {
                "episode_ids": self._episode_ids[: self._size],
                "positions": self._positions[: self._size],
                "next_rows": self._next_rows[: self._size],
                "episode_lengths": self._episode_lengths[: self._next_episode_id],
                "episode_live": self._episode_live[: self._next_episode_id],
                "stream_episode": self._stream_episode,
                "stream_last_row": self._stream_last_row,
            }
            data = io.BytesIO()
            np.savez(data, **arrays)
            atomic_write_bytes(self.directory / _INDEX_FILE, data.getvalue())
            self._index_saved = True
        self._write_meta(state="flushed")

    def close(self) -> None:
        """:meth:`flush`, then free the storage (unmap the files); the buffer is unusable after.

        Called when a ``with ReplayBuffer(...) as buffer:`` block ends. Closing twice is fine.
        """
        if self._closed:
            return
        self.flush()
        for mapped in self._mapped.values():
            mapped.close()
        for field, (shape, dtype) in self._field_layouts().items():
            setattr(self, f"_{field}", np.empty((0, *shape[1:]), dtype=dtype))
        self._closed = True

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def open(cls, directory: str | os.PathLike, *, seed: int | None = None) -> ReplayBuffer:
        """Reopen a disk buffer as it was at its last :meth:`flush` (or :meth:`close`).

        ``seed=None`` restores the saved sampler state, so the reopened buffer draws the
        same samples as the original would have; an int starts a fresh generator instead.

        Raises:
            DataError: ``directory`` holds no buffer, its files are damaged or disagree with
                its metadata, or it was written to after its last flush (its rows may then no
                longer match its index: recreate it with ``overwrite=True``).
        """
        directory = Path(directory)
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise DataError(
                f"{directory}: no replay buffer here (missing {_META_FILE}); create one with "
                "ReplayBuffer(..., storage='disk', directory=...)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{meta_path}: not readable JSON ({error})") from error
        if not isinstance(meta, dict) or meta.get("format") != _META_FORMAT:
            raise DataError(f"{meta_path}: 'format' is not {_META_FORMAT!r}")
        if meta.get("version") != _META_VERSION:
            raise DataError(
                f"{meta_path}: 'version' is {meta.get('version')!r}, expected {_META_VERSION}"
            )
        if meta.get("state") != "flushed":
            raise DataError(
                f"{meta_path}: 'state' is {meta.get('state')!r}, expected 'flushed': the buffer "
                "was written to after its last flush() (e.g. by a process that stopped before "
                "close()), so its rows may not match its index; recreate it with "
                "overwrite=True (for instance from saved episode files)"
            )
        buffer = cls.__new__(cls)
        try:
            buffer._setup(
                meta["capacity"], meta["obs_shape"], meta["action_dim"], meta["obs_dtype"], seed
            )
            counters = {
                key: int(meta[key])
                for key in ("size", "cursor", "next_episode_id", "num_live_episodes")
            }
            sampler = meta["sampler"]
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{meta_path}: bad or missing metadata ({error!r})") from error
        if not 0 <= counters["size"] <= buffer.capacity or not (
            0 <= counters["cursor"] < buffer.capacity
        ):
            raise DataError(
                f"{meta_path}: size {counters['size']} / cursor {counters['cursor']} do not fit "
                f"capacity {buffer.capacity}"
            )
        buffer._load_index(directory / _INDEX_FILE, counters)
        buffer.storage = "disk"
        buffer.directory = directory
        for field, (shape, dtype) in buffer._field_layouts().items():
            buffer._mapped[field] = MappedArray.open(directory / f"{field}.npy", shape, dtype)
            setattr(buffer, f"_{field}", buffer._mapped[field].array)
        if seed is None:
            try:
                buffer.load_sampler_state(sampler)
            except (KeyError, TypeError, ValueError) as error:
                raise DataError(f"{meta_path}: bad 'sampler' state ({error!r})") from error
        buffer._flushed = True
        buffer._index_saved = True
        return buffer

    def _load_index(self, path: Path, counters: dict[str, int]) -> None:
        """Read ``index.npz`` (written by :meth:`flush`) into the in-memory index."""
        if not path.is_file():
            raise DataError(f"{path}: missing replay index file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: not a readable .npz file ({error})") from error
        size, episodes = counters["size"], counters["next_episode_id"]
        lengths = {
            "episode_ids": size,
            "positions": size,
            "next_rows": size,
            "episode_lengths": episodes,
            "episode_live": episodes,
            "stream_episode": None,
            "stream_last_row": None,
        }
        for key, length in lengths.items():
            value = arrays.get(key)
            if value is None:
                raise DataError(f"{path}: missing key {key!r}")
            expected = "any length >= 1" if length is None else f"length {length}"
            if (
                value.dtype != np.int64
                or value.ndim != 1
                or (value.size != length if length is not None else value.size < 1)
            ):
                raise DataError(
                    f"{path}: key {key!r} has dtype {value.dtype} and shape {value.shape}, "
                    f"expected int64 of {expected}"
                )
        if arrays["stream_episode"].size != arrays["stream_last_row"].size:
            raise DataError(f"{path}: 'stream_episode' and 'stream_last_row' differ in length")
        for key in _INDEX_FIELDS:
            setattr(self, f"_{key}", arrays[key].copy())
        self._allocated = size
        for key in ("episode_lengths", "episode_live"):
            padded = np.zeros(max(64, episodes), dtype=np.int64)
            padded[:episodes] = arrays[key]
            setattr(self, f"_{key}", padded)
        self._stream_episode = arrays["stream_episode"].copy()
        self._stream_last_row = arrays["stream_last_row"].copy()
        self._size = counters["size"]
        self._cursor = counters["cursor"]
        self._next_episode_id = episodes
        self._num_live_episodes = counters["num_live_episodes"]

    # ------------------------------------------------------------------ writing
    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        is_first: bool,
        *,
        stream: int = 0,
    ) -> None:
        """Append one row ``obs [*obs_shape]``, ``action [A]`` to the episode open on ``stream``.

        ``is_first=True`` starts a new episode (its ``action`` should be zeros and ``reward``
        0). A row with ``terminated`` or ``truncated`` closes the episode: the stream's next row
        must have ``is_first=True``.
        """
        self.add_batch(
            np.asarray(obs)[None],
            np.asarray(action, dtype=np.float32).reshape(1, -1),
            np.asarray([reward], dtype=np.float32),
            np.asarray([terminated], dtype=bool),
            np.asarray([truncated], dtype=bool),
            np.asarray([is_first], dtype=bool),
            streams=[stream],
        )

    def add_batch(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_first: np.ndarray,
        *,
        streams: Any = None,
    ) -> None:
        """Append one row per parallel env.

        Shapes: ``obs [N, *obs_shape]``, ``actions [N, A]``, all other arguments ``[N]``.

        ``streams [N]`` (distinct non-negative ints, default ``0..N-1``) say which env each row
        comes from, so episodes of different envs stay apart even though their rows interleave.
        """
        self._check_open()
        obs = np.asarray(obs)
        count = obs.shape[0] if obs.ndim > 0 else 0
        streams = np.arange(count) if streams is None else np.asarray(streams, dtype=np.int64)
        arrays = self._checked_rows(obs, actions, rewards, terminated, truncated, is_first, count)
        obs, actions, rewards, terminated, truncated, is_first = arrays
        if streams.shape != (count,) or (count and streams.min() < 0):
            raise DataError(f"streams: expected {count} non-negative ints, got {streams!r}")
        if np.unique(streams).size != count:
            raise DataError(f"streams: each stream may appear once per add_batch, got {streams}")
        if count > self.capacity:
            raise DataError(f"add_batch: {count} rows do not fit in capacity {self.capacity}")
        if count == 0:
            return
        self._grow_streams(int(streams.max()) + 1)

        episodes = self._stream_episode[streams].copy()
        orphans = ~is_first & (episodes < 0)
        if orphans.any():
            raise DataError(
                f"streams {streams[orphans].tolist()}: row has is_first=False but the stream "
                "has no open episode; the first row of a stream, and the row after a "
                "terminated or truncated one, must have is_first=True"
            )
        num_new = int(is_first.sum())
        episodes[is_first] = self._new_episode_ids(num_new)
        positions = self._episode_lengths[episodes]
        previous = self._stream_last_row[streams]

        rows = self._write_rows(
            obs, actions, rewards, terminated, truncated, is_first, episodes, positions
        )
        # Link each continuing row to its predecessor, if the predecessor is still stored.
        link = np.flatnonzero(~is_first & (previous >= 0))
        link = link[
            (self._episode_ids[previous[link]] == episodes[link])
            & (self._positions[previous[link]] == positions[link] - 1)
        ]
        self._next_rows[previous[link]] = rows[link]
        self._episode_lengths[episodes] += 1
        self._stream_last_row[streams] = rows
        self._stream_episode[streams] = np.where(terminated | truncated, -1, episodes)

    def add_episode(self, episode: Mapping[str, Any]) -> None:
        """Append a whole episode: a dict of arrays ``[L + 1, ...]`` with the schema keys.

        Keys: ``obs``, ``actions``, ``rewards``, ``terminated``, ``truncated`` and optionally
        ``is_first`` (default: only row 0). Open stream episodes are not affected. An episode
        longer than ``capacity`` keeps only its last ``capacity`` rows.
        """
        self._check_open()
        arrays = _coerce(episode)
        if self.obs_dtype == np.float32:
            arrays["obs"] = arrays["obs"].astype(np.float32, copy=False)
        rows_total = validate_episode(
            arrays,
            obs_shape=self.obs_shape,
            action_dim=self.action_dim,
            obs_dtype=self.obs_dtype,
            source="add_episode",
        )
        start = max(0, rows_total - self.capacity)
        episode_id = self._new_episode_ids(1)[0]
        positions = np.arange(start, rows_total, dtype=np.int64)
        rows = self._write_rows(
            *(arrays[key][start:] for key in EPISODE_KEYS),
            np.full(rows_total - start, episode_id, dtype=np.int64),
            positions,
        )
        self._next_rows[rows[:-1]] = rows[1:]
        self._episode_lengths[episode_id] = rows_total

    def _checked_rows(
        self,
        obs: np.ndarray,
        actions: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        is_first: Any,
        count: int,
    ) -> tuple[np.ndarray, ...]:
        if obs.shape != (count, *self.obs_shape):
            raise DataError(
                f"obs: got shape {obs.shape}, expected [{count}, "
                f"{', '.join(map(str, self.obs_shape))}] (obs_shape {self.obs_shape})"
            )
        if self.obs_dtype == np.uint8 and obs.dtype != np.uint8:
            raise DataError(f"obs: got dtype {obs.dtype}, this buffer stores uint8 images")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (count, self.action_dim):
            raise DataError(
                f"actions: got shape {actions.shape}, expected [{count}, {self.action_dim}]"
            )
        out = [obs.astype(self.obs_dtype, copy=False), actions]
        for name, value, dtype in (
            ("rewards", rewards, np.float32),
            ("terminated", terminated, bool),
            ("truncated", truncated, bool),
            ("is_first", is_first, bool),
        ):
            value = np.asarray(value, dtype=dtype)
            if value.shape != (count,):
                raise DataError(f"{name}: got shape {value.shape}, expected [{count}]")
            out.append(value)
        return tuple(out)

    def _new_episode_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_episode_id, self._next_episode_id + count, dtype=np.int64)
        self._next_episode_id += count
        if self._next_episode_id > self._episode_lengths.size:
            size = max(self._next_episode_id, 2 * self._episode_lengths.size)
            for name in ("_episode_lengths", "_episode_live"):
                grown = np.zeros(size, dtype=np.int64)
                old = getattr(self, name)
                grown[: old.size] = old
                setattr(self, name, grown)
        return ids

    def _grow_streams(self, count: int) -> None:
        if count <= self._stream_episode.size:
            return
        for name in ("_stream_episode", "_stream_last_row"):
            grown = np.full(count, -1, dtype=np.int64)
            old = getattr(self, name)
            grown[: old.size] = old
            setattr(self, name, grown)

    def _reserve(self, count: int) -> None:
        """Make room for ``count`` more rows, doubling the allocation up to ``capacity``."""
        needed = min(self.capacity, self._size + count)
        if needed <= self._allocated:
            return
        size = min(self.capacity, max(needed, 2 * self._allocated, _INITIAL_ROWS))
        # Disk storage maps the row fields at full capacity once; only the index grows.
        fields = _INDEX_FIELDS if self._mapped else _INDEX_FIELDS + _ROW_FIELDS
        for name in (f"_{field}" for field in fields):
            old = getattr(self, name)
            grown = np.empty((size, *old.shape[1:]), dtype=old.dtype)
            grown[: self._allocated] = old[: self._allocated]
            setattr(self, name, grown)
        self._allocated = size

    def _write_rows(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_first: np.ndarray,
        episodes: np.ndarray,
        positions: np.ndarray,
    ) -> np.ndarray:
        """Write ``N <= capacity`` rows at the cursor and return their ring indices ``[N]``."""
        count = len(episodes)
        self._check_open()
        if self._flushed:  # the files are about to change: the last flush no longer holds
            self._write_meta(state="writing")
        self._reserve(count)
        rows = (self._cursor + np.arange(count)) % self.capacity
        overwritten = rows[rows < self._size]
        touched = np.unique(np.concatenate([self._episode_ids[overwritten], episodes]))
        live_before = np.count_nonzero(self._episode_live[touched])
        np.subtract.at(self._episode_live, self._episode_ids[overwritten], 1)
        np.add.at(self._episode_live, episodes, 1)
        self._num_live_episodes += np.count_nonzero(self._episode_live[touched]) - live_before

        self._obs[rows] = obs
        self._actions[rows] = actions
        self._rewards[rows] = rewards
        self._terminated[rows] = terminated
        self._truncated[rows] = truncated
        self._is_first[rows] = is_first
        self._episode_ids[rows] = episodes
        self._positions[rows] = positions
        self._next_rows[rows] = -1
        self._cursor = (self._cursor + count) % self.capacity
        self._size = min(self.capacity, self._size + count)
        if self._mapped:
            self._index_saved = False
            for mapped in self._mapped.values():
                mapped.mark_dirty()
            self._written_bytes += count * self._row_bytes()
            if self._written_bytes >= _RELEASE_BYTES:
                self._release_pages()
        return rows

    # ------------------------------------------------------------------ sampling
    def _window_fits(self, rows: np.ndarray, length: int) -> np.ndarray:
        """Bool ``[N]``: a window of ``length`` rows of one episode starts at each stored row."""
        return self._episode_lengths[self._episode_ids[rows]] - self._positions[rows] >= length

    def _sample_starts(self, count: int, length: int) -> np.ndarray:
        """``count`` start rows drawn uniformly among valid starts for ``length``-row windows."""
        self._check_open()
        if self._size == 0:
            raise DataError("cannot sample from an empty ReplayBuffer; add rows first")
        chosen = []
        missing = count
        for _ in range(_REJECTION_ROUNDS):
            candidates = self._rng.integers(0, self._size, size=max(2 * missing, 64))
            accepted = candidates[self._window_fits(candidates, length)][:missing]
            chosen.append(accepted)
            missing -= accepted.size
            if missing == 0:
                return np.concatenate(chosen)
        # Valid starts are rare: enumerate them all (one vectorised pass) and draw from those.
        valid = np.flatnonzero(self._window_fits(np.arange(self._size), length))
        if valid.size == 0:
            runs = (
                self._episode_lengths[self._episode_ids[: self._size]]
                - self._positions[: self._size]
            )
            raise DataError(
                f"no episode has {length} consecutive rows stored yet (longest: "
                f"{int(runs.max())} rows; buffer holds {self._size} rows in "
                f"{self.num_episodes} episodes); add more data or use a shorter seq_len"
            )
        chosen.append(self._rng.choice(valid, size=missing))
        return np.concatenate(chosen)

    def _window_rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Ring indices ``[B, T]`` of the windows starting at ``starts [B]``."""
        rows = np.empty((starts.size, length), dtype=np.int64)
        rows[:, 0] = starts
        for offset in range(1, length):  # vectorised over the batch; T steps only
            rows[:, offset] = self._next_rows[rows[:, offset - 1]]
        return rows

    def sample(self, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` windows of ``seq_len`` rows, each inside one episode.

        Start rows are uniform among all valid starts (the unfinished current episodes count).

        Returns:
            ``obs [B, T, *obs_shape]`` (buffer's obs dtype: uint8 images stay uint8),
            ``actions [B, T, A]`` float32, ``rewards [B, T]`` float32, and bool
            ``terminated``, ``truncated``, ``is_first`` ``[B, T]``.

        Raises:
            DataError: no episode has ``seq_len`` rows stored yet.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if int(seq_len) != seq_len or seq_len < 1:
            raise ValueError(f"seq_len: expected an integer >= 1, got {seq_len!r}")
        if seq_len > self.capacity:
            raise DataError(f"seq_len {seq_len} exceeds the buffer capacity {self.capacity}")
        rows = self._window_rows(self._sample_starts(int(batch_size), int(seq_len)), int(seq_len))
        batch = {field: getattr(self, f"_{field}")[rows] for field in _ROW_FIELDS}
        self._note_read(rows.size)
        return batch

    def sample_stream(self, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` windows of ``seq_len`` rows that may cross episode boundaries.

        Each window starts at a stored row drawn uniformly and follows its episode; where the
        episode's stored rows end (a finished episode, or the unfinished current one), it goes
        on at the first stored row of an episode drawn uniformly, whose ``is_first`` is set.
        This is DreamerV3's replay (fixed-length chunks of the stream of episodes, reset by
        ``is_first``): short episodes are sampled as often as long ones, and episode ends
        (terminal rows) appear in windows wherever they fall.

        Returns:
            The keys and shapes of :meth:`sample`.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if int(seq_len) != seq_len or seq_len < 1:
            raise ValueError(f"seq_len: expected an integer >= 1, got {seq_len!r}")
        self._check_open()
        if self._size == 0:
            raise DataError("cannot sample from an empty ReplayBuffer; add rows first")
        B, T = int(batch_size), int(seq_len)
        rows = np.empty((B, T), dtype=np.int64)
        jumped = np.zeros((B, T), dtype=bool)
        current = self._rng.integers(0, self._size, size=B)
        firsts = None
        for t in range(T):
            rows[:, t] = current
            if t == T - 1:
                break
            following = self._next_rows[current].copy()
            ended = following < 0
            if ended.any():
                if firsts is None:  # first stored row of each episode: no stored row links to it
                    links = self._next_rows[: self._size]
                    linked = np.zeros(self._size, dtype=bool)
                    linked[links[links >= 0]] = True
                    firsts = np.flatnonzero(~linked)
                following[ended] = self._rng.choice(firsts, size=int(ended.sum()))
                jumped[ended, t + 1] = True
            current = following
        batch = {field: getattr(self, f"_{field}")[rows] for field in _ROW_FIELDS}
        batch["is_first"] = batch["is_first"] | jumped
        self._note_read(rows.size)
        return batch

    def _transitions(self, starts: np.ndarray) -> Transitions:
        following = self._next_rows[starts]
        transitions = Transitions(
            obs=self._obs[starts],
            actions=self._actions[following],
            rewards=self._rewards[following],
            next_obs=self._obs[following],
            terminated=self._terminated[following],
        )
        self._note_read(2 * starts.size)
        return transitions

    def sample_transitions(self, batch_size: int) -> Transitions:
        """Sample ``batch_size`` one-step transitions uniformly (for one-step models, e.g. PETS).

        Transition ``t`` pairs row ``t - 1`` and row ``t`` of one episode: ``obs = obs[t - 1]``,
        ``actions = actions[t]``, ``rewards = rewards[t]``, ``next_obs = obs[t]``,
        ``terminated = terminated[t]``. Shapes as in :class:`Transitions` with ``N = batch_size``.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        return self._transitions(self._sample_starts(int(batch_size), 2))

    def all_transitions(self) -> Transitions:
        """Every stored transition, oldest first (``N = num_steps``), e.g. for epoch training."""
        self._check_open()
        stored = np.arange(self._size)
        starts = stored[self._window_fits(stored, 2)]
        age_order = np.argsort((starts - self._cursor) % self.capacity, kind="stable")
        return self._transitions(starts[age_order])

    # ------------------------------------------------------------------ episode files
    def episodes(self) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Stored rows grouped by episode, oldest episode first: ``[(episode_id, episode)]``.

        Each episode dict holds the schema keys as arrays ``[rows, ...]``. An episode whose
        first rows were overwritten holds only its stored suffix (``is_first[0]`` is False).
        """
        self._check_open()
        stored = np.arange(self._size)
        order = np.lexsort((self._positions[stored], self._episode_ids[stored]))
        rows = stored[order]
        ids = self._episode_ids[rows]
        boundaries = np.flatnonzero(np.diff(ids)) + 1
        episodes = [
            (
                int(ids[group[0]]),
                {field: getattr(self, f"_{field}")[rows[group]] for field in _ROW_FIELDS},
            )
            for group in np.split(np.arange(rows.size), boundaries)
            if group.size
        ]
        self._note_read(rows.size)
        return episodes

    def save_episodes(
        self, directory: str | os.PathLike, *, prefix: str = "episode-"
    ) -> list[Path]:
        """Write every stored episode to ``directory/<prefix><episode id, 8 digits>.npz``.

        Unfinished episodes are written with the rows they have so far. Saving the same buffer
        again rewrites the same file names; give buffers sharing a directory distinct
        ``prefix`` values. Returns the paths written, oldest episode first.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [
            save_episode(directory / f"{prefix}{episode_id:08d}.npz", episode)
            for episode_id, episode in self.episodes()
        ]

    def load_episodes(self, directory: str | os.PathLike, *, pattern: str = "*.npz") -> int:
        """Add every episode file in ``directory`` (sorted by name); return how many were added.

        Every file is checked against this buffer's ``obs_shape``, ``action_dim`` and
        ``obs_dtype`` before any is added.

        Raises:
            DataError: the directory is missing or a file breaks the schema (file and key named).
        """
        paths = _episode_paths(directory, pattern)
        episodes = [
            load_episode(
                path, obs_shape=self.obs_shape, action_dim=self.action_dim, obs_dtype=self.obs_dtype
            )
            for path in paths
        ]
        for episode in episodes:
            self.add_episode(episode)
        logger.info("loaded %d episodes from %s", len(episodes), directory)
        return len(episodes)

    @classmethod
    def from_directory(
        cls,
        directory: str | os.PathLike,
        capacity: int | None = None,
        *,
        seed: int | None = None,
        pattern: str = "*.npz",
    ) -> ReplayBuffer:
        """New buffer holding the episode files of ``directory``; shapes come from the first file.

        ``capacity`` defaults to the total number of rows in the files.
        """
        paths = _episode_paths(directory, pattern)
        if not paths:
            raise DataError(f"{directory}: no episode files matching {pattern!r}")
        first = load_episode(paths[0])
        if capacity is None:
            capacity = 0
            for path in paths:
                with np.load(path, allow_pickle=False) as archive:
                    capacity += int(archive["rewards"].shape[0]) if "rewards" in archive else 0
        buffer = cls(
            max(1, capacity),
            obs_shape=first["obs"].shape[1:],
            action_dim=first["actions"].shape[1],
            obs_dtype=first["obs"].dtype,
            seed=seed,
        )
        buffer.load_episodes(directory, pattern=pattern)
        return buffer


def _storage_directory(directory: str | os.PathLike, overwrite: bool) -> Path:
    """The folder of a new disk buffer: created if missing, refused if it holds a buffer."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"directory: {str(path)!r} exists and is not a directory; storage='disk' needs a "
            "folder for its files"
        )
    names = (_META_FILE, _INDEX_FILE, *(f"{field}.npy" for field in _ROW_FIELDS))
    existing = [name for name in names if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"directory: {str(path)!r} already holds a replay buffer ({', '.join(existing)}); "
            f"reopen it with ReplayBuffer.open({str(path)!r}), pass overwrite=True to replace "
            "it, or choose another directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _episode_paths(directory: str | os.PathLike, pattern: str) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory of episode files")
    return sorted(path for path in directory.glob(pattern) if path.is_file())
