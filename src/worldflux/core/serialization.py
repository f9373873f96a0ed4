"""Save and load models: ``config.json`` + ``model.safetensors`` + ``worldflux.json``. No pickle.

Layout of a saved model directory::

    config.json        {"family": ..., "config": {...}, "obs_spec": {...}, "action_spec": {...}}
    model.safetensors  every parameter and buffer of the model (state_dict)
    worldflux.json     {"format_version", "worldflux_version", "family", "contract_fingerprint",
                        "sha256": {"model.safetensors": ...}}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from worldflux.core.config import from_dict, to_dict
from worldflux.core.device import resolve_device
from worldflux.core.errors import CheckpointError
from worldflux.core.io import atomic_write_bytes, atomic_write_text, sha256_file
from worldflux.core.spec import ActionSpec, ObservationSpec

FORMAT_VERSION = 1


def _version() -> str:
    from worldflux import __version__

    return __version__


def save_pretrained(model, directory: str | os.PathLike) -> None:
    """Write ``model`` to ``directory`` (created if needed); each file is written atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / "model.safetensors", save(tensors))
    config = {
        "family": model.family,
        "config": to_dict(model.config) if model.config is not None else None,
        "obs_spec": {"shape": list(model.obs_spec.shape), "dtype": model.obs_spec.dtype},
        "action_spec": {"dim": model.action_spec.dim, "kind": model.action_spec.kind,
                        "low": model.action_spec.low, "high": model.action_spec.high},
    }
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2, sort_keys=True))
    meta = {
        "format_version": FORMAT_VERSION,
        "worldflux_version": _version(),
        "family": model.family,
        "contract_fingerprint": model.io_contract().fingerprint(),
        "num_parameters": model.num_parameters(),
        "sha256": {"model.safetensors": sha256_file(directory / "model.safetensors")},
    }
    atomic_write_text(directory / "worldflux.json", json.dumps(meta, indent=2, sort_keys=True))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a saved model holds config.json, "
                              "model.safetensors and worldflux.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


def from_pretrained(path_or_repo: str | os.PathLike, *, device: str = "auto",
                    revision: str | None = None):
    """Rebuild a model saved with :meth:`WorldModel.save_pretrained`.

    ``path_or_repo`` is a local directory, or a Hugging Face Hub repository id (``user/name``),
    fetched with ``huggingface_hub`` when that package is installed. Weights are read with
    safetensors only; the file's checksum and the contract fingerprint are verified.
    """
    from safetensors.torch import load_file

    from worldflux.core.registry import WorldModelRegistry

    directory = Path(path_or_repo)
    if not directory.is_dir():
        directory = _download_from_hub(str(path_or_repo), revision)
    config_data = _read_json(directory / "config.json")
    meta = _read_json(directory / "worldflux.json")
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    expected_sha = meta.get("sha256", {}).get("model.safetensors")
    if expected_sha and sha256_file(weights) != expected_sha:
        raise CheckpointError(f"{weights}: checksum mismatch (file damaged or replaced)")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format_version {meta.get('format_version')} is newer than this "
            f"worldflux supports ({FORMAT_VERSION}); upgrade worldflux"
        )
    for key in ("family", "obs_spec", "action_spec"):
        if key not in config_data:
            raise CheckpointError(f"{directory / 'config.json'}: missing key '{key}'")
    entry = WorldModelRegistry.get(config_data["family"])
    obs_spec = ObservationSpec(tuple(config_data["obs_spec"]["shape"]), config_data["obs_spec"]["dtype"])
    action_spec = ActionSpec(**config_data["action_spec"])
    cfg = from_dict(entry.config_cls, config_data["config"]) if entry.config_cls else None
    model = entry.cls(cfg, obs_spec, action_spec)
    fingerprint = model.io_contract().fingerprint()
    if meta.get("contract_fingerprint") not in (None, fingerprint):
        raise CheckpointError(
            f"{directory}: contract fingerprint {meta['contract_fingerprint']} does not match "
            f"the rebuilt model's {fingerprint} (saved by worldflux {meta.get('worldflux_version')})"
        )
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: tensors do not match family '{entry.name}': missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.eval()
    return model.to(resolve_device(device))


def _download_from_hub(repo_id: str, revision: str | None) -> Path:
    if "/" not in repo_id or repo_id.startswith((".", "/")):
        raise CheckpointError(f"{repo_id}: no such directory, and not a Hub repository id (user/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError(
            f"{repo_id}: not a local directory; loading from the Hugging Face Hub needs "
            "`pip install huggingface_hub`"
        ) from exc
    path = snapshot_download(repo_id, revision=revision,
                             allow_patterns=["config.json", "model.safetensors", "worldflux.json"])
    return Path(path)


def state_dict_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors with safetensors (used by checkpoints)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def tempdir() -> str:
    return tempfile.mkdtemp(prefix="worldflux-")
