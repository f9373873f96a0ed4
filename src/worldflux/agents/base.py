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
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from worldflux.core.distributed import DistContext
from worldflux.core.errors import ConfigError, WorldFluxError
from worldflux.core.precision import MixedPrecision
from worldflux.core.registry import Registry, build_config
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.core.types import LossOutput

logger = logging.getLogger(__name__)


def _load_builtin_agents() -> None:
    import worldflux.agents.dreamerv3  # noqa: F401
    import worldflux.agents.latent_mpc  # noqa: F401
    import worldflux.agents.mpc  # noqa: F401
    import worldflux.agents.random_agent  # noqa: F401
    import worldflux.agents.tdmpc2  # noqa: F401
    import worldflux.agents.token_world  # noqa: F401


AgentRegistry = Registry("agent", "worldflux.agents", _builtins=_load_builtin_agents)
"""Registry of agents: ``@AgentRegistry.register("pets", PETSAgentConfig)``; plugins add agents
through the entry-point group ``worldflux.agents``. Built-ins load on first lookup."""


class NonFiniteLossError(WorldFluxError, FloatingPointError):
    """Too many optimiser steps in a row had a non-finite loss or gradient; training stops."""


class NonFiniteGuard:
    """Skips optimiser steps whose loss or gradients are not finite, and stops a diverged run.

    Use around every optimiser step of an agent::

        out = model.loss(batch)
        if not self.nonfinite.loss_ok(out, "pets"):
            continue                                   # skipped and logged
        out.loss.backward()
        if not self.nonfinite.gradients_ok(model.named_parameters(), "pets"):
            continue
        optimizer.step()

    Args:
        limit: after this many skipped steps in a row, raise :class:`NonFiniteLossError` naming
            the loss terms (``LossOutput.components``) or parameters that went bad. The training
            loop sets it from ``train.max_nonfinite_steps``.
    """

    def __init__(self, limit: int = 10) -> None:
        self.limit = int(limit)
        self.in_a_row = 0
        """Skipped steps since the last good one (part of the agent's checkpointed state)."""
        self.skipped = 0
        """Skipped steps in total (since the agent was built)."""

    def loss_ok(self, out: LossOutput, where: str) -> bool:
        """True when ``out.loss`` is finite (the streak is not reset until the step is taken)."""
        if bool(torch.isfinite(out.loss.detach()).all()):
            return True
        bad = {name: float(value.detach().float().sum())
               for name, value in out.components.items()
               if not bool(torch.isfinite(value.detach()).all())}
        detail = (", ".join(f"{k}={v}" for k, v in bad.items()) if bad
                  else f"loss={float(out.loss.detach().float().sum())} (no component is)")
        self._skip(where, f"non-finite loss term(s) {detail}")
        return False

    def gradients_ok(self, named_parameters: Iterable[tuple[str, torch.Tensor]],
                     where: str) -> bool:
        """True when every gradient is finite; then the streak of skipped steps ends."""
        named = [(n, p.grad) for n, p in named_parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([g for _, g in named]) if named else None
        if norm is not None and not math.isfinite(float(norm)):
            bad = [n for n, g in named if not bool(torch.isfinite(g).all())]
            self._skip(where, f"non-finite gradient(s) of {', '.join(bad[:5])}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
            return False
        self.in_a_row = 0
        return True

    def skip(self, where: str, what: str) -> None:
        """Count a skipped step (e.g. another rank's loss went bad); raises at the limit."""
        self._skip(where, what)

    def _skip(self, where: str, what: str) -> None:
        self.in_a_row += 1
        self.skipped += 1
        logger.warning("%s: %s; optimiser step skipped (%d in a row, limit %d)", where, what,
                       self.in_a_row, self.limit)
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"{where}: {self.in_a_row} optimiser steps in a row were skipped "
                f"(train.max_nonfinite_steps={self.limit}); the last one had {what}. "
                "Training diverged: lower the learning rate or check the data"
            )


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
        self.nonfinite = NonFiniteGuard()
        """Skips non-finite optimiser steps; the loop sets ``nonfinite.limit``."""
        self.amp = MixedPrecision("fp32", device)
        """Mixed precision of training steps (``train.precision``); set by the loop."""
        self.dist = DistContext(device=device if device is not None else torch.device("cpu"))
        """Rank and world size under torchrun (one process by default); set by the loop."""
        self.save_point: Callable[[int], None] | None = None
        """Set by the loop. An agent whose :meth:`update` runs a long burst of optimiser steps
        (TD-MPC2's pretraining on the seed data) calls ``save_point(done)`` after each of them;
        the loop may then take a checkpoint, so a kill costs part of the burst, not all of it.
        The agent's :meth:`state_dict` must then hold what is left of the burst, and
        :meth:`finish_update` runs it after a resume."""

    supports_distributed: bool = False
    """Agents that can train under ``torchrun`` (DDP) set this and implement :meth:`serve` and
    :meth:`stop_workers`."""

    def configure_training(self, *, precision: str = "fp32", nonfinite_limit: int | None = None,
                           dist: DistContext | None = None) -> None:
        """Called by the training loop before the first step (and before a checkpoint is loaded).

        Raises:
            ConfigError: ``precision`` is unknown or not available on the device, or ``dist``
                has several ranks and the agent does not support distributed training.
        """
        self.amp = MixedPrecision(precision, self.device)
        if nonfinite_limit is not None:
            self.nonfinite.limit = int(nonfinite_limit)
        if dist is not None:
            if dist.enabled and not self.supports_distributed:
                raise ConfigError(f"agent '{self.name}': does not support distributed training "
                                  f"(WORLD_SIZE={dist.world_size}); run it without torchrun")
            self.dist = dist

    def serve(self) -> dict[str, float]:
        """Ranks other than 0: take part in rank 0's training rounds until it calls
        :meth:`stop_workers`; returns final metrics (e.g. the replica difference)."""
        raise ConfigError(f"agent '{self.name}': does not support distributed training")

    def stop_workers(self) -> dict[str, float]:
        """Rank 0: release the other ranks' :meth:`serve`; returns the same metrics."""
        return {}

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Called at the start of every episode (clears warm starts, recurrent state...)."""

    @abc.abstractmethod
    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        """Action for one observation ``[*obs_shape]`` -> ``[A]`` (float) or an index (discrete)."""

    @abc.abstractmethod
    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        """Train if it is time to; returns metrics to log (empty when nothing was done)."""

    def update_pending(self) -> bool:
        """Whether an :meth:`update` was checkpointed mid-way (see :attr:`save_point`)."""
        return False

    def finish_update(self, buffer) -> dict[str, float]:
        """Run the rest of an update checkpointed mid-way; returns the metrics the whole
        :meth:`update` would have returned."""
        return {}

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

    def networks(self) -> dict[str, torch.nn.Module]:
        """The agent's networks by their :meth:`state_dict` keys, for a warm start from another
        run (``train.init_from``): the world model under ``"model"`` by default; agents with
        more (an actor-critic) name them too."""
        return {"model": self.world_model} if self.world_model is not None else {}

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
