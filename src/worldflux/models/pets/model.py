"""PETS: an ensemble of Gaussian MLPs predicting state deltas and rewards (Chua et al. 2018).

Inputs ``[obs, action]`` and targets ``[obs_{t+1} - obs_t, reward]`` are standardised with
statistics stored as buffers. All members run in one batched forward (``baddbmm``); each member
sees its own bootstrap sample of the data. With ``config.stochastic = False`` the members
predict the mean only (trained by MSE) and rollouts carry no aleatoric noise; the families
``mlp``, ``ensemble-mlp`` and ``gaussian`` (:mod:`worldflux.models.pets.variants`) are this
model with other defaults.

One-step model protocol (what a model-predictive agent trains and plans through):
``fit_normalizers``, ``transition_loss``, ``evaluation_mse``, ``particle_returns``,
``imagine`` and ``predict_uncertainty``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from worldflux.core.model import WorldModel
from worldflux.core.registry import WorldModelRegistry
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec, standard_batch_keys
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.pets.config import PETSConfig
from worldflux.nn import EnsembleMLP, Normalizer, gaussian_nll, soft_bound_logvar
from worldflux.nn.particles import (
    particle_actions,
    particle_returns_by_sequence,
    ts1_restore,
    ts1_shuffle,
)

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""Known reward ``(obs [N, D], action [N, A], next_obs [N, D]) -> [N]``."""


@WorldModelRegistry.register("pets", PETSConfig, aliases=("ensemble",), tier="reference",
                             description="Probabilistic ensemble of Gaussian MLPs (PETS) for MPC")
