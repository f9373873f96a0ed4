"""Uniform random agent: the baseline every evaluation is compared against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worldflux.agents.base import Agent, AgentRegistry


@dataclass
class RandomAgentConfig:
    """The random agent has nothing to tune; the config exists so every agent has one."""


@AgentRegistry.register(
    "random",
    RandomAgentConfig,
    tier="reference",
    description="Uniform random actions; no model, no training (baseline).",
)
class RandomAgent(Agent):
    """Acts uniformly at random in the normalised action space and never trains.

    ``act`` ignores the observation and ``explore``; ``update`` returns no metrics. Its only
    state is the random generator, so a checkpointed run replays the same actions.
    """

    name = "random"

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        return self.random_action()

    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
