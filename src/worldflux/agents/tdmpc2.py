"""TD-MPC2 online agent (Hansen, Su, Wang 2024; official ``tdmpc2.py`` and ``online_trainer.py``).

* Seed phase: ``seed_steps`` uniformly random actions (official: ``max(1000, 5 * episode
  length)``), then ``seed_steps`` updates on the seed data at once (official pretraining), then
  one update per environment step (``steps_per_update``).
* One update: the world-model loss on a batch of ``batch_size`` windows of ``horizon + 1`` rows
  (Adam, encoder learning rate scaled by ``enc_lr_scale``, gradient norm clipped), then the
  policy loss on the detached rollout latents (its own Adam), then the Polyak update of the
  target Q-functions.
* Acting: MPPI through :class:`worldflux.planners.MPPIPlanner` over latent rollouts. The agent
  hands the planner an objective (``sum_t gamma^t R(z_t, a_t) + gamma^H Q_avg2(z_H, pi(z_H))``)
  and ``num_pi_trajs`` policy-prior trajectories rolled out in latent space, which join every
  iteration's population. The executed action follows the official release: one of the final
  elites drawn with probability equal to its MPPI weight, its first action, plus
  ``std * noise`` while training (none in evaluation). ``plan_with_planner=False`` acts with
  the policy prior alone (the paper's ablation): a sample while training, the mean in evaluation.
* On a CUDA device (``cuda_graphs``, fp32), the update and the planning decision are each
  captured once as a CUDA graph and replayed (:class:`worldflux.core.cuda_graph.CUDAGraphStep`):
  a few hundred kernel launches become one, the speed-up the official release gets from
  ``torch.compile``. Random draws then come from the default CUDA generator (seeded by the
  agent's seed), non-finite gradients skip the Adam step inside the graph (fused Adam's
  ``found_inf``) and are counted after it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from worldflux.agents.base import Agent, AgentRegistry
from worldflux.core.cuda_graph import CUDAGraphStep, graphs_available
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data.tensors import to_torch
from worldflux.models.tdmpc2 import TDMPC2Config, TDMPC2Model
from worldflux.planners import PlannerConfig, make_planner

logger = logging.getLogger(__name__)


def _default_planner() -> PlannerConfig:
    # official config.yaml: iterations 6, num_samples 512 (of which num_pi_trajs 24 come from
    # the policy, so 488 Gaussian samples here), num_elites 64, horizon 3, min_std 0.05,
    # max_std 2 (also the initial std), temperature 0.5.
    return PlannerConfig(name="mppi", horizon=3, population=488, iterations=6, elites=64,
                         init_std=2.0, min_std=0.05, max_std=2.0, temperature=0.5,
                         mppi_update_std=True, warm_start=True)


@dataclass
class _Burst:
    """Progress of the pretraining burst: updates planned and done, metric sums so far."""

    total: int = 0
    done: int = 0
    sums: dict[str, float] = field(default_factory=dict)


@dataclass
class TDMPC2AgentConfig:
    """TD-MPC2: the world model, its optimisation schedule and MPPI planning with a policy prior."""

    model: TDMPC2Config = field(default_factory=TDMPC2Config)
    """The world model (``--set model.model_size=1`` for the 1M preset)."""
    planner: PlannerConfig = field(default_factory=_default_planner)
    """MPPI settings; ``population`` counts the Gaussian samples only (official num_samples 512
    = 488 + num_pi_trajs 24). With 20 or more action dimensions, 2 iterations are added (official
    heuristic)."""
    plan_with_planner: bool = True
    """Plan with MPPI (official ``mpc: true``); false acts with the policy prior alone."""
    num_pi_trajs: int = 24
    """Policy-prior trajectories rolled out in latent space at every decision (official: 24)."""
    action_selection: Literal["sample_elite", "mean"] = "sample_elite"
    """Executed action: an elite drawn by its MPPI weight (official), or the MPPI mean."""
    shift_when_acting: bool = True
    """Image observations only: the frame a decision starts from gets the random shift of
    training too (``model.shift_pad``). Official: the pixel encoder begins with
    ``layers.ShiftAug``, which has no train / eval switch, so every ``encode`` (acting and
    evaluation included) sees shifted frames. False encodes acting frames unshifted (DrQ-v2)."""
    horizon: int = 3
    """Training horizon H: batches are windows of H + 1 rows (official: 3)."""
    batch_size: int = 256
    """Windows per update (official: 256)."""
    lr: float = 3e-4
    """Adam learning rate of the world model and of the policy (official: 3e-4)."""
    enc_lr_scale: float = 0.3
    """The encoder's learning rate is ``lr * enc_lr_scale`` (official: 0.3)."""
    pi_eps: float = 1e-5
    """Adam epsilon of the policy optimiser (official: 1e-5)."""
    grad_clip_norm: float = 20.0
    """Gradient norm clip of both optimisers (official: 20)."""
    seed_steps: int = 0
    """Random-action steps before training; 0 = ``max(1000, 5 * episode_length)`` (official)."""
    pretrain_updates: int = -1
    """Updates on the seed data when the seed phase ends; -1 = ``seed_steps`` (official)."""
    steps_per_update: int = 1
    """Environment steps per update after the seed phase (official: 1)."""
    cuda_graphs: bool = True
    """On a CUDA device with fp32 training, replay the update and the planning decision as
    CUDA graphs (ignored on the CPU)."""

    def validate(self) -> None:
        self.planner.validate()
        self.model.validate()
        if self.planner.name != "mppi" and self.plan_with_planner:
            logger.warning("tdmpc2: planner.name=%r; TD-MPC2 plans with MPPI", self.planner.name)
        checks = {"horizon": self.horizon, "batch_size": self.batch_size,
                  "steps_per_update": self.steps_per_update}
        for name, value in checks.items():
            if value < 1:
                raise ConfigError(f"{name}: got {value}, expected an integer >= 1")
        if self.num_pi_trajs < 0:
            raise ConfigError(f"num_pi_trajs: got {self.num_pi_trajs}, expected >= 0")
        if self.seed_steps < 0:
            raise ConfigError(f"seed_steps: got {self.seed_steps}, expected >= 0 (0 = official "
                              "max(1000, 5 * episode_length))")
        if self.pretrain_updates < -1:
            raise ConfigError(f"pretrain_updates: got {self.pretrain_updates}, expected >= 0 "
                              "or -1 (= seed_steps)")
        if self.lr <= 0 or self.enc_lr_scale < 0 or self.pi_eps <= 0 or self.grad_clip_norm < 0:
            raise ConfigError(f"lr/enc_lr_scale/pi_eps/grad_clip_norm: got {self.lr}/"
                              f"{self.enc_lr_scale}/{self.pi_eps}/{self.grad_clip_norm}, expected "
                              "lr > 0, enc_lr_scale >= 0, pi_eps > 0, grad_clip_norm >= 0")


