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
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from worldflux.agents.base import Agent, AgentRegistry
from worldflux.core.errors import ConfigError
from worldflux.core.precision import inference_dtype
from worldflux.core.registry import WorldModelRegistry
from worldflux.core.schedule import LRScheduleConfig, build_lr_scheduler
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.models.pets import PETSConfig, PETSModel
from worldflux.planners import PlannerConfig, RiskConfig, make_planner, risk_value

logger = logging.getLogger(__name__)

_TRAIN, _STOP = 1, 0  # commands rank 0 broadcasts to the other ranks
_DATA_KEYS = ("obs", "action", "reward", "next_obs")


class _TransitionLoss(torch.nn.Module):
    """``PETSModel.transition_loss`` as a module's forward, so DDP can wrap it."""

    def __init__(self, model: PETSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs, action, reward, next_obs, mask=None):
        if mask is not None:  # windows [E, B, k] of encoded latents
            return self.model.latent_window_loss(obs, action, reward, next_obs, mask)
        if getattr(self.model, "trains_on_latents", False):  # obs, next_obs: encoded latents
            return self.model.latent_transition_loss(obs, action, reward, next_obs)
        return self.model.transition_loss(obs, action, reward, next_obs)


def window_rows(obs: torch.Tensor, next_obs: torch.Tensor, group: torch.Tensor,
                steps: int) -> torch.Tensor:
    """Windows of consecutive transitions: ``[N, steps]`` row indices starting at each row.

    Row ``i + 1`` follows row ``i`` when its observation equals row ``i``'s next observation
    and both rows are in the same ``group`` (``[N]``, e.g. train / held out); a window stops
    at the end of its chain (``-1`` from there on).

    Args:
        obs, next_obs: ``[N, *obs]`` transitions in recorded order.
        group: ``[N]`` labels; windows do not cross from one label to another.
        steps: window length ``k >= 1``.
    """
    n = obs.shape[0]
    linked = (next_obs[:-1] == obs[1:]).flatten(1).all(1) & (group[:-1] == group[1:])
    follow = torch.full((n,), -1, dtype=torch.long, device=obs.device)
    starts = torch.arange(n - 1, device=obs.device)[linked]
    follow[starts] = starts + 1
    rows = [torch.arange(n, device=obs.device)]
    for _ in range(steps - 1):
        previous = rows[-1]
        rows.append(torch.where(previous >= 0, follow[previous.clamp_min(0)], -1))
    return torch.stack(rows, 1)


