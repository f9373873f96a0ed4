"""Checkpoints of a training run, without pickle.

A checkpoint is one directory, written atomically (built under a temporary name, then renamed)::

    RUN_DIR/checkpoints/step_00001000/
        tensors.safetensors   every tensor and numpy array of the state, keys joined with '/'
        state.json            the rest of the nested state (numbers, strings, lists, RNG states),
                              with {"__tensor__": key} / {"__ndarray__": key} where arrays were
        manifest.json         format version, step, worldflux version, SHA-256 and size per file

The state is any nested mapping of tensors, numpy arrays, numpy generators, numbers, strings,
None, lists and dicts with string keys (or only integer keys, as in torch optimizer states).
It comes back with the same nesting (tuples as lists,
tensors on the CPU, numpy generators as new generators in the saved state).
:func:`latest_checkpoint` returns the newest checkpoint whose files match their checksums,
skipping damaged ones with a warning that names them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldflux.core.errors import CheckpointError
from worldflux.core.io import sha256_file
from worldflux.core.serialization import state_dict_to_bytes

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "capture_rng_state",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
_TENSOR, _NDARRAY, _GENERATOR = "__tensor__", "__ndarray__", "__numpy_generator__"
_INT_KEYS = "__int_keys__"  # dicts keyed by integers (torch optimizer states)
_MARKERS = (_TENSOR, _NDARRAY, _GENERATOR, _INT_KEYS)
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``RUN_DIR/checkpoints/step_XXXXXXXX`` for agent step ``step``."""
    return Path(run_dir) / "checkpoints" / f"step_{int(step):08d}"


# -- encoding ------------------------------------------------------------------------------------
def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``value``; tensors and arrays move into ``tensors`` under ``path``."""
    where = path or "<root>"
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {_TENSOR: path}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise CheckpointError(
                f"checkpoint state '{where}': got a numpy array of dtype {value.dtype}, "
                "expected bool, integer or float (object and string arrays need pickle)"
            )
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {_NDARRAY: path}
    if isinstance(value, np.random.Generator):
        return {_GENERATOR: _encode(value.bit_generator.state, f"{path}/bit_generator", tensors)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in _MARKERS:
            raise CheckpointError(
                f"checkpoint state '{where}': the key {next(iter(value))!r} is reserved"
            )
        if value and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
            return {_INT_KEYS: {str(k): _encode(item, f"{path}/{k}" if path else str(k), tensors)
                                for k, item in value.items()}}
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key:
                raise CheckpointError(
                    f"checkpoint state '{where}': got key {key!r}, expected a string without '/'"
                )
            out[key] = _encode(item, f"{path}/{key}" if path else key, tensors)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(item, f"{path}/{i}" if path else str(i), tensors)
                for i, item in enumerate(value)]
    raise CheckpointError(
        f"checkpoint state '{where}': got {type(value).__name__}, expected a tensor, numpy array, "
        "number, string, None, list or dict"
    )


def _decode(value: Any, tensors: Mapping[str, torch.Tensor], where: Path) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in _MARKERS:
            marker, key = next(iter(value.items()))
            if marker == _INT_KEYS:
                return {int(k): _decode(v, tensors, where) for k, v in key.items()}
            if marker == _GENERATOR:
                state = _decode(key, tensors, where)
                generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
                generator.bit_generator.state = state
                return generator
            if key not in tensors:
                raise CheckpointError(f"{where / STATE_FILE}: refers to tensor '{key}', missing "
                                      f"from {TENSORS_FILE}")
            return tensors[key] if marker == _TENSOR else tensors[key].numpy()
        return {k: _decode(v, tensors, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    return value


# -- save / verify / load ------------------------------------------------------------------------
def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: Mapping[str, Any]) -> Path:
    """Write ``state`` as ``RUN_DIR/checkpoints/step_XXXXXXXX`` and return that directory.

    The directory appears complete or not at all: files are written into a temporary directory
    beside it, which is then renamed. An existing checkpoint of the same step is replaced.
    """
    from worldflux import __version__

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "", tensors)
    final = checkpoint_path(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        _fsync_write(tmp / TENSORS_FILE, state_dict_to_bytes(tensors))
        payload = {"format_version": CHECKPOINT_FORMAT_VERSION, "step": int(step), "state": tree}
        _fsync_write(tmp / STATE_FILE, json.dumps(payload).encode("utf-8"))
        files = {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                 for name in (TENSORS_FILE, STATE_FILE)}
        manifest = {"format_version": CHECKPOINT_FORMAT_VERSION, "step": int(step),
                    "worldflux_version": __version__, "created": time.time(), "files": files}
        _fsync_write(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2).encode("utf-8"))
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check the manifest and every file's size and SHA-256; return the manifest.

    Raises:
        CheckpointError: naming the checkpoint and the missing, damaged or unreadable file.
    """
    path = Path(path)
    manifest_file = path / MANIFEST_FILE
    if not manifest_file.is_file():
        raise CheckpointError(f"{manifest_file}: missing (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_file}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{manifest_file}: expected an object with a 'files' entry")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_file}: format_version {version!r}, this worldflux reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}; upgrade worldflux"
        )
    for name in (TENSORS_FILE, STATE_FILE):
        expected = manifest["files"].get(name)
        file = path / name
        if expected is None:
            raise CheckpointError(f"{manifest_file}: no checksum for {name}")
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if file.stat().st_size != expected.get("bytes") or sha256_file(file) != expected.get("sha256"):
            raise CheckpointError(f"{file}: checksum mismatch (file damaged or replaced)")
    return manifest


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``{"step": int, "state": {...}}``.

    Tensors come back on the CPU; the caller (an agent's ``load_state_dict``) moves them.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if verify:
        verify_checkpoint(path)
    try:
        payload = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / TENSORS_FILE))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{exc.filename}: missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    return {"step": int(payload["step"]), "state": _decode(payload["state"], tensors, path)}


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies, or None when there is none.

    A damaged checkpoint is skipped with a ``RuntimeWarning`` naming it and what is wrong.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping damaged checkpoint {path}: {exc}", RuntimeWarning,
                          stacklevel=2)
            continue
        return path
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep: int,
                      counts: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints of ``run_dir``; return the deleted ones.

    Nothing is deleted unless the newest checkpoint verifies, so a damaged write never costs
    the older good ones. ``counts(path)`` says whether a checkpoint counts towards ``keep``
    (default: all do); one that does not is kept while it is newer than the ``keep``-th that
    does, and deleted with the rest once it is older. ``keep < 1`` keeps everything.
    """
    if keep < 1:
        return []
    paths = list_checkpoints(run_dir)
    if len(paths) <= keep:
        return []
    try:
        verify_checkpoint(paths[-1])
    except CheckpointError as exc:
        warnings.warn(f"not pruning {Path(run_dir) / 'checkpoints'}: the newest checkpoint "
                      f"does not verify ({exc})", RuntimeWarning, stacklevel=2)
        return []
    kept, deleted = 0, []
    for path in reversed(paths):
        if kept >= keep:
            shutil.rmtree(path)
            deleted.append(path)
        elif counts is None or counts(path):
            kept += 1
    if deleted:
        _fsync_dir(Path(run_dir) / "checkpoints")
    return deleted


# -- random number generators ------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """States of the global generators (torch CPU and CUDA, numpy legacy, Python ``random``).

    Torch states are uint8 tensors, so they land in the safetensors file.
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(legacy=False),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (accepts the lists a checkpoint gives back)."""
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu()
                                      for s in state["torch_cuda"]])
