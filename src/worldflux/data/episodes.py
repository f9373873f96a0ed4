"""Episode files: one compressed ``.npz`` per episode, with a checked schema.

Schema (``SCHEMA_VERSION = 1``), for an episode of ``L`` actions stored as ``L + 1`` rows
(see :mod:`worldflux.data` for the row convention):

=================  ==================  ====================================================
key                dtype               shape
=================  ==================  ====================================================
``obs``            float32 or uint8    ``[L + 1, *obs_shape]``
``actions``        float32             ``[L + 1, A]`` (row 0 is zeros)
``rewards``        float32             ``[L + 1]`` (row 0 is 0)
``terminated``     bool                ``[L + 1]``
``truncated``      bool                ``[L + 1]``
``is_first``       bool                ``[L + 1]``
``schema_version`` int64               ``[]`` (a 0-d array holding ``SCHEMA_VERSION``)
=================  ==================  ====================================================

Files are written atomically (a crash never leaves a half-written file under the final name)
and read with ``allow_pickle=False``. Every key, dtype and shape is checked on load; a bad
file raises :class:`~worldflux.core.errors.DataError` naming the file, the key, and what was
seen vs expected.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worldflux.core.errors import DataError
from worldflux.core.io import atomic_write_bytes

__all__ = ["EPISODE_KEYS", "SCHEMA_VERSION", "load_episode", "save_episode", "validate_episode"]

SCHEMA_VERSION = 1
EPISODE_KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "is_first")
_FLAG_KEYS = ("terminated", "truncated", "is_first")
_OBS_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8))


def _coerce(episode: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Cast an in-memory episode to the schema dtypes (obs: uint8 kept, anything else float32)."""
    missing = [key for key in EPISODE_KEYS if key not in episode and key != "is_first"]
    if missing:
        raise DataError(f"episode: missing key(s) {missing}; expected keys {list(EPISODE_KEYS)}")
    obs = np.asarray(episode["obs"])
    if obs.dtype != np.uint8:
        obs = obs.astype(np.float32, copy=False)
    out = {
        "obs": obs,
        "actions": np.asarray(episode["actions"], dtype=np.float32),
        "rewards": np.asarray(episode["rewards"], dtype=np.float32),
        "terminated": np.asarray(episode["terminated"], dtype=bool),
        "truncated": np.asarray(episode["truncated"], dtype=bool),
    }
    if "is_first" in episode:
        out["is_first"] = np.asarray(episode["is_first"], dtype=bool)
    else:
        is_first = np.zeros(len(obs), dtype=bool)
        is_first[:1] = True
        out["is_first"] = is_first
    return out


def validate_episode(
    episode: Mapping[str, np.ndarray],
    *,
    obs_shape: tuple[int, ...] | None = None,
    action_dim: int | None = None,
    obs_dtype: Any = None,
    source: str = "episode",
) -> int:
    """Check an episode dict against the schema and return its number of rows ``L + 1``.

    ``obs_shape``, ``action_dim`` and ``obs_dtype``, when given, must match too. ``source``
    names the file or object in error messages.

    Raises:
        DataError: naming ``source``, the key, and what was seen vs expected.
    """
    for key in EPISODE_KEYS:
        if key not in episode:
            raise DataError(f"{source}: missing key {key!r}; expected keys {list(EPISODE_KEYS)}")
    obs = episode["obs"]
    if obs_dtype is not None and obs.dtype != np.dtype(obs_dtype):
        raise DataError(
            f"{source}: key 'obs' has dtype {obs.dtype}, expected {np.dtype(obs_dtype)}"
        )
    if obs.dtype not in _OBS_DTYPES:
        raise DataError(f"{source}: key 'obs' has dtype {obs.dtype}, expected float32 or uint8")
    if obs.ndim < 1 or obs.shape[0] < 1:
        raise DataError(f"{source}: key 'obs' has shape {obs.shape}, expected [L + 1, *obs_shape]")
    rows = obs.shape[0]
    if obs_shape is not None and tuple(obs.shape[1:]) != tuple(obs_shape):
        raise DataError(
            f"{source}: key 'obs' has shape {obs.shape}, expected [{rows}, "
            f"{', '.join(map(str, obs_shape))}] (obs_shape {tuple(obs_shape)})"
        )
    expected_action_dim = "A" if action_dim is None else str(action_dim)
    checks = {
        "actions": (np.dtype(np.float32), 2, f"[{rows}, {expected_action_dim}]"),
        "rewards": (np.dtype(np.float32), 1, f"[{rows}]"),
        **{key: (np.dtype(bool), 1, f"[{rows}]") for key in _FLAG_KEYS},
    }
    for key, (dtype, ndim, shape_text) in checks.items():
        value = episode[key]
        if value.dtype != dtype:
            raise DataError(f"{source}: key {key!r} has dtype {value.dtype}, expected {dtype}")
        bad_shape = value.ndim != ndim or value.shape[0] != rows
        if key == "actions" and action_dim is not None and not bad_shape:
            bad_shape = value.shape[1] != action_dim
        if bad_shape:
            raise DataError(
                f"{source}: key {key!r} has shape {value.shape}, expected {shape_text} "
                f"(rows must match obs: {rows})"
            )
    for key in ("obs", "actions", "rewards"):
        value = episode[key]
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise DataError(f"{source}: key {key!r} contains NaN or inf values")
    return rows


def save_episode(path: str | os.PathLike, episode: Mapping[str, Any]) -> Path:
    """Write one episode to ``path`` (``.npz`` appended if missing), atomically.

    ``episode`` holds the schema keys as arrays ``[L + 1, ...]``; values are cast to the schema
    dtypes (float obs become float32, uint8 obs stay uint8) and ``is_first`` may be omitted
    (row 0 is then the first). Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = _coerce(episode)
    validate_episode(arrays, source=str(path))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, schema_version=np.array(SCHEMA_VERSION, dtype=np.int64))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_episode(
    path: str | os.PathLike,
    *,
    obs_shape: tuple[int, ...] | None = None,
    action_dim: int | None = None,
    obs_dtype: Any = None,
) -> dict[str, np.ndarray]:
    """Read and check one episode file written by :func:`save_episode`.

    Returns a dict with the keys of :data:`EPISODE_KEYS` (``schema_version`` dropped), arrays
    ``[L + 1, ...]``. ``obs_shape``, ``action_dim`` and ``obs_dtype`` are checked when given.

    Raises:
        DataError: the file is missing, unreadable, pickled, of another schema version, or has
            a missing/unknown key or a wrong dtype or shape (the message names file and key).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: no such episode file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:  # object arrays need pickle, which we refuse
        raise DataError(f"{source}: could not be read without pickle ({error})") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{source}: not a readable .npz file ({error})") from error
    if "schema_version" not in arrays:
        raise DataError(f"{source}: missing key 'schema_version'; expected {SCHEMA_VERSION}")
    version = arrays.pop("schema_version")
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != SCHEMA_VERSION:
        raise DataError(
            f"{source}: key 'schema_version' is {version!r}, expected a 0-d integer array "
            f"equal to {SCHEMA_VERSION}"
        )
    unknown = sorted(set(arrays) - set(EPISODE_KEYS))
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown}; expected keys {list(EPISODE_KEYS)}")
    validate_episode(
        arrays, obs_shape=obs_shape, action_dim=action_dim, obs_dtype=obs_dtype, source=source
    )
    return arrays
