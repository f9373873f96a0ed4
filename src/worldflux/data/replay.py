"""``ReplayBuffer``: flat NumPy ring storage of rows, sampled as windows inside one episode.

See :mod:`worldflux.data` for the row convention. Storage is one array per field with
``capacity`` rows at most, allocated lazily and grown geometrically, plus three int64 arrays
per row: the episode id, the row's position in its episode, and the ring index of the next row
of the same episode (``-1`` while there is none). Rows of parallel streams may interleave in
the ring; the next-row links keep each episode's order.

Validity of a window is O(1) per start row: the ring overwrites rows in write order and an
episode writes its rows in position order, so the rows of an episode still stored are always a
suffix of it. A stored row at position ``p`` of episode ``e`` therefore starts a valid window
of ``T`` rows iff ``episode_length[e] - p >= T``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worldflux.core.errors import DataError
from worldflux.data.episodes import (
    EPISODE_KEYS,
    _coerce,
    load_episode,
    save_episode,
    validate_episode,
)

logger = logging.getLogger(__name__)

__all__ = ["ReplayBuffer", "Transitions"]

_INITIAL_ROWS = 1024
_REJECTION_ROUNDS = 8


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

    Example::

        buffer = ReplayBuffer(100_000, obs_shape=(5,), action_dim=1, seed=0)
        buffer.add(obs, np.zeros(1), 0.0, False, False, is_first=True)
        ...
        batch = buffer.sample(batch_size=16, seq_len=64)   # batch["obs"]: [16, 64, 5]
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_dim: int,
        obs_dtype: Any = None,
        seed: int | None = None,
    ) -> None:
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
        return (
            f"ReplayBuffer(rows={self._size}/{self.capacity}, episodes={self.num_episodes}, "
            f"obs_shape={self.obs_shape}, obs_dtype={self.obs_dtype}, "
            f"action_dim={self.action_dim})"
        )

    def sampler_state(self) -> dict[str, Any]:
        """State of the sampling random generator (for checkpoints; the rows are saved apart)."""
        return {"bit_generator": self._rng.bit_generator.state}

    def load_sampler_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`sampler_state`."""
        self._rng.bit_generator.state = dict(state["bit_generator"])

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
        for name in (
            "_obs",
            "_actions",
            "_rewards",
            "_terminated",
            "_truncated",
            "_is_first",
            "_episode_ids",
            "_positions",
            "_next_rows",
        ):
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
        return rows

    # ------------------------------------------------------------------ sampling
    def _window_fits(self, rows: np.ndarray, length: int) -> np.ndarray:
        """Bool ``[N]``: a window of ``length`` rows of one episode starts at each stored row."""
        return self._episode_lengths[self._episode_ids[rows]] - self._positions[rows] >= length

    def _sample_starts(self, count: int, length: int) -> np.ndarray:
        """``count`` start rows drawn uniformly among valid starts for ``length``-row windows."""
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
        return {
            "obs": self._obs[rows],
            "actions": self._actions[rows],
            "rewards": self._rewards[rows],
            "terminated": self._terminated[rows],
            "truncated": self._truncated[rows],
            "is_first": self._is_first[rows],
        }

    def _transitions(self, starts: np.ndarray) -> Transitions:
        following = self._next_rows[starts]
        return Transitions(
            obs=self._obs[starts],
            actions=self._actions[following],
            rewards=self._rewards[following],
            next_obs=self._obs[following],
            terminated=self._terminated[following],
        )

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
        stored = np.arange(self._size)
        order = np.lexsort((self._positions[stored], self._episode_ids[stored]))
        rows = stored[order]
        ids = self._episode_ids[rows]
        boundaries = np.flatnonzero(np.diff(ids)) + 1
        fields = {
            "obs": self._obs,
            "actions": self._actions,
            "rewards": self._rewards,
            "terminated": self._terminated,
            "truncated": self._truncated,
            "is_first": self._is_first,
        }
        return [
            (int(ids[group[0]]), {key: value[rows[group]] for key, value in fields.items()})
            for group in np.split(np.arange(rows.size), boundaries)
            if group.size
        ]

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


def _episode_paths(directory: str | os.PathLike, pattern: str) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory of episode files")
    return sorted(path for path in directory.glob(pattern) if path.is_file())