@AgentRegistry.register("tdmpc2", TDMPC2AgentConfig, tier="experimental",
                        description="TD-MPC2: implicit world model, MPPI with a policy prior")
class TDMPC2Agent(Agent):
    """TD-MPC2 for continuous actions in ``[-1, 1]``; vector or 64x64 image observations."""

    name = "tdmpc2"

    def __init__(self, config: TDMPC2AgentConfig, obs_spec: ObservationSpec,
                 action_spec: ActionSpec, device: torch.device, seed: int = 0) -> None:
        super().__init__(config, obs_spec, action_spec, device, seed)
        config.validate()
        if action_spec.kind != "continuous":
            raise ConfigError(f"agent 'tdmpc2': got {action_spec.kind} actions, expected "
                              "continuous")
        torch.manual_seed(seed)
        self.model = TDMPC2Model(copy.deepcopy(config.model), obs_spec, action_spec).to(device)
        self.model.eval()
        encoder = list(self.model.encoder.parameters())
        encoder_ids = {id(p) for p in encoder}
        policy_ids = {id(p) for p in self.model.policy.parameters()}
        rest = [p for p in self.model.parameters()
                if id(p) not in encoder_ids and id(p) not in policy_ids]
        self._graphs = bool(config.cuda_graphs and graphs_available(device))
        # A captured step needs device-side Adam state (capturable) and the fused kernel, whose
        # found_inf input skips a step with non-finite gradients without a host round trip.
        adam = {"fused": True, "capturable": True} if self._graphs else {}
        self.optimizer = torch.optim.Adam(
            [{"params": encoder, "lr": config.lr * config.enc_lr_scale},
             {"params": rest}], lr=config.lr, **adam)
        self.pi_optimizer = torch.optim.Adam(self.model.policy.parameters(), lr=config.lr,
                                             eps=config.pi_eps, **adam)
        self._model_params = [(n, p) for n, p in self.model.named_parameters()
                              if id(p) not in policy_ids]
        self._policy_params = list(self.model.policy.named_parameters())
        self.amp.max_grad_norm = config.grad_clip_norm
        planner_cfg = copy.deepcopy(config.planner)
        if action_spec.dim >= 20:  # official tdmpc2.py: 2 more iterations for large actions
            planner_cfg.iterations += 2
        self.planner = make_planner(planner_cfg, action_spec.dim, low=action_spec.low,
                                    high=action_spec.high, device=device,
                                    generator=torch.Generator(device=device).manual_seed(seed + 1))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.env_steps = 0
        self.episode_length = int(config.model.episode_length)
        self.episode_steps = 0
        self.pretrained = False
        self.updates = 0
        self._burst = _Burst()
        self._last: dict[str, float] = {}
        self._update_graph: CUDAGraphStep | None = None
        self._decide_graph: CUDAGraphStep | None = None
        if self._graphs:
            self._setup_graphs()

    @property
    def world_model(self) -> TDMPC2Model:
        return self.model

    def configure_training(self, *, precision: str = "fp32", nonfinite_limit: int | None = None,
                           dist=None) -> None:
        super().configure_training(precision=precision, nonfinite_limit=nonfinite_limit,
                                   dist=dist)
        self.amp.max_grad_norm = self.config.grad_clip_norm
        if self._graphs and self.amp.enabled:
            # Mixed precision stays on the eager path (autocast caches and the fp16 scaler).
            logger.info("tdmpc2: CUDA graphs off (precision %s)", precision)
            self._graphs = False
            self._update_graph = self._decide_graph = None
            for optimizer in (self.optimizer, self.pi_optimizer):
                optimizer.__dict__.pop("found_inf", None)

    def reset(self) -> None:
        self.planner.reset()
        if self._graphs:
            self._has_previous.zero_()

    # -- CUDA graphs ------------------------------------------------------------------------
    def _setup_graphs(self) -> None:
        H, A = self.planner.config.horizon, self.action_spec.dim
        self._previous = torch.zeros(H, A, device=self.device)
        self._has_previous = torch.zeros((), device=self.device)
        self._explore = {flag: torch.full((), float(flag), device=self.device)
                         for flag in (False, True)}
        self._found_inf = {k: torch.zeros((), device=self.device) for k in ("model", "policy")}
        self.optimizer.found_inf = self._found_inf["model"]
        self.pi_optimizer.found_inf = self._found_inf["policy"]

        def drop_grads() -> None:
            self.optimizer.zero_grad(set_to_none=True)
            self.pi_optimizer.zero_grad(set_to_none=True)

        self._update_graph = CUDAGraphStep(self._update_step, before_capture=drop_grads)
        self._decide_graph = CUDAGraphStep(self._decide_step)

    def _update_step(self, **batch: Tensor) -> dict[str, Tensor]:
        """One update without host synchronisation (captured by :class:`CUDAGraphStep`)."""
        model = self.model
        model.train()
        out, zs = model.world_model_loss(batch, tensor_metrics=True)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        model_norm = self._clip([p for _, p in self._model_params])
        self._found_inf["model"].copy_((~torch.isfinite(model_norm)).float())
        self.optimizer.step()
        pi = model.policy_loss(zs.detach(), valid=model._step_mask(batch), tensor_metrics=True)
        self.pi_optimizer.zero_grad(set_to_none=True)
        pi.loss.backward()
        pi_norm = self._clip([p for _, p in self._policy_params])
        self._found_inf["policy"].copy_((~torch.isfinite(pi_norm)).float())
        self.pi_optimizer.step()
        model.soft_update_target()
        model.eval()
        metrics = {f"model/{k}": v for k, v in out.metrics.items()}
        metrics.update({f"policy/{k}": v for k, v in pi.metrics.items()})
        metrics.update({"model/grad_norm": model_norm, "policy/grad_norm": pi_norm,
                        "skipped/model": self._found_inf["model"].clone(),
                        "skipped/policy": self._found_inf["policy"].clone()})
        return metrics

    def _clip(self, params: list[Tensor]) -> Tensor:
        if self.config.grad_clip_norm > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])

    def _decide_step(self, obs: Tensor, explore: Tensor) -> dict[str, Tensor]:
        """One MPPI decision without host synchronisation (captured by :class:`CUDAGraphStep`);
        the warm start lives in ``self._previous`` / ``self._has_previous``."""
        z = self.model.encode_obs(obs, augment=self.config.shift_when_acting)
        prior = self.policy_prior(z, generator=None) if self.config.num_pi_trajs > 0 else None
        planner = self.planner
        mean = planner.centre()
        if planner.config.warm_start:
            mean = torch.where(self._has_previous > 0, planner.shifted(self._previous), mean)
        last: dict[str, Tensor] = {}

        def objective(sequences: Tensor) -> Tensor:
            values = self.estimate_value(z.expand(sequences.shape[0], -1), sequences,
                                         generator=None)
            last["samples"], last["values"] = sequences, values
            return values

        out = planner.optimise(objective, prior, mean, None)
        self._previous.copy_(out["best"] if planner.config.return_best else out["mean"])
        self._has_previous.fill_(1.0)
        weights, elites, std = self.final_elites(last["samples"], last["values"])
        if self.config.action_selection == "sample_elite":
            # torch.multinomial checks its input on the host; its own one-sample method,
            # argmax(w / Exp(1)), draws the same distribution without that check.
            # (A 0-d index tensor would be read on the host: index_select keeps it on device.)
            choice = (weights / torch.empty_like(weights).exponential_()).argmax().view(1)
            action = elites.index_select(0, choice)[0, 0]
        else:
            action = self._previous[0]
        action = action + explore * std[0] * torch.randn_like(action)
        info = torch.stack([out["best_value"], std[0].mean(), 1.0 / weights.pow(2).sum()])
        return {"action": action, "info": info}

    # -- schedule ---------------------------------------------------------------------------
    def set_episode_length(self, episode_length: int) -> None:
        """Episode length in agent steps: sets the discount and the default seed steps."""
        self.episode_length = int(episode_length)
        gamma = self.model.set_episode_length(self.episode_length)
        logger.info("tdmpc2: episode length %d agent steps, discount %.4f", episode_length, gamma)

    @property
    def seed_steps(self) -> int | None:
        """Random steps before training (None until the episode length is known)."""
        if self.config.seed_steps > 0:
            return self.config.seed_steps
        if self.episode_length <= 0:
            return None
        return max(1000, 5 * self.episode_length)  # official envs/__init__.py

    # -- acting -----------------------------------------------------------------------------
    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        seed_steps = self.seed_steps
        if explore and (seed_steps is None or self.env_steps < seed_steps):
            return self.random_action()
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device).unsqueeze(0)
        with torch.no_grad():
            if self.config.plan_with_planner:
                action = self.plan(obs_t, explore=explore)
            else:
                z = self.model.encode_obs(obs_t, augment=self.config.shift_when_acting,
                                          generator=self.generator)
                sample, info = self.model.pi(z, generator=self.generator)
                action = (sample if explore else info["mean"])[0]
        return action.clamp(self.action_spec.low, self.action_spec.high).float().cpu().numpy()

    def policy_prior(self, z: Tensor, *, generator: torch.Generator | None | str = "agent"
                     ) -> Tensor:
        """``num_pi_trajs`` trajectories ``[K, H, A]`` of the policy prior from ``z [1, L]``
        rolled out through the latent dynamics (official ``_plan``); ``generator`` defaults
        to the agent's."""
        generator = self.generator if generator == "agent" else generator
        H, K = self.planner.config.horizon, self.config.num_pi_trajs
        z = z.expand(K, -1)
        actions = []
        for t in range(H):
            action, _ = self.model.pi(z, generator=generator)
            actions.append(action)
            if t < H - 1:
                z = self.model.next(z, action)
        return torch.stack(actions, 1)

    def estimate_value(self, z: Tensor, actions: Tensor, *,
                       generator: torch.Generator | None | str = "agent") -> Tensor:
        """``sum_t gamma^t R(z_t, a_t) + gamma^H Q_avg2(z_H, pi(z_H))`` for ``z [N, L]`` and
        ``actions [N, H, A]`` -> ``[N]`` (official ``_estimate_value``; episodic tasks stop
        accumulating after a predicted termination); ``generator`` defaults to the agent's."""
        generator = self.generator if generator == "agent" else generator
        gamma = self.model.discount
        value = torch.zeros(z.shape[0], device=z.device)
        done = torch.zeros_like(value)
        discount = torch.ones((), device=z.device)
        for t in range(actions.shape[1]):
            reward = self.model.reward(z, actions[:, t])
            z = self.model.next(z, actions[:, t])
            value = value + discount * (1 - done) * reward
            discount = discount * gamma
            if self.model.config.episodic:
                ended = (torch.sigmoid(self.model.termination_logit(z)) > 0.5).float()
                done = torch.clamp(done + ended, max=1.0)
        action, _ = self.model.pi(z, generator=generator)
        q = self.model.Q(z, action, "avg", generator=generator)
        return value + discount * (1 - done) * q

    @torch.no_grad()
    def plan(self, obs: Tensor, *, explore: bool) -> Tensor:
        """One MPPI decision from ``obs [1, *obs_shape]``; returns the action ``[A]``."""
        cfg = self.config
        if self._decide_graph is not None:
            out = self._decide_graph(obs=obs, explore=self._explore[bool(explore)])
            info = out["info"].tolist()
            self._last = {"planner/value": info[0], "planner/std_first": info[1],
                          "planner/effective_samples": info[2]}
            return out["action"].clone()
        z = self.model.encode_obs(obs, augment=cfg.shift_when_acting, generator=self.generator)
        prior = self.policy_prior(z) if cfg.num_pi_trajs > 0 else None
        last: dict[str, Tensor] = {}

        def objective(sequences: Tensor) -> Tensor:
            values = self.estimate_value(z.expand(sequences.shape[0], -1), sequences)
            last["samples"], last["values"] = sequences, values
            return values

        result = self.planner.plan(objective, prior)
        weights, elites, std = self.final_elites(last["samples"], last["values"])
        if cfg.action_selection == "sample_elite":
            choice = torch.multinomial(weights, 1, generator=self.generator)[0]
            action = elites[choice, 0]
        else:
            action = result.first_action
        if explore:
            noise = torch.randn(action.shape, generator=self.generator, device=action.device)
            action = action + std[0] * noise
        self._last = {"planner/value": float(result.value),
                      "planner/std_first": float(std[0].mean()),
                      "planner/effective_samples": float(1.0 / weights.pow(2).sum())}
        return action

    def final_elites(self, samples: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """MPPI weights ``[E]``, elites ``[E, H, A]`` and std ``[H, A]`` of the last iteration.

        Recomputed from the sequences and values the planner scored last, exactly as
        :class:`~worldflux.planners.MPPIPlanner` computes them: the ``elites`` best,
        ``w = softmax(temperature * value)``, ``std = sqrt(sum w (elite - mean)^2)`` clamped to
        ``[min_std, max_std]``.
        """
        pcfg = self.planner.config
        values = torch.nan_to_num(values.float(), nan=-torch.inf)
        elite_values, idx = torch.topk(values, min(pcfg.elites, values.shape[0]))
        elites = samples[idx]
        weights = torch.exp(pcfg.temperature * (elite_values - elite_values[0]))
        weights = weights / weights.sum()
        w = weights[:, None, None]
        mean = (w * elites).sum(0)
        std = torch.sqrt((w * (elites - mean).pow(2)).sum(0)).clamp(pcfg.min_std, pcfg.max_std)
        return weights, elites, std

    def planner_metrics(self) -> dict[str, float]:
        return dict(self._last)

    # -- learning ---------------------------------------------------------------------------
    def update(self, buffer, *, env_step: int, episode_done: bool) -> dict[str, float]:
        self.env_steps = env_step
        self.episode_steps += 1
        if episode_done:
            if self.episode_length <= 0:
                self.set_episode_length(self.episode_steps)
            self.episode_steps = 0
        seed_steps = self.seed_steps
        if seed_steps is None or env_step < seed_steps:
            return {}
        if not self.pretrained:
            count = seed_steps if self.config.pretrain_updates < 0 else self.config.pretrain_updates
            self.pretrained = True
            logger.info("tdmpc2: %d updates on the %d seed steps", count, env_step)
            self._burst = _Burst(total=max(count, 0))
            return self.finish_update(buffer)
        if (env_step - seed_steps) % self.config.steps_per_update:
            return {}
        return self.train_step(buffer)

    def update_pending(self) -> bool:
        return self._burst.done < self._burst.total

    def finish_update(self, buffer) -> dict[str, float]:
        """The pretraining burst from where it stands (its start, or a checkpoint within it);
        returns the burst's mean metrics. ``save_point`` is offered after every update."""
        burst = self._burst
        while burst.done < burst.total:
            for key, value in self.train_step(buffer).items():
                burst.sums[key] = burst.sums.get(key, 0.0) + value
            burst.done += 1
            if self.save_point is not None and burst.done < burst.total:
                self.save_point(burst.done)
        metrics = {key: value / max(burst.total, 1) for key, value in burst.sums.items()}
        self._burst = _Burst()
        return metrics

    def train_step(self, buffer) -> dict[str, float]:
        """One TD-MPC2 update from ``buffer.sample(batch_size, horizon + 1)``."""
        cfg = self.config
        batch = to_torch(buffer.sample(cfg.batch_size, cfg.horizon + 1), self.device)
        if self._update_graph is not None:
            return self._graph_train_step(batch)
        self.model.train()
        try:
            with self.amp.autocast():
                out, zs = self.model.world_model_loss(batch, generator=self.generator)
            metrics = {f"model/{k}": v for k, v in out.metrics.items()}
            if self.nonfinite.loss_ok(out, "tdmpc2 model"):
                self.optimizer.zero_grad(set_to_none=True)
                self.amp.backward(out.loss)
                self.amp.step(self.optimizer, self._model_params, self.nonfinite, "tdmpc2 model")
            # Policy after the model step, on the detached rollout latents (official order).
            valid = self.model._step_mask(batch)
            with self.amp.autocast():
                pi = self.model.policy_loss(zs.detach(), valid=valid, generator=self.generator)
            metrics.update({f"policy/{k}": v for k, v in pi.metrics.items()})
            if self.nonfinite.loss_ok(pi, "tdmpc2 policy"):
                self.pi_optimizer.zero_grad(set_to_none=True)
                self.amp.backward(pi.loss)
                self.amp.step(self.pi_optimizer, self._policy_params, self.nonfinite,
                              "tdmpc2 policy")
            self.model.soft_update_target()
        finally:
            self.model.eval()
        self.updates += 1
        metrics["model/discount"] = float(self.model.discount)
        return metrics

    def _graph_train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        assert self._update_graph is not None
        out = self._update_graph(**batch)
        values = dict(zip(out, torch.stack(list(out.values())).tolist(), strict=True))
        for part in ("model", "policy"):
            if values.pop(f"skipped/{part}") > 0:
                self.nonfinite.skip(f"tdmpc2 {part}", "a non-finite gradient norm "
                                    f"({values[f'{part}/grad_norm']})")
            else:
                self.nonfinite.in_a_row = 0
        self.updates += 1
        values["model/discount"] = float(self.model.discount)
        return values

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._graphs:  # the graph's warm start, in the planner's own format
            self.planner._previous = (self._previous.clone() if float(self._has_previous)
                                      else None)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pi_optimizer": self.pi_optimizer.state_dict(),
            "amp": self.amp.state_dict(),
            "planner": self.planner.state_dict(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "episode_length": self.episode_length,
            "episode_steps": self.episode_steps,
            "pretrained": self.pretrained,
            "burst": {"total": self._burst.total, "done": self._burst.done,  # (keys hold '/')
                      "sums": [[k, v] for k, v in self._burst.sums.items()]},
            "updates": self.updates,
            "nonfinite_in_a_row": self.nonfinite.in_a_row,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pi_optimizer.load_state_dict(state["pi_optimizer"])
        self.amp.load_state_dict(state.get("amp") or {})
        self.planner.load_state_dict(state["planner"])
        if self._graphs:
            # Loading replaced the optimisers' state tensors: capture anew around them.
            self._setup_graphs()
            previous = self.planner._previous
            self._has_previous.fill_(float(previous is not None))
            if previous is not None:
                self._previous.copy_(previous)
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.episode_length = int(state["episode_length"])
        self.episode_steps = int(state["episode_steps"])
        self.pretrained = bool(state["pretrained"])
        burst = state.get("burst") or {}  # absent in checkpoints older than mid-burst saving
        self._burst = _Burst(int(burst.get("total", 0)), int(burst.get("done", 0)),
                             {str(k): float(v) for k, v in burst.get("sums") or []})
        self.updates = int(state["updates"])
        self.nonfinite.in_a_row = int(state.get("nonfinite_in_a_row", 0))
