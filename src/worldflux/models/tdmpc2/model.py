"""TD-MPC2 implicit world model (Hansen, Su, Wang 2024, ICLR; official release ``tdmpc2/``).

Components (official ``common/world_model.py``), ``z`` a latent of ``latent_dim`` on simplex
groups of ``simnorm_dim`` (SimNorm):

* encoder ``h``: ``obs -> z`` (MLP for vectors, convolutions for 64x64 images);
* latent dynamics ``d``: ``(z, a) -> z'`` with SimNorm output;
* reward ``R``: ``(z, a) -> 101 logits`` (two-hot regression over symlog bins);
* an ensemble of ``num_q`` Q-functions ``(z, a) -> 101 logits`` with dropout, and their
  Polyak-averaged targets;
* policy prior ``p``: ``z -> (mean, log_std)``, a tanh-squashed Gaussian;
* termination ``(z') -> logit`` for episodic tasks.

There is no decoder: the model is trained by latent consistency, reward and value prediction
(:meth:`TDMPC2Model.world_model_loss`); the policy by maximising Q with an entropy bonus
(:meth:`TDMPC2Model.policy_loss`). ``loss(batch)`` is their sum (the two touch disjoint
parameters; the agent steps them with separate optimisers, the policy after the model).

Batch rows follow :mod:`worldflux.data` (row ``t``: ``obs[t]``, the action that led to it, the
reward of that transition). A window of ``T = H + 1`` rows gives TD-MPC2's ``o_0..o_H`` and
``a_t = actions[t + 1]``, ``r_t = rewards[t + 1]``, ``terminated_t = terminated[t + 1]`` for
``t < H`` (:func:`tdmpc2_sequences`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import WorldModel
from worldflux.core.registry import WorldModelRegistry
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec, standard_batch_keys
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.tdmpc2.config import TDMPC2Config, discount_from_episode_length
from worldflux.models.tdmpc2.networks import (
    HALF_LOG_2PI,
    PixelEncoder,
    QEnsemble,
    StateEncoder,
    mlp,
    squash,
)
from worldflux.nn.latent import SimNorm
from worldflux.nn.twohot import soft_ce, two_hot_inv


def tdmpc2_sequences(batch: Batch) -> dict[str, Tensor]:
    """Map a worldflux batch ``[B, T]`` to TD-MPC2's time-major sequences (``H = T - 1``).

    Returns:
        ``obs [T, B, *obs_shape]`` (``o_0..o_H``), ``action [H, B, A]`` (``a_t`` taken in
        ``o_t``: row ``t + 1``'s action), ``reward [H, B]`` (``r_t``, row ``t + 1``),
        ``terminated [H, B]`` (float, ``o_{t+1}`` terminal) and ``valid [H, B]`` (float: no
        episode starts within rows ``1..t+1``, so step ``t`` continues the episode of ``o_0``;
        windows from :meth:`ReplayBuffer.sample` are always valid).
    """
    obs = batch["obs"].transpose(0, 1)
    action = batch["actions"][:, 1:].transpose(0, 1).float()
    reward = batch["rewards"][:, 1:].transpose(0, 1).float()
    terminated = batch["terminated"][:, 1:].transpose(0, 1).float()
    starts = batch["is_first"][:, 1:].transpose(0, 1).bool()
    valid = torch.cumprod((~starts).float(), 0)
    return {"obs": obs, "action": action, "reward": reward, "terminated": terminated,
            "valid": valid}


def _metrics(metrics: dict[str, Tensor], as_tensors: bool) -> dict:
    """Detached 0-d metric tensors, or floats (one host synchronisation for all)."""
    if as_tensors:
        return metrics
    values = torch.stack([v.float() for v in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))


def _percentile(ordered: Tensor, p: float) -> Tensor:
    """The ``p`` quantile of sorted values ``[N]``, linearly interpolated (``torch.quantile``'s
    default)."""
    position = p * (ordered.shape[0] - 1)
    below = int(position)
    above = min(below + 1, ordered.shape[0] - 1)
    return torch.lerp(ordered[below], ordered[above], position - below)


@WorldModelRegistry.register("tdmpc2", TDMPC2Config, tier="experimental",
                             description="TD-MPC2 implicit world model (SimNorm latent, two-hot "
                                         "reward/Q ensemble, policy prior) for MPPI planning")
class TDMPC2Model(WorldModel):
    """TD-MPC2 world model over vector ``(D,)`` or image ``(C, 64, 64)`` observations.

    State keys: ``"z" [B, latent_dim]`` (the latent), ``"reward" [B]`` (the predicted reward of
    the transition into the state; 0 after ``encode``). ``decode`` predicts ``"reward"``,
    ``"value"`` (``V(z)``: the Q ensemble's mean at the policy's mean action) and, when
    ``config.episodic``, ``"continue"`` (1 - termination probability).
    """

    def __init__(self, config: TDMPC2Config, obs_spec: ObservationSpec, action_spec: ActionSpec):
        super().__init__(config, obs_spec, action_spec)
        config.validate(obs_spec, action_spec)
        sizes = config.sizes()
        self.sizes = sizes
        A, L, M = action_spec.dim, sizes.latent_dim, sizes.mlp_dim
        self.action_dim, self.latent_dim = A, L
        self.pixels = len(obs_spec.shape) == 3
        if self.pixels:
            self.encoder: nn.Module = PixelEncoder(obs_spec.shape[0], config.pixel_channels(),
                                                   config.simnorm_dim, config.shift_pad)
        else:
            self.encoder = StateEncoder(obs_spec.shape[0], sizes.enc_dim, sizes.num_enc_layers,
                                        L, config.simnorm_dim)
        self.dynamics = mlp(L + A, [M, M], L, act=SimNorm(config.simnorm_dim))
        self.reward_head = mlp(L + A, [M, M], config.num_bins)
        nn.init.zeros_(self.reward_head[-1].weight)  # official: zero_ on the reward output
        self.termination_head = mlp(L, [M, M], 1) if config.episodic else None
        self.policy = mlp(L, [M, M], 2 * A)
        self.qs = QEnsemble(sizes.num_q, L + A, M, config.num_bins, config.dropout)
        # Discount gamma of TD targets and planning returns (set from the episode length).
        self.register_buffer("discount", torch.tensor(config.discount()))
        # Running 5th-95th percentile range of Q (floored at 1) dividing Q in the policy loss
        # (official common/scale.py RunningScale); starts at 1.
        self.register_buffer("q_scale", torch.ones(()))

    # -- contract ---------------------------------------------------------------------------
    def io_contract(self) -> IOContract:
        predictions = ("reward", "value", "continue") if self.config.episodic else (
            "reward", "value")
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("z", "reward"), predictions=predictions,
                          min_sequence_length=2)

    def initial_state(self, batch_size: int) -> State:
        """The uniform latent (every simplex group at ``1 / simnorm_dim``)."""
        z = torch.full((batch_size, self.latent_dim), 1.0 / self.config.simnorm_dim,
                       device=self.discount.device)
        return self._state(z, torch.zeros(batch_size, device=z.device))

    def encode(self, obs: Tensor) -> State:
        z = self.encode_obs(obs)
        return self._state(z, torch.zeros(z.shape[0], device=z.device))

    def transition(self, state: State, action: Tensor) -> State:
        z, action = state["z"], action.float()
        return self._state(self.next(z, action), self.reward(z, action))

    def decode(self, state: State) -> ModelOutput:
        z = state["z"]
        mean_action = self.pi(z, deterministic=True)[0]
        value = two_hot_inv(self.Q(z, mean_action, "all"), self.config.vmin,
                            self.config.vmax).mean(0)
        preds = {"reward": state["reward"], "value": value}
        if self.config.episodic:
            preds["continue"] = 1 - torch.sigmoid(self.termination_logit(z))
        return ModelOutput(preds, state)

    def loss(self, batch: Batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """World-model loss plus policy loss on a sequence batch ``[B, T]`` (``H = T - 1``).

        The policy term is computed on the detached latents with the Q-functions' parameters
        cut from the graph, so each term's gradient reaches only its own parameters.
        """
        out, zs = self.world_model_loss(batch, generator=generator)
        pi = self.policy_loss(zs.detach(), valid=self._step_mask(batch), generator=generator,
                              update_scale=False)
        components = {**out.components, "policy": pi.loss}
        metrics = {**out.metrics, **pi.metrics}
        return LossOutput(out.loss + pi.loss, components, metrics)

    # -- components (official world_model.py names in brackets) ----------------------------
    def encode_obs(self, obs: Tensor, *, augment: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
        """``obs [N, *obs_shape] -> z [N, latent_dim]`` [``encode``]; ``augment`` applies the
        random shift to images (training batches)."""
        return self.encoder(obs, augment=augment, generator=generator)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """Latent dynamics ``d(z [..., L], a [..., A]) -> z' [..., L]`` [``next``]."""
        return self.dynamics(torch.cat([z, action], -1))

    def reward_logits(self, z: Tensor, action: Tensor) -> Tensor:
        """``R(z, a)`` logits ``[..., num_bins]`` [``reward``]."""
        return self.reward_head(torch.cat([z, action], -1)).float()

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """Predicted reward ``[...]`` (two-hot decoded)."""
        return two_hot_inv(self.reward_logits(z, action), self.config.vmin, self.config.vmax)

    def termination_logit(self, z: Tensor) -> Tensor:
        """Termination logit ``[...]`` of a latent (episodic tasks) [``termination``]."""
        if self.termination_head is None:
            raise RuntimeError("termination_logit: the model has no termination head "
                               "(config.episodic is false)")
        return self.termination_head(z).float().squeeze(-1)

    def pi(self, z: Tensor, *, generator: torch.Generator | None = None,
           deterministic: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """Sample the policy prior ``a ~ tanh(N(mu(z), sigma(z)))`` [``pi``].

        Returns ``action [..., A]`` (``tanh(mu)`` when ``deterministic``) and ``info`` with
        ``"mean"`` (``tanh(mu)``), ``"log_std"``, ``"log_prob"`` (log-density of the squashed
        action, tanh correction included), ``"entropy"`` (``-log_prob``) and
        ``"scaled_entropy"``: the official release's action-dimension-scaled entropy,
        ``-log_prob * (A * log N(u)) / (log_prob + 1e-8)``, which the policy loss uses.
        """
        cfg = self.config
        mean, raw = self.policy(z).float().chunk(2, -1)
        # official math.log_std: tanh scaling of the log-std into [log_std_min, log_std_max]
        log_std = cfg.log_std_min + 0.5 * (cfg.log_std_max - cfg.log_std_min) * (
            torch.tanh(raw) + 1)
        if deterministic:
            eps = torch.zeros_like(mean)
        else:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        gaussian = (-0.5 * eps.pow(2) - log_std - HALF_LOG_2PI).sum(-1)  # log N(u) of u
        scaled = gaussian * mean.shape[-1]
        squashed_mean, action, log_prob = squash(mean, mean + eps * log_std.exp(), gaussian)
        entropy_scale = scaled / (log_prob + 1e-8)
        info = {"mean": squashed_mean, "log_std": log_std, "log_prob": log_prob,
                "entropy": -log_prob, "scaled_entropy": -log_prob * entropy_scale}
        return (squashed_mean if deterministic else action), info

    def Q(self, z: Tensor, action: Tensor, return_type: str = "min", *, target: bool = False,
          detach: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """State-action value [``Q``].

        ``return_type``: ``"all"`` -> logits ``[num_q, ..., num_bins]``; ``"min"`` / ``"avg"``
        -> the minimum / mean ``[...]`` of two Q-functions drawn at random (``generator``).
        ``target`` uses the target parameters, ``detach`` the online ones cut from the graph.
        """
        x = torch.cat([z, action], -1)
        params = "target" if target else ("detached" if detach else "online")
        if return_type == "all":
            return self.qs(x, params=params).float()
        if return_type not in ("min", "avg"):
            raise ValueError(f"return_type: got {return_type!r}, expected 'min', 'avg' or 'all'")
        heads = self.draw_heads(generator, z.device)
        values = two_hot_inv(self.qs(x, heads=heads, params=params).float(), self.config.vmin,
                             self.config.vmax)
        return values.min(0).values if return_type == "min" else values.mean(0)

    def draw_heads(self, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Two distinct Q-function indices drawn uniformly (official ``randperm(num_q)[:2]``).

        On a CUDA device the permutation is the argsort of uniform draws (the same
        distribution), which a CUDA graph can capture."""
        if device is not None and torch.device(device).type == "cuda":
            return torch.rand(self.sizes.num_q, generator=generator, device=device).argsort()[:2]
        return torch.randperm(self.sizes.num_q, generator=generator, device=device)[:2]

    @torch.no_grad()
    def td_target(self, next_z: Tensor, reward: Tensor, terminated: Tensor, *,
                  generator: torch.Generator | None = None) -> Tensor:
        """``r + gamma * (1 - terminated) * min(Q_i, Q_j)_target(z', pi(z'))`` ``[...]`` with
        two target heads drawn at random and ``pi(z')`` sampled [``_td_target``]."""
        action, _ = self.pi(next_z, generator=generator)
        q = self.Q(next_z, action, "min", target=True, generator=generator)
        return reward + self.discount * (1 - terminated) * q

    def set_episode_length(self, episode_length: int) -> float:
        """Set the discount from an episode length in agent steps; returns it."""
        cfg = self.config
        gamma = discount_from_episode_length(int(episode_length), cfg.discount_denom,
                                             cfg.discount_min, cfg.discount_max)
        self.discount.fill_(gamma)
        return gamma

    @torch.no_grad()
    def soft_update_target(self) -> None:
        """Polyak update of the target Q-functions with ``config.tau``."""
        self.qs.soft_update(self.config.tau)

    # -- losses ---------------------------------------------------------------------------
    def world_model_loss(self, batch: Batch, *, generator: torch.Generator | None = None,
                         tensor_metrics: bool = False) -> tuple[LossOutput, Tensor]:
        """TD-MPC2's model loss (official ``_update``) on a batch ``[B, T]``, ``H = T - 1``.

        ``z_0 = h(o_0)``, ``z_{t+1} = d(z_t, a_t)``; with ``z'_t = sg(h(o_{t+1}))``:
        consistency ``sum_t rho^t ||z_{t+1} - z'_t||^2 / H`` (mean over latent and batch),
        reward ``sum_t rho^t CE(R(z_t, a_t), r_t) / H``, value
        ``sum_{t,i} rho^t CE(Q_i(z_t, a_t), td_t) / (H * num_q)`` and, when episodic, the BCE of
        the termination of ``z_{t+1}``; weighted by the ``*_coef`` of the config.

        Returns:
            The loss and the latents ``zs [H + 1, B, latent_dim]`` (for the policy update).
            ``tensor_metrics`` keeps the metrics as detached 0-d tensors (no host
            synchronisation, as a CUDA graph needs) instead of floats.
        """
        cfg = self.config
        seq = tdmpc2_sequences(batch)
        obs, action, reward = seq["obs"], seq["action"], seq["reward"]
        terminated, valid = seq["terminated"], seq["valid"]
        H, B = action.shape[:2]
        with torch.no_grad():
            next_z = self.encode_obs(obs[1:].reshape(H * B, *obs.shape[2:]), augment=True,
                                     generator=generator).view(H, B, -1)
            # Target Q-functions never apply dropout (official: kept in eval mode).
            td = self.td_target(next_z, reward, terminated, generator=generator)
        z = self.encode_obs(obs[0], augment=True, generator=generator)
        zs = [z]
        consistency = z.new_zeros(())
        weights = cfg.rho ** torch.arange(H, device=z.device, dtype=torch.float32)
        for t in range(H):
            z = self.next(z, action[t])
            error = (z.float() - next_z[t].float()).pow(2).mean(-1)
            consistency = consistency + weights[t] * (error * valid[t]).mean()
            zs.append(z)
        zs_t = torch.stack(zs)  # [H + 1, B, L]
        reward_ce = soft_ce(self.reward_logits(zs_t[:-1], action), reward, cfg.vmin, cfg.vmax)
        q_ce = soft_ce(self.Q(zs_t[:-1], action, "all"), td.unsqueeze(0), cfg.vmin, cfg.vmax)
        reward_loss = ((reward_ce * valid).mean(1) * weights).sum() / H
        value_loss = ((q_ce * valid).mean(2) * weights).sum() / (H * self.sizes.num_q)
        consistency = consistency / H
        components = {"consistency": cfg.consistency_coef * consistency,
                      "reward": cfg.reward_coef * reward_loss,
                      "value": cfg.value_coef * value_loss}
        metrics = {"consistency_loss": consistency.detach(),
                   "reward_loss": reward_loss.detach(),
                   "value_loss": value_loss.detach()}
        if cfg.episodic:
            logits = self.termination_logit(zs_t[1:])
            bce = F.binary_cross_entropy_with_logits(logits, terminated, reduction="none")
            termination_loss = (bce * valid).mean()
            components["termination"] = cfg.termination_coef * termination_loss
            metrics["termination_loss"] = termination_loss.detach()
        total = sum(components.values())
        metrics["model_loss"] = total.detach()
        return LossOutput(total, components, _metrics(metrics, tensor_metrics)), zs_t

    def policy_loss(self, zs: Tensor, *, valid: Tensor | None = None,
                    generator: torch.Generator | None = None,
                    update_scale: bool = True, tensor_metrics: bool = False) -> LossOutput:
        """Policy prior loss on detached latents ``zs [H + 1, B, L]`` (official ``update_pi``).

        ``mean_t rho^t mean_b (-(entropy_coef * scaled_entropy + Q_avg2(z, pi(z)) / S))`` where
        ``Q_avg2`` averages two randomly drawn Q-functions (parameters detached) and ``S`` is
        the running Q scale, first updated from ``Q`` at ``t = 0`` when ``update_scale``.
        ``valid [H + 1, B]`` masks latents past an episode start (None: all valid);
        ``tensor_metrics`` as in :meth:`world_model_loss`.
        """
        cfg = self.config
        action, info = self.pi(zs, generator=generator)
        q = self.Q(zs, action, "avg", detach=True, generator=generator)  # [H + 1, B]
        if update_scale:
            self.update_q_scale(q[0])
        q = q / self.q_scale
        steps = zs.shape[0]
        weights = cfg.rho ** torch.arange(steps, device=zs.device, dtype=torch.float32)
        per_sample = -(cfg.entropy_coef * info["scaled_entropy"] + q)
        if valid is not None:
            per_sample = per_sample * valid
        loss = (per_sample.mean(1) * weights).mean()
        metrics = {"pi_loss": loss.detach(),
                   "pi_entropy": info["entropy"].detach().mean(),
                   "pi_scaled_entropy": info["scaled_entropy"].detach().mean(),
                   "pi_scale": self.q_scale.detach().clone(),
                   "pi_log_std": info["log_std"].detach().mean()}
        return LossOutput(loss, {"policy": loss}, _metrics(metrics, tensor_metrics))

    @torch.no_grad()
    def update_q_scale(self, q: Tensor) -> None:
        """``S <- lerp(S, max(P95(q) - P5(q), 1), tau)`` over the batch ``q [B]`` (official
        ``RunningScale``: linear-interpolated percentiles, as ``torch.quantile``; computed from
        a sort with fixed positions so that no host synchronisation happens)."""
        ordered = q.detach().float().reshape(-1).sort().values
        low, high = (_percentile(ordered, p) for p in (0.05, 0.95))
        value = torch.clamp(high - low, min=1.0)
        self.q_scale.lerp_(value, self.config.tau)

    # -- quality gates (``worldflux verify``) ---------------------------------------------------
    @classmethod
    def smoke_specs(cls) -> tuple[ObservationSpec, ActionSpec]:
        """Pendulum-v1: observations ``(3,)``, 1 action."""
        return ObservationSpec((3,)), ActionSpec(1)

    @classmethod
    def smoke_task(cls, seed: int, quick: bool = True):
        """Learn Pendulum-v1 rewards through the latent: ``R(d(h(o), a))``'s input chain.

        A 1M-layout model at width 64 takes Adam steps (lr 1e-3, quick: 300, full: 1000) of the
        world-model loss on random-action transitions (windows of 2 rows); passes when the
        predicted rewards ``R(h(o), a)`` of held-out transitions explain at least 80% of their
        variance (``1 - MSE / Var(r) >= 0.8``).
        """
        from worldflux.quality.smoke import SmokeResult, random_env_transitions

        steps, threshold = (300, 0.8) if quick else (1000, 0.8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            data = random_env_transitions("Pendulum-v1", 600, seed=int(seed))
            obs, act, rew, nxt = data["obs"], data["actions"], data["rewards"], data["next_obs"]
            n = obs.shape[0]
            batch = {"obs": torch.stack([obs, nxt], 1),
                     "actions": torch.stack([torch.zeros_like(act), act], 1),
                     "rewards": torch.stack([torch.zeros_like(rew), rew], 1),
                     "terminated": torch.zeros(n, 2, dtype=torch.bool),
                     "truncated": torch.zeros(n, 2, dtype=torch.bool),
                     "is_first": torch.tensor([[True, False]]).expand(n, 2)}
            perm = torch.randperm(n)
            hold, train = perm[: n // 5], perm[n // 5:]
            config = TDMPC2Config(model_size=1, enc_dim=64, mlp_dim=64, latent_dim=32,
                                  episode_length=200)
            model = cls(config, ObservationSpec((obs.shape[1],)), ActionSpec(act.shape[1]))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            model.train()
            for _ in range(steps):
                idx = train[torch.randint(train.numel(), (64,))]
                out, _ = model.world_model_loss({k: v[idx] for k, v in batch.items()})
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                predicted = model.reward(model.encode_obs(obs[hold]), act[hold])
                mse = float((predicted - rew[hold]).pow(2).mean())
                variance = float(rew[hold].var(unbiased=False))
        explained = 1 - mse / max(variance, 1e-12)
        passed = bool(torch.isfinite(torch.tensor(explained)) and explained >= threshold)
        return SmokeResult(passed, explained, threshold,
                           f"Pendulum-v1 rewards after {steps} steps: held-out MSE {mse:.3g} vs "
                           f"variance {variance:.3g}; explained fraction must be >= {threshold}")

    # -- helpers --------------------------------------------------------------------------------
    def _state(self, z: Tensor, reward: Tensor) -> State:
        return State({"z": z, "reward": reward}, {"family": self.family})

    @staticmethod
    def _step_mask(batch: Batch) -> Tensor:
        """``[T, B]`` mask of the latents ``z_0..z_H`` that continue the episode of ``o_0``."""
        valid = tdmpc2_sequences(batch)["valid"]
        return torch.cat([torch.ones_like(valid[:1]), valid], 0)
