"""``token`` agent: collects game frames and fits the ``token`` world model through ``worldflux train``.

The agent does not plan: it explores (random or sticky-random arrow keys) so that the training
loop fills the replay buffer, and trains the model's two components from it with their own
optimisers, separately or in sequence:

    worldflux train token --env worldflux/Breakout64-v0 --steps 20000 --set train.obs_type=image
    worldflux train token ... --set components=tokenizer                  # stage 1 alone
    worldflux train token ... --set components=dynamics --set pretrained=runs/stage1
    worldflux play runs/breakout                                          # then play it

``components=both`` trains the tokenizer alone for ``tokenizer_warmup`` updates, then both;
``pretrained`` starts from the weights of an earlier run (its ``model/`` folder) or a
``save_pretrained`` folder. The final model is saved to ``RUN_DIR/model`` by the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from worldflux.agents.base import Agent, AgentRegistry
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.models.token import TokenConfig, TokenModel


@dataclass
class TokenAgentConfig:
    """Exploration and training schedule of the ``token`` agent."""

    model: TokenConfig = field(default_factory=TokenConfig)
    """The world model (``--set model.history=4``)."""
    components: Literal["both", "tokenizer", "dynamics"] = "both"
    """What trains: the tokenizer, the dynamics (tokenizer frozen, e.g. from ``pretrained``),
    or both in sequence (tokenizer first, see ``tokenizer_warmup``)."""
    pretrained: str | None = None
    """Run directory or ``save_pretrained`` folder whose weights the model starts from."""
    tokenizer_warmup: int = 500
    """With ``components=both``: updates that train the tokenizer alone before the dynamics
    joins (the dynamics learns nothing useful from codes that are still moving fast)."""
    policy: Literal["random", "sticky"] = "sticky"
    """Exploration: uniform random keys, or keys held for a while (``stickiness``)."""
    stickiness: float = 0.8
    """Probability of repeating the previous key (``policy=sticky``)."""
    learning_starts: int = 500
    """Env steps collected before the first update."""
    train_every: int = 4
    """Env steps between updates."""
    batch_size: int = 16
    """Sequences per update."""
    seq_len: int = 8
    """Rows per sequence (the dynamics predicts rows 1..seq_len-1 of each)."""
    game: int = 0
    """Game embedding index of the env's frames (several-game models)."""

    def validate(self) -> None:
        self.model.validate()
        if self.components not in ("both", "tokenizer", "dynamics"):
            raise ConfigError(f"components: got {self.components!r}, expected both, tokenizer or "
                              "dynamics")
        if self.policy not in ("random", "sticky"):
            raise ConfigError(f"policy: got {self.policy!r}, expected random or sticky")
        for name in ("train_every", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len: got {self.seq_len}, expected >= 2")


@AgentRegistry.register("token", TokenAgentConfig, tier="experimental",
                        description="Explores a game and fits the token world model "
                                    "(tokenizer and dynamics with their own optimisers)")
class TokenAgent(Agent):
    """Fits a :class:`~worldflux.models.token.TokenModel` to the frames it collects."""

    name = "token"

    def __init__(self, config: TokenAgentConfig, obs_spec: ObservationSpec,
                 action_spec: ActionSpec, device: torch.device, seed: int = 0) -> None:
        super().__init__(config, obs_spec, action_spec, device, seed)
        config.validate()
        if action_spec.kind != "discrete":
            raise ConfigError(f"agent 'token': got {action_spec.kind} actions, expected discrete "
                              "(the native games, Atari)")
        torch.manual_seed(seed)
        self.model = TokenModel(config.model, obs_spec, action_spec).to(device)
        if config.pretrained:
            from worldflux.play.session import load_play_model

            source = load_play_model(config.pretrained, device=str(device))
            self.model.load_state_dict(source.state_dict())
        self.optimizers = self.model.optimizers()
        self.updates = 0
        self.previous_action = 0

    @property
    def world_model(self):
        return self.model

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        keep = self.config.policy == "sticky" and self.rng.random() < self.config.stickiness
        if not keep:
            self.previous_action = int(self.rng.integers(self.action_spec.dim))
        return np.asarray(self.previous_action)

    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        c = self.config
        if env_step < c.learning_starts or env_step % c.train_every:
            return {}
        try:
            sample = buffer.sample(c.batch_size, c.seq_len)
        except Exception:  # no episode long enough yet
            return {}
        batch = {k: torch.as_tensor(v, device=self.device) for k, v in sample.items()}
        batch["game"] = torch.full((c.batch_size,), c.game, dtype=torch.long, device=self.device)
        metrics: dict[str, float] = {}
        self.model.train()
        train_tokenizer = c.components in ("both", "tokenizer")
        train_dynamics = c.components == "dynamics" or (
            c.components == "both" and self.updates >= c.tokenizer_warmup)
        if train_tokenizer:
            metrics.update(self._step("tokenizer", self.model.tokenizer_loss(batch)))
        if train_dynamics:
            if not train_tokenizer:
                self.model.tokenizer.eval()  # frozen: no EMA updates or restarts
            metrics.update(self._step("dynamics", self.model.dynamics_loss(batch)))
        self.updates += 1
        return metrics

    def _step(self, component: str, out) -> dict[str, float]:
        optimizer = self.optimizers[component]
        module = getattr(self.model, component)
        if not self.nonfinite.loss_ok(out, component):
            return {}
        optimizer.zero_grad()
        out.loss.backward()
        if not self.nonfinite.gradients_ok(module.named_parameters(), component):
            return {}
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        return {f"{component}/{k}": v for k, v in out.metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "updates": self.updates, "previous_action": self.previous_action,
                "rng": self.rng.bit_generator.state,
                "nonfinite_in_a_row": self.nonfinite.in_a_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.updates = int(state["updates"])
        self.previous_action = int(state["previous_action"])
        self.rng.bit_generator.state = state["rng"]
        self.nonfinite.in_a_row = int(state.get("nonfinite_in_a_row", 0))
