"""Linear world model: ``obs' = obs + W [obs, action] + b`` and ``reward = v [obs, action] + c``.

The mean is deterministic; the loss is the Gaussian negative log-likelihood with a learned
per-feature log-variance (which, with fixed variance, is plain mean squared error).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldflux.core import (
    ActionSpec,
    ConfigError,
    IOContract,
    LossOutput,
    ModelOutput,
    ObservationSpec,
    State,
    WorldModel,
    WorldModelRegistry,
)
from worldflux.core.spec import standard_batch_keys


@dataclass
class LinearGaussianConfig:
    """Settings of the linear-Gaussian family."""

    init_scale: float = 0.01
    """Std of the initial weights (small: the model starts near ``obs' = obs``)."""
    learn_variance: bool = True
    """Learn a per-feature log-variance; otherwise the loss is mean squared error."""

    def validate(self, obs_spec: ObservationSpec | None = None,
                 action_spec: ActionSpec | None = None) -> None:
        if self.init_scale < 0:
            raise ConfigError(f"init_scale: got {self.init_scale}, expected >= 0")
        if obs_spec is not None and len(obs_spec.shape) != 1:
            raise ConfigError(
                f"linear-gaussian: got obs_shape {obs_spec.shape}, expected a flat vector (D,)"
            )


@WorldModelRegistry.register("linear-gaussian", LinearGaussianConfig, aliases=("linear",),
                             tier="skeleton",
                             description="Linear deterministic dynamics (example plugin)")
class LinearGaussianModel(WorldModel):
    """Fully observed linear model over flat observations ``[D]``.

    State keys: ``"obs" [B, D]`` and ``"reward" [B]`` (predicted reward of the transition into
    the state; 0 after ``encode``).
    """

    def __init__(self, config: LinearGaussianConfig, obs_spec: ObservationSpec,
                 action_spec: ActionSpec) -> None:
        super().__init__(config, obs_spec, action_spec)
        config.validate(obs_spec, action_spec)
        D, A = obs_spec.shape[0], action_spec.dim
        self.obs_dim = D
        self.dynamics = nn.Linear(D + A, D)
        self.reward_head = nn.Linear(D + A, 1)
        for layer in (self.dynamics, self.reward_head):
            nn.init.normal_(layer.weight, std=config.init_scale)
            nn.init.zeros_(layer.bias)
        self.logvar = nn.Parameter(torch.zeros(D + 1), requires_grad=config.learn_variance)

    def io_contract(self) -> IOContract:
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("obs", "reward"), predictions=("obs", "reward"))

    def initial_state(self, batch_size: int) -> State:
        return self._state(torch.zeros(batch_size, self.obs_dim, device=self.logvar.device))

    def encode(self, obs: Tensor) -> State:
        return self._state(obs.float())

    def transition(self, state: State, action: Tensor) -> State:
        x = torch.cat([state["obs"], action.float()], -1)
        next_obs = state["obs"] + self.dynamics(x)
        reward = self.reward_head(x).squeeze(-1)
        return State({"obs": next_obs, "reward": reward}, {"family": self.family})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput({"obs": state["obs"], "reward": state["reward"]}, state)

    def loss(self, batch) -> LossOutput:
        """Gaussian NLL of one-step predictions on pairs ``t -> t+1`` that stay in one episode."""
        obs, next_obs = batch["obs"][:, :-1].float(), batch["obs"][:, 1:].float()
        actions, rewards = batch["actions"][:, 1:], batch["rewards"][:, 1:]
        valid = ~batch["is_first"][:, 1:].bool()
        state = self._state(obs[valid])
        pred = self.transition(state, actions[valid])
        error = torch.cat([pred["obs"] - next_obs[valid],
                           (pred["reward"] - rewards[valid]).unsqueeze(-1)], -1)
        nll = 0.5 * (error.pow(2) * torch.exp(-self.logvar) + self.logvar)
        loss = nll.mean() if nll.numel() else self.logvar.sum() * 0
        mse = float(error.detach().pow(2).mean()) if error.numel() else 0.0
        return LossOutput(loss, {"nll": loss}, {"mse": mse})

    def _state(self, obs: Tensor) -> State:
        reward = torch.zeros(obs.shape[0], device=obs.device)
        return State({"obs": obs, "reward": reward}, {"family": self.family})
