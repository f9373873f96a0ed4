"""Model-predictive control over a PETS ensemble (Chua et al. 2018).

Each decision: the planner proposes action sequences ``[N, H, A]``; every sequence is rolled
out with ``num_particles`` particles through the ensemble (TS-inf, TS-1 or expectation); the
objective is the mean particle return. The first action of the plan is executed and the plan,
shifted by one step, warm-starts the next decision. The model is retrained on all data at the
end of every episode (after ``seed_steps`` random steps).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from worldflux.agents.base import Agent, AgentRegistry
from worldflux.core.errors import ConfigError
from worldflux.core.precision import inference_dtype
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.models.pets import PETSConfig, PETSModel
from worldflux.planners import PlannerConfig, make_planner

logger = logging.getLogger(__name__)


@dataclass
class PETSAgentConfig:
    """PETS: probabilistic ensemble + trajectory sampling + MPC."""

    model: PETSConfig = field(default_factory=PETSConfig)
    """The ensemble world model."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """Planner over action sequences (CEM, population 500, 5 iterations, horizon 15 by default)."""
    num_particles: int = 20
    """Particles per candidate sequence (PETS: 20)."""
    propagation: Literal["ts_inf", "ts1", "expectation"] = "ts_inf"
    """Trajectory sampling: TS-inf (PETS' best), TS-1, or expectation over members."""
    planning_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Network dtype inside planning rollouts; auto = bfloat16 where the hardware runs it natively."""
    discount: float = 1.0
    """Discount of predicted rewards inside the horizon (PETS: undiscounted)."""
    seed_steps: int = 200
    """Random-action steps before the first model is trained (one Pendulum episode)."""
    batch_size: int = 64
    """Minibatch size per member when training the ensemble."""
    max_epochs: int = 40
    """Upper bound on epochs over the data per training round."""
    patience: int = 5
    """Stop a training round after this many epochs without held-out improvement."""
    holdout_fraction: float = 0.1
    """Share of transitions held out to pick the best epoch (mbrl-lib uses 0.05-0.2)."""
    max_holdout: int = 2000
    """Cap on held-out transitions."""
    exploration_noise: float = 0.0
    """Std of Gaussian noise added to planned actions while training (0 = none, as in PETS)."""

    def validate(self) -> None:
        self.planner.validate()
        if self.num_particles < 1:
            raise ConfigError(f"num_particles: got {self.num_particles}, expected >= 1")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction: got {self.holdout_fraction}, expected in (0, 1)")


@AgentRegistry.register("pets", PETSAgentConfig, aliases=("mpc",), tier="reference",
                        description="PETS ensemble + CEM/MPPI/iCEM model-predictive control")
class PETSAgent(Agent):
    """Probabilistic-ensemble MPC agent for flat observations and continuous actions."""

    name = "pets"

    def __init__(self, config: PETSAgentConfig, obs_spec: ObservationSpec, action_spec: ActionSpec,
                 device: torch.device, seed: int = 0) -> None:
        super().__init__(config, obs_spec, action_spec, device, seed)
        config.validate()
        if action_spec.kind != "continuous":
            raise ConfigError(f"agent 'pets': got {action_spec.kind} actions, expected continuous")
        torch.manual_seed(seed)
        model_cfg = copy.deepcopy(config.model)
        model_cfg.propagation = config.propagation
        self.model = PETSModel(model_cfg, obs_spec, action_spec).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=model_cfg.learning_rate,
                                          weight_decay=model_cfg.weight_decay)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.planner = make_planner(config.planner, action_spec.dim, low=action_spec.low,
                                    high=action_spec.high, device=device,
                                    generator=torch.Generator(device=device).manual_seed(seed + 1))
        self.dtype = inference_dtype(config.planning_dtype, device)
        self.reward_fn = None
        self.env_steps = 0
        self.trained = False
        self.train_rounds = 0
        self._last: dict[str, float] = {}

    @property
    def world_model(self) -> PETSModel:
        return self.model

    def reset(self) -> None:
        self.planner.reset()

    def set_reward_function(self, reward_fn) -> None:
        """Plan with a known reward ``(obs [N, D], action [N, A], next_obs [N, D]) -> [N]``
        instead of the learned reward head (required when ``model.learn_reward`` is false)."""
        if not callable(reward_fn):
            raise ConfigError(f"reward_fn: got {type(reward_fn).__name__}, expected a callable")
        self.reward_fn = reward_fn

    # -- acting ---------------------------------------------------------------------------------
    def objective(self, obs: torch.Tensor):
        """Objective for the planner: mean particle return of each sequence ``[N, H, A] -> [N]``."""

        if self.reward_fn is None and not self.model.config.learn_reward:
            raise ConfigError("agent 'pets': model.learn_reward is false but no reward function "
                              "was given; call agent.set_reward_function(fn)")

        def score(sequences: torch.Tensor) -> torch.Tensor:
            returns = self.model.particle_returns(
                obs, sequences, self.config.num_particles, propagation=self.config.propagation,
                dtype=self.dtype, reward_fn=self.reward_fn, discount=self.config.discount,
                generator=self.generator)
            return returns.mean(1)

        return score

    @torch.no_grad()
    def plan(self, obs: np.ndarray):
        """Run the planner from ``obs [D]``; returns the :class:`PlannerResult`."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        result = self.planner.plan(self.objective(obs_t))
        self._last = {"planner/value": result.value,
                      "planner/evaluated": float(result.extras["wf.planner.evaluated"])}
        return result

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        if explore and (not self.trained or self.env_steps < self.config.seed_steps):
            return self.random_action()
        if not self.trained:
            return np.zeros(self.action_spec.dim, np.float32)
        action = self.plan(obs).first_action.float().cpu().numpy()
        if explore and self.config.exploration_noise > 0:
            action = action + self.config.exploration_noise * self.rng.standard_normal(action.shape)
        return np.clip(action, self.action_spec.low, self.action_spec.high).astype(np.float32)

    def planner_metrics(self) -> dict[str, float]:
        return dict(self._last)

    # -- learning -------------------------------------------------------------------------------
    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        self.env_steps = env_step
        if not episode_done or env_step < self.config.seed_steps:
            return {}
        return self.train_model(buffer)

    def train_model(self, buffer) -> dict[str, float]:
        """One training round on every transition in ``buffer`` with bootstrap + early stopping."""
        obs, action, reward, next_obs, _ = buffer.all_transitions()
        to = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)  # noqa: E731
        obs, action, reward, next_obs = to(obs), to(action), to(reward).reshape(-1), to(next_obs)
        n = obs.shape[0]
        if n < 2:
            return {}
        cfg, E = self.config, self.model.config.ensemble_size
        perm = torch.randperm(n, generator=self.generator, device=self.device)
        n_hold = min(cfg.max_holdout, max(1, int(n * cfg.holdout_fraction))) if n >= 20 else 0
        hold, train = perm[:n_hold], perm[n_hold:]
        self.model.fit_normalizers(obs[train], action[train], reward[train], next_obs[train])
        n_train = train.numel()
        best_score, best_state, stale, epochs = float("inf"), None, 0, 0
        skipped = 0
        metrics: dict[str, float] = {}
        for epoch in range(cfg.max_epochs):
            # Each member draws its own bootstrap sample of the training set.
            boot = train[torch.randint(n_train, (E, n_train), generator=self.generator,
                                       device=self.device)]
            for start in range(0, n_train, cfg.batch_size):
                idx = boot[:, start:start + cfg.batch_size]
                out = self.model.transition_loss(obs[idx], action[idx], reward[idx], next_obs[idx])
                # Skipped steps are logged; too many in a row raise NonFiniteLossError.
                if not self.nonfinite.loss_ok(out, "pets"):
                    skipped += 1
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if not self.nonfinite.gradients_ok(self.model.named_parameters(), "pets"):
                    skipped += 1
                    continue
                self.optimizer.step()
                metrics = out.metrics
            epochs = epoch + 1
            if n_hold == 0:
                continue
            mse = self.model.evaluation_mse(obs[hold], action[hold], reward[hold], next_obs[hold])
            score_now = float(mse.mean())
            if best_state is None or score_now < best_score * (1 - 1e-4):
                best_score, stale = score_now, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.trained = True
        self.train_rounds += 1
        result = {f"model/{k}": v for k, v in metrics.items() if not k.startswith("nll_member")}
        result.update({f"model/{k}": v for k, v in metrics.items() if k.startswith("nll_member")})
        result.update({"model/holdout_mse": best_score if n_hold else float("nan"),
                       "model/epochs": float(epochs), "model/transitions": float(n),
                       "model/nonfinite_skipped": float(skipped)})
        return result

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "planner": self.planner.state_dict(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "trained": self.trained,
            "train_rounds": self.train_rounds,
            "nonfinite_in_a_row": self.nonfinite.in_a_row,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.planner.load_state_dict(state["planner"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.trained = bool(state["trained"])
        self.train_rounds = int(state["train_rounds"])
        self.nonfinite.in_a_row = int(state.get("nonfinite_in_a_row", 0))