class PETSModel(WorldModel):
    """Probabilistic ensemble world model over flat observations ``[D]``.

    State keys: ``"obs" [B, D]``, ``"reward" [B]`` (predicted reward of the transition into the
    state; 0 after ``encode``), ``"member" [B]`` (int64 ensemble member that propagates each row).
    """

    def __init__(self, config: PETSConfig, obs_spec: ObservationSpec, action_spec: ActionSpec):
        super().__init__(config, obs_spec, action_spec)
        config.validate(obs_spec, action_spec)
        D, A = obs_spec.shape[0], action_spec.dim
        self.obs_dim, self.action_dim = D, A
        self.target_dim = D + (1 if config.learn_reward else 0)
        E = config.ensemble_size
        outputs = 2 * self.target_dim if config.stochastic else self.target_dim
        self.net = EnsembleMLP(E, D + A, outputs, config.hidden_size,
                               config.num_layers, config.activation)
        if config.stochastic:  # deterministic members have no log-variance head or bounds
            self.min_logvar = nn.Parameter(
                torch.full((1, 1, self.target_dim), config.min_logvar_init))
            self.max_logvar = nn.Parameter(
                torch.full((1, 1, self.target_dim), config.max_logvar_init))
        self.input_norm = Normalizer(D + A)
        self.target_norm = Normalizer(self.target_dim)
        # 1 where the target is the change of an entry, 0 where it is the next value itself.
        delta_mask = torch.full((D,), 1.0 if config.predict_delta else 0.0)
        delta_mask[list(config.absolute_dims)] = 0.0
        self.register_buffer("delta_mask", delta_mask, persistent=False)

    # -- contract ---------------------------------------------------------------------------
    def io_contract(self) -> IOContract:
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("obs", "reward", "member"),
                          predictions=("obs", "reward"), min_sequence_length=2)

    def initial_state(self, batch_size: int) -> State:
        device = self.input_norm.mean.device
        return self._state(torch.zeros(batch_size, self.obs_dim, device=device))

    def encode(self, obs: Tensor) -> State:
        return self._state(obs.float())

    def transition(self, state: State, action: Tensor, *, deterministic: bool = False,
                   generator: torch.Generator | None = None) -> State:
        """One step ``[B, D] -> [B, D]``; each row uses its ``member`` (re-drawn under TS-1)."""
        obs, member = state["obs"], state["member"]
        E = self.config.ensemble_size
        if self.config.propagation == "ts1" and not deterministic:
            member = torch.randint(E, member.shape, generator=generator, device=member.device)
        x = torch.cat([obs, action.float()], -1).expand(E, -1, -1)
        if not self.config.stochastic:
            mean, _ = self._predict(x)  # [E, B, out]
            if self.config.propagation == "expectation" or deterministic:
                mean = mean.mean(0)
            else:
                mean = mean[member, torch.arange(obs.shape[0], device=obs.device)]
            mean = self.target_norm.denormalize(mean)
            next_obs, reward = self._decode_targets(obs, mean, mean)
            return State({"obs": next_obs, "reward": reward, "member": member},
                         {"family": self.family})
        mean, logvar = self.predict_normalized(x)  # [E, B, out]
        if self.config.propagation == "expectation" or deterministic:
            mean, logvar = mean.mean(0), logvar.mean(0)
        else:
            rows = torch.arange(obs.shape[0], device=obs.device)
            mean, logvar = mean[member, rows], logvar[member, rows]
        sample = mean if deterministic else mean + torch.exp(0.5 * logvar) * torch.randn(
            mean.shape, generator=generator, device=mean.device)
        next_obs, reward = self._decode_targets(obs, self.target_norm.denormalize(sample),
                                                self.target_norm.denormalize(mean))
        return State({"obs": next_obs, "reward": reward, "member": member},
                     {"family": self.family})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput({"obs": state["obs"], "reward": state["reward"]}, state)

    def loss(self, batch: Batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Gaussian NLL on bootstrapped transitions of a sequence batch (pairs ``t -> t+1``)."""
        obs, next_obs = batch["obs"][:, :-1].float(), batch["obs"][:, 1:].float()
        actions, rewards = batch["actions"][:, 1:], batch["rewards"][:, 1:]
        valid = ~batch["is_first"][:, 1:].bool()
        obs, next_obs, actions, rewards = obs[valid], next_obs[valid], actions[valid], rewards[valid]
        n = obs.shape[0]
        if n == 0:
            zero = sum(p.sum() for p in self.parameters()) * 0
            key = "nll" if self.config.stochastic else "mse"
            return LossOutput(zero, {key: zero}, {"transitions": 0.0})
        E = self.config.ensemble_size
        idx = torch.randint(n, (E, n), generator=generator, device=obs.device)  # bootstrap
        return self.transition_loss(obs[idx], actions[idx], rewards[idx], next_obs[idx])

    # -- training and prediction ------------------------------------------------------------
    def predict_normalized(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[E, N, D + A]`` raw inputs -> normalised target ``mean, logvar`` ``[E, N, out]``.

        Deterministic members (``config.stochastic = False``) have zero variance: ``logvar``
        is ``-inf`` everywhere (``exp(logvar) == 0``).
        """
        mean, logvar = self._predict(x)
        if logvar is None:
            logvar = torch.full_like(mean, float("-inf"))
        return mean, logvar

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Like :meth:`predict_normalized`; ``logvar`` is ``None`` for deterministic members."""
        out = self.net(self.input_norm.normalize(x)).float()  # float32 under autocast too
        if not self.config.stochastic:
            return out, None
        mean, logvar = out.chunk(2, -1)
        return mean, soft_bound_logvar(logvar, self.min_logvar, self.max_logvar)

    def targets(self, obs: Tensor, reward: Tensor, next_obs: Tensor) -> Tensor:
        """Raw targets ``[..., D (+1)]``: delta (or next obs) and reward."""
        target = next_obs - obs * self.delta_mask
        if self.config.learn_reward:
            target = torch.cat([target, reward.unsqueeze(-1)], -1)
        return target

    @torch.no_grad()
    def fit_normalizers(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> None:
        """Set input/target statistics from transitions ``[N, ...]``."""
        self.input_norm.fit(torch.cat([obs, action], -1))
        self.target_norm.fit(self.targets(obs, reward, next_obs))

    def transition_loss(self, obs: Tensor, action: Tensor, reward: Tensor,
                        next_obs: Tensor) -> LossOutput:
        """Loss of per-member batches: ``obs [E, N, D]``, ``action [E, N, A]``, ``reward [E, N]``.

        Stochastic members: Gaussian NLL plus the log-variance bound term; metrics ``nll``,
        ``nll_member_i``. Deterministic members: MSE of the mean; metrics ``mse``. Both report
        ``loss``, ``mse_normalized`` (mean over members) and ``mse_member_i`` in normalised
        target units.
        """
        if not self.config.stochastic:
            mean, _ = self._predict(torch.cat([obs, action], -1))
            target = self.target_norm.normalize(self.targets(obs, reward, next_obs))
            mse = (mean - target).pow(2).mean((1, 2))  # [E]
            loss = mse.sum()
            detached = mse.detach()
            metrics = {"loss": float(detached.sum()), "mse": float(detached.mean()),
                       "mse_normalized": float(detached.mean())}
            metrics.update({f"mse_member_{i}": float(v) for i, v in enumerate(detached)})
            return LossOutput(loss, {"mse": loss}, metrics)
        mean, logvar = self.predict_normalized(torch.cat([obs, action], -1))
        target = self.target_norm.normalize(self.targets(obs, reward, next_obs))
        nll = gaussian_nll(mean, logvar, target).mean((1, 2))  # [E]
        bound = self.config.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        loss = nll.sum() + bound
        mse = (mean.detach() - target).pow(2).mean((1, 2))
        metrics = {"nll": float(nll.detach().mean()), "mse_normalized": float(mse.mean()),
                   "loss": float(loss.detach())}
        metrics.update({f"nll_member_{i}": float(v) for i, v in enumerate(nll.detach())})
        metrics.update({f"mse_member_{i}": float(v) for i, v in enumerate(mse)})
        return LossOutput(loss, {"nll": nll.sum(), "logvar_bound": bound}, metrics)

    @torch.no_grad()
    def evaluation_mse(self, obs: Tensor, action: Tensor, reward: Tensor,
                       next_obs: Tensor) -> Tensor:
        """Per-member MSE of the mean in normalised target space ``[E]`` on held-out data."""
        E = self.config.ensemble_size
        x = torch.cat([obs, action], -1).expand(E, -1, -1)
        mean, _ = self._predict(x)
        target = self.target_norm.normalize(self.targets(obs, reward, next_obs))
        return (mean - target).pow(2).mean((1, 2))

    # -- fast particle rollouts for planning ------------------------------------------------
    @torch.no_grad()
    def particle_returns(self, obs: Tensor, action_sequences: Tensor, num_particles: int, *,
                         propagation: str | None = None, dtype: torch.dtype = torch.float32,
                         reward_fn: RewardFn | None = None, discount: float = 1.0,
                         generator: torch.Generator | None = None) -> Tensor:
        """Returns of ``num_particles`` sampled rollouts per sequence.

        Args:
            obs: current observation ``[D]``.
            action_sequences: ``[N, H, A]``.
            num_particles: ``K`` rollouts per sequence.
            propagation: ``"ts_inf"``, ``"ts1"`` or ``"expectation"`` (default from config).
            dtype: compute dtype of the network (``torch.bfloat16`` is ~4x faster on CPUs with
                AVX-512 BF16 or AMX); states and returns are accumulated in float32.
        Returns:
            ``[N, K]`` discounted sums of predicted rewards.
        """
        propagation = propagation or self.config.propagation
        N, H, A = action_sequences.shape
        E, D, K = self.config.ensemble_size, self.obs_dim, num_particles
        weights = self.net.fast_weights(dtype)
        in_mean, in_std = self.input_norm.mean, self.input_norm.std + self.input_norm.eps
        out_mean, out_std = self.target_norm.mean, self.target_norm.std + self.target_norm.eps
        stochastic = self.config.stochastic
        min_lv, max_lv = (self.min_logvar[0], self.max_logvar[0]) if stochastic else (None, None)
        acts = particle_actions(action_sequences, K, E)  # [H, E, M, A]
        M = acts.shape[2]
        state = obs.reshape(1, 1, D).expand(E, M, D).contiguous()
        returns = torch.zeros(E, M, device=obs.device)
        scale = 1.0
        for t in range(H):
            action = acts[t]
            if propagation == "ts1":
                state, action, perm = ts1_shuffle(state, action, generator)
            x = (torch.cat([state, action], -1) - in_mean) / in_std
            if propagation == "expectation":
                x = x.reshape(1, E * M, D + A).expand(E, -1, -1)
            out = self.net.forward_with(weights, x).float()
            if not stochastic:  # deterministic members: the mean, no aleatoric noise
                mean = out.mean(0).view(E, M, -1) if propagation == "expectation" else out
                sample = mean * out_std + out_mean
            else:
                mean, logvar = out.chunk(2, -1)
                if propagation == "expectation":
                    mean = mean.mean(0).view(E, M, -1)
                    logvar = logvar.mean(0).view(E, M, -1)
                logvar = soft_bound_logvar(logvar, min_lv, max_lv)
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                sample = (mean + torch.exp(0.5 * logvar) * noise) * out_std + out_mean
            next_state = state * self.delta_mask + sample[..., :D]
            if reward_fn is not None:
                reward = reward_fn(state.reshape(-1, D), action.reshape(-1, A),
                                   next_state.reshape(-1, D)).view(E, M)
            else:
                reward = mean[..., D] * out_std[D] + out_mean[D]
            if propagation == "ts1":
                next_state, reward = ts1_restore(perm, next_state, reward)
            returns += scale * reward
            scale *= discount
            state = next_state
        return particle_returns_by_sequence(returns, N, K)

    # -- evaluation: open-loop imagination and one-step uncertainty ------------------------------
    @torch.no_grad()
    def imagine(self, obs: Tensor, actions: Tensor, num_samples: int, *,
                generator: torch.Generator | None = None) -> Tensor:
        """Observations of ``num_samples`` open-loop rollouts from real first observations.

        Sample ``k`` stays on member ``k % E`` for the whole rollout (TS-inf) and draws
        aleatoric noise each step when the model is stochastic (none when deterministic).

        Args:
            obs: first observations ``[B, D]``.
            actions: ``[B, T, A]`` applied open loop.
            num_samples: ``K`` rollouts per start.
        Returns:
            ``[K, B, T + 1, D]``; index ``t = 0`` is ``obs`` itself.
        """
        obs = obs.float()
        actions = self.action_spec.to_tensor(actions, "actions").float()
        B, T, A = actions.shape
        E, D, K = self.config.ensemble_size, self.obs_dim, int(num_samples)
        if K < 1:
            from worldflux.core.errors import ConfigError

            raise ConfigError(f"num_samples: got {num_samples}, expected >= 1")
        J = -(-K // E)  # samples per member; sample k = j * E + e runs on member e
        state = obs.reshape(1, 1, B, D).expand(E, J, B, D).reshape(E, J * B, D)
        steps = [state]
        for t in range(T):
            action = actions[:, t].reshape(1, 1, B, A).expand(E, J, B, A).reshape(E, J * B, A)
            mean, logvar = self._predict(torch.cat([state, action], -1))
            sample = mean
            if logvar is not None:
                sample = mean + torch.exp(0.5 * logvar) * torch.randn(
                    mean.shape, generator=generator, device=mean.device)
            state, _ = self._decode_targets(state, self.target_norm.denormalize(sample),
                                            self.target_norm.denormalize(mean))
            steps.append(state)
        out = torch.stack(steps, 1).view(E, T + 1, J, B, D)  # [E, T + 1, J, B, D]
        return out.permute(2, 0, 3, 1, 4).reshape(J * E, B, T + 1, D)[:K]

    @torch.no_grad()
    def predict_uncertainty(self, obs: Tensor, action: Tensor) -> dict[str, Tensor]:
        """One-step predictive mean and variances of the observation change ``next_obs - obs``.

        Args:
            obs: ``[N, D]``; action: ``[N, A]``.
        Returns:
            ``{"mean", "aleatoric", "epistemic"}``, each ``[N, D]`` in observation units:
            the ensemble mean, the mean of the members' predicted variances (zeros for
            deterministic members) and the variance of the members' means (zeros for one member).
        """
        obs = obs.float()
        action = self.action_spec.to_tensor(action, "action").float()
        E, D = self.config.ensemble_size, self.obs_dim
        mean, logvar = self._predict(torch.cat([obs, action], -1).expand(E, -1, -1))
        scale = self.target_norm.std + self.target_norm.eps
        means = (mean * scale + self.target_norm.mean)[..., :D]  # [E, N, D]
        means = means - obs * (1.0 - self.delta_mask)  # next values -> changes
        if logvar is None:
            aleatoric = torch.zeros_like(means[0])
        else:
            aleatoric = (torch.exp(logvar) * scale.pow(2))[..., :D].mean(0)
        epistemic = means.var(0, unbiased=False)
        return {"mean": means.mean(0), "aleatoric": aleatoric, "epistemic": epistemic}

    # -- quality gates (``worldflux verify``) ---------------------------------------------------
    @classmethod
    def smoke_specs(cls) -> tuple[ObservationSpec, ActionSpec]:
        """Pendulum-v1: observations ``(3,)`` (cos, sin, angular velocity), 1 action."""
        return ObservationSpec((3,)), ActionSpec(1)

    @classmethod
    def smoke_config(cls) -> PETSConfig:
        """Config of the smoke task's model: 3 members of 2 x 64 units (variants keep their
        own ensemble size and stochasticity)."""
        return PETSConfig(ensemble_size=3, hidden_size=64, num_layers=2)

    @classmethod
    def smoke_task(cls, seed: int, quick: bool = True):
        """Fit a small ensemble to random-action Pendulum-v1 transitions (one-step prediction).

        Quick: 400 transitions, 200 Adam steps of 64 per member (under a second); full: 2000
        transitions, 1500 steps. Passes when the held-out MSE of the ensemble's mean next
        observation is below 20% of the MSE of predicting no change (``next_obs = obs``).
        """
        from worldflux.quality.smoke import SmokeResult, random_env_transitions

        transitions, steps = (400, 200) if quick else (2000, 1500)
        threshold = 0.2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            data = random_env_transitions("Pendulum-v1", transitions, seed=int(seed))
            obs, act, rew, nxt = data["obs"], data["actions"], data["rewards"], data["next_obs"]
            perm = torch.randperm(obs.shape[0])
            hold, train = perm[: obs.shape[0] // 5], perm[obs.shape[0] // 5:]
            config = cls.smoke_config()
            model = cls(config, ObservationSpec((obs.shape[1],)), ActionSpec(act.shape[1]))
            model.fit_normalizers(obs[train], act[train], rew[train], nxt[train])
            optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                         weight_decay=config.weight_decay)
            for _ in range(steps):
                idx = train[torch.randint(train.numel(), (config.ensemble_size, 64))]
                out = model.transition_loss(obs[idx], act[idx], rew[idx], nxt[idx])
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            with torch.no_grad():
                x = torch.cat([obs[hold], act[hold]], -1).expand(config.ensemble_size, -1, -1)
                mean = model.target_norm.denormalize(model.predict_normalized(x)[0].mean(0))
                predicted = obs[hold] + mean[:, : model.obs_dim]
                mse = float((predicted - nxt[hold]).pow(2).mean())
                baseline = float((obs[hold] - nxt[hold]).pow(2).mean())
        ratio = mse / max(baseline, 1e-12)
        passed = bool(torch.isfinite(torch.tensor(ratio)) and ratio < threshold)
        return SmokeResult(passed, ratio, threshold,
                           f"Pendulum-v1 one-step prediction after {steps} steps: held-out MSE "
                           f"{mse:.3g} vs no-change {baseline:.3g}; ratio must be < {threshold}")

    # -- internals ----------------------------------------------------------------------------
    def _state(self, obs: Tensor) -> State:
        B = obs.shape[0]
        member = torch.arange(B, device=obs.device) % self.config.ensemble_size
        reward = torch.zeros(B, device=obs.device)
        return State({"obs": obs, "reward": reward, "member": member}, {"family": self.family})

    def _decode_targets(self, obs: Tensor, sample: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
        D = self.obs_dim
        next_obs = obs * self.delta_mask + sample[..., :D]
        reward = mean[..., D] if self.config.learn_reward else torch.zeros_like(obs[..., 0])
        return next_obs, reward
