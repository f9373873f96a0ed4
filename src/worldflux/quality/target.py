"""What ``verify`` checks: a run directory, a saved-model directory or a registered family."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldflux.core.errors import CheckpointError, ConfigError, close_matches

__all__ = ["Subject", "resolve_target"]


@dataclass
class Subject:
    """A resolved target and the model the gates run on."""

    kind: str
    """``"run"``, ``"model"`` or ``"family"``."""
    target: str
    """The path or name as given."""
    model: Any
    """The world model (``None`` for a run whose agent has none)."""
    family_cls: type | None
    """The family's class, whose ``smoke_task`` the ``seed_success`` gate runs."""
    model_source: str
    """Where ``model`` came from, for the report."""
    run_dir: Path | None = None
    """The run directory (``kind == "run"``)."""

    @property
    def family(self) -> str | None:
        return getattr(self.family_cls, "family", None) if self.family_cls else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def resolve_target(target: str | os.PathLike, device: str = "cpu") -> Subject:
    """Load ``target``: a run directory, a saved model, or a family name (fresh default model).

    Raises:
        ConfigError: ``target`` is none of the three (the message says what each needs).
        CheckpointError: the saved model or checkpoint is missing, damaged or incompatible.
        RegistryError / ImportError: the family is unknown or its extra is not installed.
    """
    path = Path(target)
    text = str(target)
    if path.is_dir():
        config = _read_json(path / "config.json")
        if isinstance(config, dict) and "agent" in config and "train" in config:
            return _run_subject(path, text, device)
        if (path / "worldflux.json").is_file() or (path / "model.safetensors").is_file() or (
                isinstance(config, dict) and "family" in config):
            return _model_subject(path, text, device)
        raise ConfigError(
            f"TARGET {text}: a directory, but neither a run directory (config.json with 'agent' "
            "and 'train', written by `worldflux train`) nor a saved model (config.json, "
            "model.safetensors and worldflux.json, written by save_pretrained)"
        )
    if path.exists():
        raise ConfigError(f"TARGET {text}: a file, expected a run directory, a saved-model "
                          "directory or a registered family name")
    return _family_subject(text, device)


def _model_subject(path: Path, text: str, device: str) -> Subject:
    from worldflux.core.serialization import from_pretrained

    model = from_pretrained(path, device=device)
    return Subject("model", text, model, type(model), f"saved model {path}")


def _run_subject(path: Path, text: str, device: str) -> Subject:
    from worldflux.core.serialization import from_pretrained

    model_dir = path / "model"
    if (model_dir / "model.safetensors").is_file():
        model = from_pretrained(model_dir, device=device)
        return Subject("run", text, model, type(model), f"final model {model_dir}", path)
    from worldflux.training.evaluate import load_run

    try:
        agent, _, checkpoint, step = load_run(path, device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"TARGET {text}: no final model in {model_dir} and no usable "
                              f"checkpoint: {exc}") from None
    model = getattr(agent, "world_model", None)
    source = f"checkpoint {checkpoint} (step {step})"
    if model is None:
        return Subject("run", text, None, None, f"{source}; the agent has no world model", path)
    model.eval()
    return Subject("run", text, model, type(model), source, path)


def _family_subject(name: str, device: str) -> Subject:
    from worldflux.core.registry import WorldModelRegistry
    from worldflux.quality.smoke import build_smoke_model

    if name not in WorldModelRegistry:
        known = WorldModelRegistry.names()
        raise ConfigError(
            f"TARGET {name}: no such directory and not a registered family (known families: "
            f"{', '.join(known) or '(none)'}); give a run directory, a saved-model directory "
            f"or a family name.{close_matches(name, known)}"
        )
    entry = WorldModelRegistry.get(name)
    model = build_smoke_model(entry.cls, device=device)
    obs_spec, action_spec = entry.cls.smoke_specs()
    return Subject("family", name, model, entry.cls,
                   f"fresh '{entry.name}' model, default config, obs {obs_spec.shape}, "
                   f"{action_spec.dim} {action_spec.kind} action(s)")
