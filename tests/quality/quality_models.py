"""World-model families the quality-gate tests register for a single test."""

from __future__ import annotations

import torch
from torch import nn

from worldflux.core import IOContract, LossOutput, ModelOutput, State, WorldModel
from worldflux.core.spec import standard_batch_keys


class TinyLinearModel(WorldModel):
    """Fully observed linear model ``obs' = obs + W [obs, action]`` with a reward head; MSE loss.

    State keys: ``"obs" [B, D]`` and ``"reward" [B]``.
    """

    def __init__(self, config, obs_spec, action_spec) -> None:
        super().__init__(config, obs_spec, action_spec)
        D, A = obs_spec.shape[0], action_spec.dim
        self.obs_dim = D
        self.net = nn.Linear(D + A, D + 1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def io_contract(self) -> IOContract:
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("obs", "reward"), predictions=("obs", "reward"))

    def initial_state(self, batch_size: int) -> State:
        return self._state(torch.zeros(batch_size, self.obs_dim))

    def encode(self, obs):
        return self._state(obs.float())

    def transition(self, state, action):
        out = self.net(torch.cat([state["obs"], action.float()], -1))
        return State({"obs": state["obs"] + out[:, :-1], "reward": out[:, -1]})

    def decode(self, state):
        return ModelOutput({"obs": state["obs"], "reward": state["reward"]}, state)

    def loss(self, batch) -> LossOutput:
        obs, nxt = batch["obs"][:, :-1].float(), batch["obs"][:, 1:].float()
        valid = ~batch["is_first"][:, 1:]
        pred = self.transition(self._state(obs[valid]), batch["actions"][:, 1:][valid])
        error = torch.cat([pred["obs"] - nxt[valid],
                           (pred["reward"] - batch["rewards"][:, 1:][valid]).unsqueeze(-1)], -1)
        loss = error.pow(2).mean()
        return LossOutput(loss, {"mse": loss})

    def _state(self, obs):
        return State({"obs": obs, "reward": torch.zeros(obs.shape[0], device=obs.device)})
