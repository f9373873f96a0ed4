"""The agent interface the training loop drives.

An agent owns its models, optimisers and planner. The loop (``worldflux.training``) owns the
environment, the replay buffer, logging, evaluation and checkpoints, and calls:

    agent.reset()                                   # at every episode start
    action = agent.act(obs, explore=True)           # obs [*obs_shape] -> action [A] (or int)
    metrics = agent.update(buffer, env_step=..., episode_done=...)   # after every env step

``update`` decides itself whether to train (PETS trains at episode ends, TD-MPC2 every step).
Agents are registered by name in :data:`AgentRegistry` with their config dataclass, and built
with :func:`build_agent`.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

from worldflux.core.registry import Registry, build_config
from worldflux.core.spec import ActionSpec, ObservationSpec


def _load_builtin_agents() -> None:
    import worldflux.agents.mpc  # noqa: F401
    import worldflux.agents.random_agent  # noqa: F401


AgentRegistry = Registry("agent", "worldflux.agents", _builtins=_load_builtin_agents)
"""Registry of agents: ``@AgentRegistry.register("pets", PETSAgentConfig)``; plugins add agents
through the entry-point group ``worldflux.agents``. Built-ins load on first lookup."""


class Agent(abc.ABC):
    """Base class of every agent.

    Args:
        config: the agent's config dataclass.
        obs_spec: observation spec of the (wrapped) environment.
        action_spec: action spec; continuous actions are normalised to ``[-1, 1]``.
        device: ``torch.device`` the agent's models live on.
        seed: seeds the agent's own random generators.
    """

    name: str = ""

    def __init__(self, config: Any, obs_spec: ObservationSpec, action_spec: ActionSpec,
                 device: torch.device, seed: int = 0) -> None:
        self.config = config
        self.obs_spec = obs_spec
        self.action_spec = action_spec
        self.device = device
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Called at the start of every episode (clears warm starts, recurrent state...)."""

    @abc.abstractmethod
    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        """Action for one observation ``[*obs_shape]`` -> ``[A]`` (float) or an index (discrete)."""

    @abc.abstractmethod
    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        """Train if it is time to; returns metrics to log (empty when nothing was done)."""

    def random_action(self) -> np.ndarray:
        """Uniform random action in the normalised action space."""
        if self.action_spec.kind == "discrete":
            return np.asarray(self.rng.integers(self.action_spec.dim))
        return self.rng.uniform(self.action_spec.low, self.action_spec.high,
                                self.action_spec.dim).astype(np.float32)

    @property
    def world_model(self):
        """The agent's :class:`~worldflux.core.model.WorldModel`, if it has one."""
        return None

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: tensors (nested dicts allowed) and numbers."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""

    def planner_metrics(self) -> dict[str, float]:
        """Metrics of the last decision (predicted return mean/std...), for logging."""
        return {}


def build_agent(name: str, obs_spec: ObservationSpec, action_spec: ActionSpec, *,
                device: torch.device, seed: int = 0, config: Any = None,
                overrides: dict[str, Any] | None = None) -> Agent:
    """Build agent ``name`` with its default config plus dotted ``overrides``."""
    entry = AgentRegistry.get(name)
    if config is None:
        config = build_config(entry.config_cls, overrides or {}, f"agent '{entry.name}'")
    elif overrides:
        from worldflux.core.config import apply_overrides

        config = apply_overrides(config, overrides)
    return entry.cls(config, obs_spec, action_spec, device, seed)


def agent_config_class(name: str) -> type:
    return AgentRegistry.get(name).config_cls  # type: ignore[return-value]