def transition_split(obs: torch.Tensor, next_obs: torch.Tensor, n_hold: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(held-out rows [n_hold], training rows)``: a random draw of transitions."""
    perm = torch.randperm(obs.shape[0], generator=generator, device=obs.device)
    return perm[:n_hold], perm[n_hold:]


def chain_split(obs: torch.Tensor, next_obs: torch.Tensor, n_hold: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(held-out rows, training rows)``: whole chains of consecutive transitions (rows where
    one's next observation is the next one's observation: recorded episodes) drawn at random
    until at least ``n_hold`` rows are held out, each part in recorded order. Falls back to
    :func:`transition_split` when one chain holds more than half of the rows (no episodes to
    split by)."""
    n = obs.shape[0]
    if n_hold == 0:
        return transition_split(obs, next_obs, 0, generator)
    linked = (next_obs[:-1] == obs[1:]).flatten(1).all(1)
    chain = torch.cat([linked.new_zeros(1, dtype=torch.long), (~linked).long().cumsum(0)])
    sizes = torch.bincount(chain)
    if int(sizes.max()) > n // 2:
        return transition_split(obs, next_obs, n_hold, generator)
    order = torch.randperm(sizes.numel(), generator=generator, device=obs.device)
    taken = order[:int(torch.searchsorted(sizes[order].cumsum(0), n_hold)) + 1]
    held = torch.zeros(sizes.numel(), dtype=torch.bool, device=obs.device)
    held[taken] = True
    rows = torch.arange(n, device=obs.device)
    return rows[held[chain]], rows[~held[chain]]


@dataclass
class MPCAgentConfig:
    """Model-predictive control over a one-step world model (the settings every family shares;
    each agent adds its ``model`` config)."""

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
    autoencoder_epochs: int = 0
    """Latent families: epochs of a first stage in each training round that trains the
    autoencoder alone (its reconstruction loss on every training observation) before the
    dynamics fit, so that the dynamics learn on a settled latent space; 0 = none (the
    autoencoder then learns alongside the dynamics)."""
    autoencoder_final_lr: float = 0.05
    """The first stage's learning rate falls from the optimiser's along a cosine to this
    fraction of it (restored for the dynamics); 1 keeps it constant. On Nav3D flights the
    state autoencoder's median relative error after 200 epochs fell from 1.44% (constant) to
    0.90% with the decay to 0.05."""
    holdout_fraction: float = 0.1
    """Share of transitions held out to pick the best epoch (mbrl-lib uses 0.05-0.2)."""
    max_holdout: int = 2000
    """Cap on held-out transitions."""
    holdout: Literal["transitions", "chains"] = "transitions"
    """What is held out: random ``transitions``, or whole ``chains`` of consecutive ones
    (recorded episodes). With chains, a model trained on open-loop windows (latent families
    with ``rollout_steps > 1``) is scored on held-out windows, open loop, of flights it never
    saw any step of. Not the default: on Nav3D's state latents (``nav3d_latent``, seed 0, 40
    flights) chains held out 4 whole flights and the latent model's open-loop horizon under
    10% error fell from 16 to 12 steps."""
    exploration_noise: float = 0.0
    """Std of Gaussian noise added to planned actions while training (0 = none, as in PETS)."""
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    """Learning-rate schedule over all optimiser steps of the run (PETS: constant)."""
    reward_source: Literal["learned", "env"] = "learned"
    """``learned``: plan with the model's reward head; ``env``: with the environment's own reward
    function of observations (envs that expose ``reward_function()``, e.g. Nav3D from state), as
    PETS does with known rewards; the loop passes it in."""
    risk: RiskConfig = field(default_factory=RiskConfig)
    """How sampled returns score a plan: mean (risk-neutral), mean_std, cvar, var, worst,
    entropic (``--set risk.measure=cvar --set risk.alpha=0.2``)."""

    def validate(self) -> None:
        self.planner.validate()
        self.lr_schedule.validate()
        self.risk.validate()
        if self.num_particles < 1:
            raise ConfigError(f"num_particles: got {self.num_particles}, expected >= 1")
        if self.holdout not in ("transitions", "chains"):
            raise ConfigError(f"holdout: got {self.holdout!r}, expected 'transitions' or "
                              "'chains'")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction: got {self.holdout_fraction}, expected in (0, 1)")
        if not 0 < self.autoencoder_final_lr <= 1:
            raise ConfigError(f"autoencoder_final_lr: got {self.autoencoder_final_lr}, "
                              "expected in (0, 1]")
        if self.autoencoder_epochs < 0:
            raise ConfigError(f"autoencoder_epochs: got {self.autoencoder_epochs}, expected >= 0")


@dataclass
class PETSAgentConfig(MPCAgentConfig):
    """PETS: probabilistic ensemble + trajectory sampling + MPC."""

    model: PETSConfig = field(default_factory=PETSConfig)
    """The ensemble world model (``--set model.ensemble_size=N``)."""


class MPCAgent(Agent):
    """Model-predictive control over any family with the one-step model protocol.

    The family (``family``, a :data:`~worldflux.core.registry.WorldModelRegistry` name) must
    provide ``fit_normalizers``, ``transition_loss`` (per-member bootstrap batches),
    ``evaluation_mse`` and ``particle_returns`` (see :class:`~worldflux.models.pets.PETSModel`).
    Subclasses set ``family`` and give their config a ``model`` field of the family's config.
    """

    name = "mpc"
    family = "pets"
    supports_distributed = True

    def __init__(self, config: MPCAgentConfig, obs_spec: ObservationSpec, action_spec: ActionSpec,
                 device: torch.device, seed: int = 0) -> None:
        super().__init__(config, obs_spec, action_spec, device, seed)
        config.validate()
        if action_spec.kind != "continuous":
            raise ConfigError(f"agent '{self.name}': got {action_spec.kind} actions, expected "
                              "continuous")
        torch.manual_seed(seed)
        model_cfg = copy.deepcopy(config.model)
        if hasattr(model_cfg, "propagation"):
            model_cfg.propagation = config.propagation
        model_cls = WorldModelRegistry.get(self.family).cls
        self.model = model_cls(model_cfg, obs_spec, action_spec).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=model_cfg.learning_rate,
                                          weight_decay=model_cfg.weight_decay)
        self.scheduler = build_lr_scheduler(self.optimizer, config.lr_schedule)
        self.optimizer_steps = 0
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.planner = make_planner(config.planner, action_spec.dim, low=action_spec.low,
                                    high=action_spec.high, device=device,
                                    generator=torch.Generator(device=device).manual_seed(seed + 1))
        self.dtype = inference_dtype(config.planning_dtype, device)
        self.reward_fn = None
        self._encoded: dict[str, torch.Tensor] | None = None  # see _encode_rows
        self.env_steps = 0
        self.trained = False
        self.train_rounds = 0
        self._last: dict[str, float] = {}

    @property
    def world_model(self):
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
        """Objective for the planner: the risk measure (``config.risk``; the mean by default) of
        each sequence's sampled returns, ``[N, H, A] -> [N]``."""

        if self.reward_fn is None and not self.model.config.learn_reward:
            raise ConfigError(f"agent '{self.name}': model.learn_reward is false but no reward "
                              "function was given; call agent.set_reward_function(fn)")

        def score(sequences: torch.Tensor) -> torch.Tensor:
            return risk_value(self.sampled_returns(obs, sequences), self.config.risk)

        return score

    def sampled_returns(self, obs: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """Returns ``[N, K]`` of ``K = num_particles`` sampled rollouts of each sequence."""
        return self.model.particle_returns(
            obs, sequences, self.config.num_particles, propagation=self.config.propagation,
            dtype=self.dtype, reward_fn=self.reward_fn, discount=self.config.discount,
            generator=self.generator)

    @torch.no_grad()
    def plan(self, obs: np.ndarray):
        """Run the planner from ``obs [D]``; returns the :class:`PlannerResult`."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        result = self.planner.plan(self.objective(obs_t))
        # The predicted return distribution of the chosen plan, sampled afresh.
        chosen = self.sampled_returns(obs_t, result.actions[None].to(obs_t.device))[0]
        result.extras["wf.mpc.return_mean"] = float(chosen.mean())
        result.extras["wf.mpc.return_std"] = float(chosen.std(unbiased=False))
        self._last = {"planner/value": result.value,
                      "planner/evaluated": float(result.extras["wf.planner.evaluated"]),
                      "planner/return_mean": result.extras["wf.mpc.return_mean"],
                      "planner/return_std": result.extras["wf.mpc.return_std"]}
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
        """One training round on every transition in ``buffer`` with bootstrap + early stopping.

        Under torchrun, rank 0 (the only one with a buffer) sends the transitions to the other
        ranks first; every rank then runs :meth:`_fit` on its shard of each minibatch.
        """
        obs, action, reward, next_obs, _ = buffer.all_transitions()
        def to(array, keep_uint8: bool = False) -> torch.Tensor:
            # uint8 images stay uint8 (a quarter of the memory); families scale them themselves.
            array = np.asarray(array)
            if not (keep_uint8 and array.dtype == np.uint8):
                array = array.astype(np.float32, copy=False)
            return torch.as_tensor(array, device=self.device)

        data = {"obs": to(obs, True), "action": to(action), "reward": to(reward).reshape(-1),
                "next_obs": to(next_obs, True)}
        if data["obs"].shape[0] < 2:
            return {}
        round_seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.device))
        if self.dist.enabled:
            self.dist.broadcast(torch.tensor([_TRAIN, round_seed], dtype=torch.int64))
            data = {k: v.to(self.device)
                    for k, v in self.dist.broadcast_arrays(data, _DATA_KEYS).items()}
        return self._fit(data, round_seed)

    def _fit(self, data: dict[str, torch.Tensor], round_seed: int) -> dict[str, float]:
        """Train the ensemble on ``data`` (``obs [N, D]``, ``action [N, A]``, ``reward [N]``,
        ``next_obs [N, D]``); identical on every rank but for the minibatch shards."""
        obs, action, reward, next_obs = (data[k] for k in _DATA_KEYS)
        n = obs.shape[0]
        cfg, E = self.config, self.model.config.ensemble_size
        rank, world = self.dist.rank, self.dist.world_size
        self.dist.sync_state(self.model, self.optimizer, self.scheduler)
        # Shared by all ranks: the split, the normalisers and each epoch's bootstrap draw.
        g = torch.Generator(device=self.device).manual_seed(round_seed)
        n_hold = min(cfg.max_holdout, max(1, int(n * cfg.holdout_fraction))) if n >= 20 else 0
        steps = int(getattr(self.model.config, "rollout_steps", 1)) \
            if getattr(self.model, "trains_on_latents", False) else 1
        split = chain_split if cfg.holdout == "chains" else transition_split
        hold, train = split(obs, next_obs, n_hold, g)
        n_hold = hold.numel()
        self.model.fit_normalizers(obs[train], action[train], reward[train], next_obs[train])
        ae_metrics = self._fit_autoencoder(torch.cat([obs[train], next_obs[train]]), g)
        if ae_metrics:  # the latent statistics of the trained encoder
            self.model.fit_normalizers(obs[train], action[train], reward[train], next_obs[train])
        evaluation_mse = self.model.evaluation_mse
        windows = None
        if getattr(self.model, "trains_on_latents", False):
            if steps > 1:
                in_train = torch.zeros(n, dtype=torch.bool, device=self.device)
                in_train[train] = True
                windows = window_rows(obs, next_obs, in_train, steps)
            # A frozen encoder: encode every observation once; the epochs then train the
            # dynamics and reward head on latents (``training="encoded"``).
            with torch.no_grad():
                obs, next_obs = self._encode_rows(obs, next_obs)
            evaluation_mse = self.model.latent_evaluation_mse
        n_train = train.numel()
        loss_module = self.dist.wrap(_TransitionLoss(self.model))
        batches = math.ceil(n_train / (cfg.batch_size * world))  # same count on every rank
        columns = torch.arange(cfg.batch_size, device=self.device)
        best_score, best_state, stale, epochs = float("inf"), None, 0, 0
        skipped = 0
        metrics: dict[str, float] = {}
        epoch_nll: list[float] = []
        for epoch in range(cfg.max_epochs):
            # Each member draws its own bootstrap sample of the training set.
            boot = train[torch.randint(n_train, (E, n_train), generator=g, device=self.device)]
            nll_sum, nll_count = 0.0, 0
            for b in range(batches):
                start = (b * world + rank) * cfg.batch_size
                idx = boot[:, (columns + start) % n_train] if start + cfg.batch_size > n_train \
                    else boot[:, start:start + cfg.batch_size]
                with self.amp.autocast():
                    if windows is None:
                        out = loss_module(obs[idx], action[idx], reward[idx], next_obs[idx])
                    else:  # [E, B, k] rows; past a chain's end the start row, masked out
                        rows = windows[idx]
                        mask = rows >= 0
                        rows = torch.where(mask, rows, idx.unsqueeze(-1))
                        out = loss_module(obs[rows], action[rows], reward[rows],
                                          next_obs[rows], mask)
                # Skipped steps are logged; too many in a row raise NonFiniteLossError.
                finite = bool(torch.isfinite(out.loss.detach()).all())
                if not self.dist.all_true(finite):
                    if finite:
                        self.nonfinite.skip(self.name, "a non-finite loss on another rank")
                    else:
                        self.nonfinite.loss_ok(out, self.name)
                    skipped += 1
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                self.amp.backward(out.loss)
                if not self.amp.step(self.optimizer, self.model.named_parameters(),
                                     self.nonfinite, self.name):
                    skipped += 1
                    continue
                self.scheduler.step()
                self.optimizer_steps += 1
                metrics = out.metrics
                # Stochastic raw families report the NLL; every family reports its total loss.
                fit = metrics.get("nll", metrics.get("loss", metrics.get("mse", 0.0)))
                nll_sum, nll_count = nll_sum + fit, nll_count + 1
            if nll_count:
                epoch_nll.append(nll_sum / nll_count)
            epochs = epoch + 1
            if n_hold == 0:
                continue
            if windows is None:
                mse = evaluation_mse(obs[hold], action[hold], reward[hold], next_obs[hold])
            else:  # held-out windows, open loop (they stay inside the held-out rows)
                rows = windows[hold]
                mask = rows >= 0
                rows = torch.where(mask, rows, hold.unsqueeze(-1))
                mse = evaluation_mse(obs[rows], action[rows], reward[rows], next_obs[rows], mask)
            # Averaged over ranks so every rank takes the same early-stopping decision.
            score_now = float(self.dist.all_reduce(mse.mean().reshape(1), "mean").item())
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
        if n_hold:  # too little data for a held-out set: nothing to report (no NaN in the log)
            result["model/holdout_mse"] = best_score
        result.update({"model/epochs": float(epochs), "model/transitions": float(n),
                       "model/nonfinite_skipped": float(skipped),
                       "model/lr": float(self.optimizer.param_groups[0]["lr"])})
        result.update(ae_metrics)
        if epoch_nll:
            result["model/nll_first_epoch"] = epoch_nll[0]
            result["model/nll_last_epoch"] = epoch_nll[-1]
        if self.dist.enabled:
            result["dist/world_size"] = float(world)
            result["dist/replica_max_diff"] = self.dist.replica_difference(self.model)
        return result

    def _encode_rows(self, obs: torch.Tensor, next_obs: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``[N, Z]`` of a frozen encoder for ``obs, next_obs [N, *obs]``.

        Online training rounds see the previous round's transitions again, followed by new
        ones: while the encoder is unchanged (its :meth:`encoding_fingerprint`), the rows that
        equal the previous round's leading rows keep their latents and only the rest are
        encoded (on Nav3D pixels, encoding 26k frames costs minutes on a CPU)."""
        fingerprint = self.model.encoding_fingerprint()
        cache, kept = self._encoded, 0
        if cache is not None and cache["fingerprint"].shape == fingerprint.shape \
                and torch.equal(cache["fingerprint"], fingerprint):
            kept = min(cache["obs"].shape[0], obs.shape[0])
            if not (torch.equal(cache["obs"][:kept], obs[:kept])
                    and torch.equal(cache["next_obs"][:kept], next_obs[:kept])):
                kept = 0
        z, next_z = self.model.encode_latent(obs[kept:]), self.model.encode_latent(next_obs[kept:])
        if kept:
            z, next_z = torch.cat([cache["z"][:kept], z]), torch.cat([cache["next_z"][:kept], next_z])
        self._encoded = {"fingerprint": fingerprint, "obs": obs, "next_obs": next_obs, "z": z,
                         "next_z": next_z}
        return z, next_z

    def _fit_autoencoder(self, observations: torch.Tensor,
                         generator: torch.Generator) -> dict[str, float]:
        """``autoencoder_epochs`` epochs of reconstruction alone on ``observations [N, *obs]``
        (latent families); ``{}`` when there is no such stage. Every rank trains on the same
        rows in the same order (replicas stay equal; the round's start re-syncs them anyway)."""
        epochs = int(self.config.autoencoder_epochs)
        if epochs <= 0 or not hasattr(self.model, "autoencoder_loss"):
            return {}
        n, size = observations.shape[0], self.config.batch_size
        first = last = float("nan")
        base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        total_steps, step = epochs * math.ceil(n / size), 0
        final = float(self.config.autoencoder_final_lr)
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator, device=observations.device)
            total, count = 0.0, 0
            for start in range(0, n, size):
                decay = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                for group, base in zip(self.optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * decay
                step += 1
                with self.amp.autocast():
                    out = self.model.autoencoder_loss(observations[order[start:start + size]])
                if not self.nonfinite.loss_ok(out, self.name):
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                self.amp.backward(out.loss)
                if not self.amp.step(self.optimizer, self.model.named_parameters(),
                                     self.nonfinite, self.name):
                    continue
                total, count = total + out.metrics["recon_mse"], count + 1
            if count:
                first = total / count if epoch == 0 else first
                last = total / count
        for group, base in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base
        return {"model/ae_recon_mse_first_epoch": first, "model/ae_recon_mse_last_epoch": last}

    # -- distributed (torchrun) -----------------------------------------------------------------
    def serve(self) -> dict[str, float]:
        """Ranks > 0: train in step with rank 0's rounds until it stops them."""
        metrics: dict[str, float] = {}
        while True:
            header = self.dist.broadcast(torch.zeros(2, dtype=torch.int64))
            if int(header[0]) == _STOP:
                break
            data = {k: v.to(self.device)
                    for k, v in self.dist.broadcast_arrays(None, _DATA_KEYS).items()}
            metrics = self._fit(data, int(header[1]))
        return {"rounds": float(self.train_rounds), **self._final_replica_check(), **{
            k: v for k, v in metrics.items() if k.startswith("model/nll")}}

    def stop_workers(self) -> dict[str, float]:
        if not self.dist.enabled:
            return {}
        self.dist.broadcast(torch.tensor([_STOP, 0], dtype=torch.int64))
        return {"rounds": float(self.train_rounds), **self._final_replica_check()}

    def _final_replica_check(self) -> dict[str, float]:
        return {"world_size": float(self.dist.world_size),
                "replica_max_diff": self.dist.replica_difference(self.model)}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_epoch": self.scheduler.last_epoch},
            "optimizer_steps": self.optimizer_steps,
            "amp": self.amp.state_dict(),
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
        if "scheduler" in state:  # the optimiser's param groups already hold the saved lr
            self.scheduler.last_epoch = int(state["scheduler"]["last_epoch"])
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.amp.load_state_dict(state.get("amp") or {})
        self.planner.load_state_dict(state["planner"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.trained = bool(state["trained"])
        self.train_rounds = int(state["train_rounds"])
        self.nonfinite.in_a_row = int(state.get("nonfinite_in_a_row", 0))


@AgentRegistry.register("pets", PETSAgentConfig, aliases=("mpc",), tier="reference",
                        description="PETS ensemble + CEM/MPPI/iCEM model-predictive control")
class PETSAgent(MPCAgent):
    """Probabilistic-ensemble MPC (Chua et al. 2018) for flat observations, continuous actions."""

    name = "pets"
    family = "pets"
