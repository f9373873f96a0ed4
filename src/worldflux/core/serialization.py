"""Save and load models: ``config.json`` + ``model.safetensors`` + ``worldflux.json``. No pickle.

Layout of a saved model directory::

    config.json        {"family": ..., "config": {...}, "obs_spec": {...}, "action_spec": {...}}
    model.safetensors  every parameter and buffer of the model (state_dict)
    worldflux.json     {"format_version", "worldflux_version", "family", "contract_fingerprint",
                        "sha256": {"model.safetensors": ...}}

On the Hugging Face Hub (``pip install "worldflux[hub]"``), :func:`push_to_hub` uploads these
three files plus a generated ``README.md`` model card, and :func:`from_pretrained` given a
repository id downloads exactly the three files (:data:`HUB_FILES`), never pickled weights.
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
HUB_FILES = ("config.json", "model.safetensors", "worldflux.json")
"""The files a saved model consists of; the only ones uploaded (with README.md) or downloaded."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
"""Weight files that unpickle when loaded: never read, never downloaded."""


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
                    revision: str | None = None, token: str | None = None):
    """Rebuild a model saved with :meth:`WorldModel.save_pretrained` (or :func:`push_to_hub`).

    ``path_or_repo`` is a local directory, or a Hugging Face Hub repository id (``user/name``)
    fetched with ``huggingface_hub`` (``pip install "worldflux[hub]"``): only the files in
    :data:`HUB_FILES` are downloaded, at ``revision`` (branch, tag or commit; default ``main``),
    with ``token`` for private repositories. Weights are read with safetensors only, never
    unpickled; the file's checksum and the contract fingerprint are verified.

    Raises:
        CheckpointError: missing or damaged files, only pickled weights, an unknown repository
            or revision, or the Hub unreachable with no cached copy.
        ImportError: a repository id was given but ``huggingface_hub`` is not installed.
    """
    from safetensors.torch import load_file

    from worldflux.core.registry import WorldModelRegistry

    directory = Path(path_or_repo)
    if not directory.is_dir():
        directory = _download_from_hub(str(path_or_repo), revision, token)
    config_data = _read_json(directory / "config.json")
    meta = _read_json(directory / "worldflux.json")
    weights = directory / "model.safetensors"
    if not weights.is_file():
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise CheckpointError(
                f"{weights}: missing; {directory} only holds pickled weights {pickled}, which "
                "worldflux refuses to load (unpickling can run arbitrary code): save the model "
                "with save_pretrained to get model.safetensors"
            )
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
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError on malformed files
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: tensors do not match family '{entry.name}': missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.eval()
    return model.to(resolve_device(device))


def _import_hub(what: str):
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the huggingface_hub package: pip install \"worldflux[hub]\""
        ) from exc
    return huggingface_hub


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or repo_id.startswith((".", "/", "~")):
        raise CheckpointError(
            f"{repo_id}: no such directory, and not a Hub repository id (expected 'user/name')"
        )


def _hub_error(repo_id: str, revision: str | None, exc: Exception) -> CheckpointError:
    """Translate an exception of ``huggingface_hub`` into a :class:`CheckpointError`."""
    from huggingface_hub import errors

    at = f" at revision '{revision}'" if revision else ""
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    if isinstance(exc, errors.RevisionNotFoundError):
        hint = f"revision '{revision}' does not exist there (give a branch, tag or commit)"
    elif isinstance(exc, errors.RepositoryNotFoundError):  # GatedRepoError included
        hint = ("repository not found, or private or gated: check the id, and pass token= or "
                "log in with `hf auth login`")
    elif isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled,
                          ConnectionError, TimeoutError)) or "Connect" in type(exc).__name__:
        hint = ("the Hub could not be reached and no cached copy was found: download it once "
                "while online (later loads work with HF_HUB_OFFLINE=1), or pass the path of a "
                "local directory written by save_pretrained")
    else:
        hint = "the Hub request failed"
    return CheckpointError(f"Hub repository '{repo_id}'{at}: {hint} ({detail})")


