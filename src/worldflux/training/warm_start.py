"""Warm start: a new run whose networks start from another run's (``train.init_from``).

``init_from`` names one of

* a run directory: its newest checkpoint that verifies;
* a checkpoint directory (``RUN_DIR/checkpoints/step_XXXXXXXX``);
* a saved model (``RUN_DIR/model``, any :meth:`WorldModel.save_pretrained` directory or a
  Hugging Face Hub id): the world model only.

From a checkpoint every network the agent names in :meth:`Agent.networks` is loaded (the world
model, and an actor-critic where the agent has one). Optimisers, counters, the replay buffer and
the random generators start fresh, and every other setting may differ (learning rates, planner,
horizon, seed, task with the same spaces): this is how a run is forked to try other settings
from a common start, or fine-tuned. The networks' shapes must match; a mismatch is named before
the first step. Checkpoints are read with safetensors and JSON only, never unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.training.checkpoint import MANIFEST_FILE, latest_checkpoint, load_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["warm_start"]


def warm_start(agent, agent_name: str, source: str) -> dict[str, str]:
    """Load ``agent``'s networks from ``source`` (see the module docstring) in place.

    Returns ``{network: where it came from}``.

    Raises:
        ConfigError: ``source`` is none of the above, belongs to another agent or model
            family, lacks a network the agent has, or a network's parameters differ in names
            or shapes.
        CheckpointError: the checkpoint is damaged (a damaged saved model: ConfigError).
    """
    path = Path(source)
    networks = agent.networks()
    if not networks:
        raise ConfigError(f"train.init_from: agent '{agent_name}' has no networks to start "
                          "from another run's")
    if (path / "checkpoints").is_dir() or (path / MANIFEST_FILE).is_file():
        checkpoint = path if (path / MANIFEST_FILE).is_file() else latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"train.init_from: {path} has no checkpoint that verifies")
        _check_agent(checkpoint, agent_name)
        saved = load_checkpoint(checkpoint)["state"]["agent"]
        for name, module in networks.items():
            if name not in saved or not isinstance(saved[name], Mapping):
                raise ConfigError(f"train.init_from: {checkpoint} holds no network '{name}' "
                                  f"(it holds {sorted(saved)})")
            _load(module, saved[name], name, checkpoint)
        origin = {name: str(checkpoint) for name in networks}
    elif (path / "model.safetensors").is_file() or not path.exists():
        from worldflux.core.serialization import from_pretrained

        if "model" not in networks or agent.world_model is None:
            raise ConfigError(f"train.init_from: {source} is a saved world model; agent "
                              f"'{agent_name}' has none to load it into")
        try:
            model = from_pretrained(source, device="cpu")
        except (CheckpointError, ImportError) as exc:
            where = "" if path.exists() else "no such local directory; as a Hub id: "
            raise ConfigError(f"train.init_from: {source}: {where}{exc}") from exc
        if model.family != agent.world_model.family:
            raise ConfigError(f"train.init_from: {source} holds a '{model.family}' world model, "
                              f"agent '{agent_name}' uses '{agent.world_model.family}'")
        _load(networks["model"], model.state_dict(), "model", source)
        origin = {"model": str(source)}
    else:
        raise ConfigError(f"train.init_from: {source} is not a run directory (with checkpoints/),"
                          " a checkpoint directory (with manifest.json) or a saved model "
                          "(with model.safetensors)")
    logger.info("init_from: %s", ", ".join(f"{k} from {v}" for k, v in origin.items()))
    return origin


def _check_agent(checkpoint: Path, agent_name: str) -> None:
    """The run that wrote ``checkpoint`` (``../../config.json``) must be of ``agent_name``."""
    from worldflux.agents.base import AgentRegistry

    config = checkpoint.parent.parent / "config.json"
    if not config.is_file():
        return  # a checkpoint copied out of its run: the networks' shapes are still checked
    try:
        saved_agent = json.loads(config.read_text(encoding="utf-8"))["agent"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"train.init_from: {config} is not a valid run config ({exc!r})") \
            from None
    if AgentRegistry.get(saved_agent).name != AgentRegistry.get(agent_name).name:
        raise ConfigError(f"train.init_from: {checkpoint} is from a run of agent "
                          f"'{saved_agent}', this run's agent is '{agent_name}'")


def _load(module: nn.Module, state: Mapping[str, torch.Tensor], name: str, where) -> None:
    """``module.load_state_dict(state)`` with every difference named first."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: saved {list(state[k].shape)}, this run {list(own[k].shape)}"
              for k in sorted(set(own) & set(state))
              if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape(s) differ ({'; '.join(shapes[:4])}"
                         + (", ..." if len(shapes) > 4 else "") + ")")
        if missing:
            parts.append(f"missing {missing[:4]}" + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            parts.append(f"not in this run {unexpected[:4]}"
                         + (" ..." if len(unexpected) > 4 else ""))
        raise ConfigError(f"train.init_from: the '{name}' network of {where} does not fit this "
                          f"run's: {'; '.join(parts)}. Sizes (model size, widths, latent) must "
                          "be those of the run it comes from")
    module.load_state_dict({k: v.to(own[k].device) for k, v in state.items()})