def _download_from_hub(repo_id: str, revision: str | None, token: str | None = None) -> Path:
    _check_repo_id(repo_id)
    hub = _import_hub(f"{repo_id}: not a local directory; loading from the Hugging Face Hub")
    try:
        path = hub.snapshot_download(repo_id, revision=revision, token=token,
                                     allow_patterns=list(HUB_FILES),
                                     library_name="worldflux", library_version=_version())
    except Exception as exc:  # every failure of the Hub client becomes a CheckpointError
        raise _hub_error(repo_id, revision, exc) from exc
    return Path(path)


def model_card(model, repo_id: str = "user/name") -> str:
    """``README.md`` for the model repository ``repo_id``: family, specs, config, contract
    fingerprint and a usage snippet (with a Hub front matter: ``library_name``, tags)."""
    family = model.family
    config = to_dict(model.config) if model.config is not None else None
    contract = model.io_contract()
    obs, action = model.obs_spec, model.action_spec
    front = "\n".join(["---", "library_name: worldflux", "tags:", "- worldflux",
                       "- world-model", "- model-based-rl", f"- {family}", "---"])
    return f"""{front}

# worldflux world model: `{family}`

A `{family}` world model saved with worldflux {_version()}; weights in safetensors (no pickle).

| | |
| --- | --- |
| family | `{family}` |
| observation | shape `{list(obs.shape)}`, dtype `{obs.dtype}` |
| action | `{action.kind}`, width {action.dim}, bounds [{action.low}, {action.high}] |
| parameters | {model.num_parameters():,} |
| contract fingerprint | `{contract.fingerprint()}` |

## Usage

```python
import worldflux

model = worldflux.from_pretrained("{repo_id}")  # downloads config.json, model.safetensors, worldflux.json
state = model.encode(obs)                     # obs [B, {", ".join(str(s) for s in obs.shape)}]
trajectory = model.rollout(state, actions)    # actions [B, T, {action.dim}]
```

## Config

```json
{json.dumps(config, indent=2, sort_keys=True)}
```
"""


def push_to_hub(model, repo_id: str, *, token: str | None = None, private: bool | None = None,
                revision: str | None = None,
                commit_message: str = "Upload worldflux model",
                create_repo: bool = True) -> str:
    """Upload ``model`` to the Hugging Face Hub model repository ``repo_id`` (``user/name``).

    The model is written with :func:`save_pretrained` into a temporary directory, a
    ``README.md`` model card (:func:`model_card`) is added, and these four files are uploaded in
    one commit with ``huggingface_hub.HfApi.upload_folder``. Load it back with
    ``from_pretrained(repo_id)``.

    Args:
        model: a :class:`~worldflux.core.model.WorldModel`.
        repo_id: ``user/name`` or ``organisation/name``.
        token: Hub token with write access (default: the logged-in user's, or ``HF_TOKEN``).
        private: visibility of a repository created here (default: the Hub's default).
        revision: branch to commit to (created from ``main`` when missing); default ``main``.
        commit_message: message of the commit.
        create_repo: create the repository first (nothing happens if it exists).

    Returns:
        The URL of the commit (or its id when the Hub gives no URL).

    Raises:
        ImportError: ``huggingface_hub`` is not installed (``pip install "worldflux[hub]"``).
        CheckpointError: an invalid ``repo_id``, or the Hub refused or could not be reached.
    """
    _check_repo_id(repo_id)
    hub = _import_hub(f"push_to_hub('{repo_id}')")
    with tempfile.TemporaryDirectory(prefix="worldflux-push-") as folder:
        save_pretrained(model, folder)
        atomic_write_text(Path(folder) / "README.md", model_card(model, repo_id))
        try:
            api = hub.HfApi(token=token)
            if create_repo:
                api.create_repo(repo_id, token=token, private=private, repo_type="model",
                                exist_ok=True)
                if revision is not None and revision != "main":
                    api.create_branch(repo_id, branch=revision, token=token, repo_type="model",
                                      exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, token=token,
                                     repo_type="model", revision=revision,
                                     commit_message=commit_message,
                                     allow_patterns=[*HUB_FILES, "README.md"])
        except Exception as exc:  # every failure of the Hub client becomes a CheckpointError
            raise _hub_error(repo_id, revision, exc) from exc
    url = getattr(info, "commit_url", None) or getattr(info, "oid", None)
    return str(url if url else info)


def state_dict_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors with safetensors (used by checkpoints)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def tempdir() -> str:
    return tempfile.mkdtemp(prefix="worldflux-")
