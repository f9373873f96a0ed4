"""Latent world models: encoder -> latent dynamics (+ reward head) -> decoder.

Observations are encoded once (state vectors standardised by a :class:`Normalizer`; uint8
images mapped to ``[-0.5, 0.5]``); an ensemble of MLPs predicts the change of the latent for an
action and a reward head scores ``(latent, action, next latent)``, so planning runs entirely in
the latent space. The decoder maps latents back to observations (reconstruction loss, imagined
observations). Latent inputs and latent changes are centred and scaled by one standard
deviation shared by all latent features (running statistics in buffers, momentum
``config.latent_momentum``, because the encoder moves during training).

The model implements the one-step model protocol of :class:`~worldflux.models.pets.PETSModel`
(``fit_normalizers``, ``transition_loss``, ``evaluation_mse``, ``particle_returns``,
``imagine``, ``predict_uncertainty``) with observations of any supported shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.errors import ConfigError
from worldflux.core.model import WorldModel
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec, standard_batch_keys
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.latent.config import LatentConfig
from worldflux.models.latent.networks import (
    ConvDecoder,
    ConvEncoder,
    KeypointDecoder,
    KeypointEncoder,
    MLPDecoder,
    MLPEncoder,
)
from worldflux.nn import EnsembleMLP, Normalizer, gaussian_nll, soft_bound_logvar
from worldflux.nn.particles import (
    particle_actions,
    particle_returns_by_sequence,
    ts1_restore,
    ts1_shuffle,
)

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""Known reward on decoded observations ``(obs [N, *obs], action [N, A], next_obs) -> [N]``."""

MIN_POSTERIOR_STD = 1e-3
"""Lower bound of the VAE posterior standard deviation."""
CHUNK = 512
"""Rows per encoder/decoder call when encoding or decoding many observations without gradients."""
FOREGROUND_THRESHOLD = 30.0 / 255.0
"""Images: a pixel is foreground (``config.foreground_weight``) when some channel differs from
the background by more than this (30 of 255 levels)."""
BACKGROUND_FRAMES = 2048
"""Frames whose per-pixel median is the background image."""


class LatentModel(WorldModel):
    """Autoencoder (or VAE) latent world model; see :class:`LatentConfig`.

    State keys: ``"latent" [B, Z]``, ``"reward" [B]`` (predicted reward of the transition into
    the state; 0 after ``encode``), ``"member" [B]`` (int64 dynamics member of each row).
    """

    config_class: ClassVar[type[LatentConfig]] = LatentConfig

    def __init__(self, config: LatentConfig, obs_spec: ObservationSpec, action_spec: ActionSpec):
        super().__init__(config, obs_spec, action_spec)
        config.validate(obs_spec, action_spec)
        Z, A, E = config.latent_size, action_spec.dim, config.ensemble_size
        self.latent_size, self.action_dim = Z, A
        self.image = config.encoder != "mlp"
        posterior = 2 * Z if config.variational else Z
        if config.encoder == "keypoints":
            shape = tuple(obs_spec.shape)
            K, F = Z // (2 * config.frames), config.frames
            self.encoder = KeypointEncoder(shape, K, config.conv_depth, F)
            self.decoder = KeypointDecoder(K, shape, config.conv_depth, F)
        elif self.image:
            shape = tuple(obs_spec.shape)
            self.encoder = ConvEncoder(shape, posterior, config.conv_depth)
            self.decoder = ConvDecoder(Z, shape, config.conv_depth)
        else:
            D = obs_spec.shape[0]
            self.encoder = MLPEncoder(D, posterior, config.hidden_size, config.num_layers,
                                      config.encoder_skip)
            self.decoder = MLPDecoder(Z, D, config.hidden_size, config.num_layers,
                                      config.encoder_skip)
            self.obs_norm = Normalizer(D)
        outputs = 2 * Z if config.stochastic else Z
        self.dynamics = EnsembleMLP(E, Z + A, outputs, config.dynamics_hidden_size,
                                    config.dynamics_num_layers, config.activation)
        if config.stochastic:
            self.min_logvar = nn.Parameter(torch.full((1, 1, Z), config.min_logvar_init))
            self.max_logvar = nn.Parameter(torch.full((1, 1, Z), config.max_logvar_init))
        if config.learn_reward:
            potential = config.reward_head == "potential"
            self.reward_head = EnsembleMLP(1, Z + A if potential else 2 * Z + A, 1,
                                           config.reward_hidden_size, config.reward_num_layers,
                                           config.activation)
            if potential:
                self.potential = EnsembleMLP(1, Z, 1, config.reward_hidden_size,
                                             config.reward_num_layers, config.activation)
            if config.reward_events is not None:  # classes dense / low / high
                self.event_head = EnsembleMLP(1, 2 * Z + A, 3, config.reward_hidden_size,
                                              config.reward_num_layers, config.activation)
                low, high = (float(v) for v in config.reward_events)
                # Reward sums and counts of each event class seen in training (the class means
                # start at the bounds).
                self.register_buffer("event_sums", torch.tensor([0.0, low, high]))
                self.register_buffer("event_counts", torch.tensor([0.0, 1.0, 1.0]))
        self.reward_norm = Normalizer(1)
        self.latent_norm = Normalizer(Z, min_std=1e-4)
        self.delta_norm = Normalizer(Z, min_std=1e-4)
        self.register_buffer("stats_ready", torch.zeros(1))
        if self.image:  # network-space background of the foreground weighting, and whether set
            self.register_buffer("background", torch.zeros(tuple(obs_spec.shape)))
            self.register_buffer("background_ready", torch.zeros(1))

    # -- contract ---------------------------------------------------------------------------
    def io_contract(self) -> IOContract:
        return IOContract(self.obs_spec, self.action_spec, standard_batch_keys(),
                          state_keys=("latent", "reward", "member"),
                          predictions=("obs", "reward"), min_sequence_length=2)

    def initial_state(self, batch_size: int) -> State:
        device = self.latent_norm.mean.device
        return self._state(torch.zeros(batch_size, self.latent_size, device=device))

    def encode(self, obs: Tensor) -> State:
        """Posterior mean of ``obs [B, *obs]`` as the state's latent."""
        return self._state(self.encode_latent(obs))

    def transition(self, state: State, action: Tensor, *, deterministic: bool = False,
                   generator: torch.Generator | None = None) -> State:
        """One latent step ``[B, Z] -> [B, Z]``; each row uses its ``member``."""
        z, member = state["latent"], state["member"]
        E = self.config.ensemble_size
        if self.config.propagation == "ts1" and not deterministic:
            member = torch.randint(E, member.shape, generator=generator, device=member.device)
        action = action.float()
        mean, logvar = self._dynamics(z.expand(E, -1, -1), action.expand(E, -1, -1))
        if self.config.propagation == "expectation" or deterministic:
            mean = mean.mean(0)
            logvar = None if logvar is None else logvar.mean(0)
        else:
            rows = torch.arange(z.shape[0], device=z.device)
            mean = mean[member, rows]
            logvar = None if logvar is None else logvar[member, rows]
        sample = mean
        if logvar is not None and not deterministic:
            sample = mean + torch.exp(0.5 * logvar) * torch.randn(
                mean.shape, generator=generator, device=mean.device)
        next_z = z + self.delta_norm.denormalize(sample)
        reward = self._reward(z, action, next_z) if self.config.learn_reward \
            else torch.zeros_like(z[:, 0])
        return State({"latent": next_z, "reward": reward, "member": member},
                     {"family": self.family})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput({"obs": self.decode_latent(state["latent"]),
                            "reward": state["reward"]}, state)

    def loss(self, batch: Batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """:meth:`transition_loss` on bootstrapped pairs ``t -> t+1`` of a sequence batch."""
        obs, next_obs = batch["obs"][:, :-1], batch["obs"][:, 1:]
        actions, rewards = batch["actions"][:, 1:], batch["rewards"][:, 1:]
        valid = ~batch["is_first"][:, 1:].bool()
        obs, next_obs, actions, rewards = obs[valid], next_obs[valid], actions[valid], rewards[valid]
        n = obs.shape[0]
        if n == 0:
            zero = sum(p.sum() for p in self.parameters()) * 0
            return LossOutput(zero, {"recon": zero}, {"transitions": 0.0})
        E = self.config.ensemble_size
        idx = torch.randint(n, (E, n), generator=generator, device=obs.device)  # bootstrap
        return self.transition_loss(obs[idx], actions[idx], rewards[idx], next_obs[idx])

    # -- encoder / decoder ------------------------------------------------------------------
    def obs_input(self, obs: Tensor) -> Tensor:
        """Observations -> network space: standardised states, or images in ``[-0.5, 0.5]``
        (uint8, or float on the same 0..255 scale)."""
        if self.image:
            return obs.float() / 255.0 - 0.5
        return self.obs_norm.normalize(obs.float())

    def obs_output(self, x: Tensor) -> Tensor:
        """Network space -> observation units (images: float in ``[0, 255]``)."""
        if self.image:
            return ((x + 0.5) * 255.0).clamp(0.0, 255.0)
        return self.obs_norm.denormalize(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Network-space observations ``[N, *obs]`` -> latent mean ``[N, Z]`` and std (VAE) or
        ``None`` (plain autoencoder)."""
        out = self.encoder(x).float()
        if not self.config.variational:
            return out, None
        mean, raw = out.chunk(2, -1)
        return mean, F.softplus(raw) + MIN_POSTERIOR_STD

    def encode_latent(self, obs: Tensor) -> Tensor:
        """Posterior means ``[N, Z]`` of observations ``[N, *obs]`` (chunked without gradients)."""
        if torch.is_grad_enabled() or obs.shape[0] <= CHUNK:
            return self.posterior(self.obs_input(obs))[0]
        return torch.cat([self.posterior(self.obs_input(part))[0]
                          for part in obs.split(CHUNK)])

    def encoding_fingerprint(self) -> Tensor:
        """Everything :meth:`encode_latent` depends on, flattened into one vector ``[P]`` (the
        encoder's parameters and buffers, the observation statistics of state inputs, and the
        train/eval mode): equal fingerprints give equal latents, so encoded rows can be kept."""
        parts = [t.detach().reshape(-1).float() for t in
                 (*self.encoder.parameters(), *self.encoder.buffers())]
        if not self.image:
            parts += [self.obs_norm.mean.reshape(-1), self.obs_norm.std.reshape(-1)]
        parts.append(torch.tensor([float(self.training)], device=parts[0].device))
        return torch.cat(parts).clone()

    def decode_latent(self, z: Tensor) -> Tensor:
        """Latents ``[N, Z]`` -> observations ``[N, *obs]`` in observation units."""
        if torch.is_grad_enabled() or z.shape[0] <= CHUNK:
            return self.obs_output(self.decoder(z))
        return torch.cat([self.obs_output(self.decoder(part)) for part in z.split(CHUNK)])

    def autoencoder_loss(self, obs: Tensor) -> LossOutput:
        """Reconstruction (+ KL) of ``obs [N, *obs]`` alone: a first stage before dynamics."""
        x = self.obs_input(obs)
        recon, kl, z = self._autoencode(x)
        loss = self.config.recon_scale * recon + kl
        metrics = {"loss": float(loss.detach()), "recon": float(recon.detach()),
                   "recon_mse": float(recon.detach()) / self._features}
        if self.config.variational:
            metrics["kl"] = float(kl.detach())
        return LossOutput(loss, {"recon": self.config.recon_scale * recon, "kl": kl}, metrics)

    # -- one-step model protocol --------------------------------------------------------------
    @torch.no_grad()
    def fit_normalizers(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> None:
        """Set observation and reward statistics from transitions ``[N, ...]``, then the latent
        statistics from the current encoder on (up to 4096 of) them."""
        if not self.image:
            self.obs_norm.fit(torch.cat([obs, next_obs]).float())
        else:
            step = max(1, obs.shape[0] // BACKGROUND_FRAMES)
            self.background.copy_(self.obs_input(obs[::step]).median(0).values)
            self.background_ready.fill_(1.0)
        self.reward_norm.fit(reward.reshape(-1, 1).float())
        n = obs.shape[0]
        rows = torch.randperm(n, device=obs.device)[:4096] if n > 4096 else slice(None)
        was_training = self.training
        self.eval()
        z, z_next = self.encode_latent(obs[rows]), self.encode_latent(next_obs[rows])
        self.train(was_training)
        per_feature = self.config.latent_scale == "per_feature"
        _fit_latent(self.latent_norm, z, per_feature)
        _fit_latent(self.delta_norm, z_next - z, per_feature)
        self.stats_ready.fill_(1.0)

    @property
    def trains_on_latents(self) -> bool:
        """``training="encoded"``: the dynamics and reward head learn on latents encoded once by
        the (frozen) encoder, see :meth:`latent_transition_loss`."""
        return self.config.training == "encoded"

    def transition_loss(self, obs: Tensor, action: Tensor, reward: Tensor,
                        next_obs: Tensor) -> LossOutput:
        """Loss of per-member batches ``obs [E, N, *obs]``, ``action [E, N, A]``, ``reward [E, N]``.

        Terms (sums over features, means over rows): reconstruction of ``obs`` and ``next_obs``
        (+ KL with free bits for a VAE); latent dynamics, MSE or Gaussian NLL of the encoded
        next latent (stop-gradient target) in standardised latent-change units, summed over
        members; the reconstruction of the predicted next observation (through a frozen decoder
        in two-stage training, so that it only trains the dynamics); the reward head's squared
        error. With ``training="encoded"`` only the dynamics and reward terms, on latents of
        the frozen encoder. Metrics: ``loss``, ``recon_mse``, ``mse_normalized``,
        ``mse_member_i`` (and ``nll``, ``nll_member_i`` for Gaussian dynamics), ``reward_mse``.
        """
        cfg = self.config
        E, N = obs.shape[:2]
        if self.trains_on_latents:
            with torch.no_grad():
                z = self.encode_latent(torch.cat([obs, next_obs], 1).flatten(0, 1))
            z = z.view(E, 2 * N, -1)
            return self.latent_transition_loss(z[:, :N], action, reward, z[:, N:])
        joint = cfg.training == "joint"
        x = self.obs_input(torch.cat([obs, next_obs], 1).reshape(E * 2 * N, *obs.shape[2:]))
        recon, kl, z = self._autoencode(x)
        z = z.view(E, 2 * N, -1)
        z_t, z_next = z[:, :N], z[:, N:]
        source = _scale_gradient(z_t, cfg.representation_scale) if joint else z_t.detach()
        components = {"recon": cfg.recon_scale * recon}
        metrics: dict[str, float] = {"recon_mse": float(recon.detach()) / self._features}
        if cfg.variational:
            components["kl"] = kl
            metrics["kl"] = float(kl.detach())
        predicted, _ = self._dynamics_terms(source, action, reward, z_next, components, metrics)
        if cfg.predicted_recon_scale > 0:
            decoder = self.decoder if joint else self._frozen_decoder
            decoded = decoder(predicted.reshape(E * N, -1))
            truth = x.view(E, 2 * N, *x.shape[1:])[:, N:].reshape(decoded.shape)
            pred_recon = self._recon_error(decoded, truth)
            components["predicted_recon"] = cfg.predicted_recon_scale * pred_recon
            metrics["predicted_recon_mse"] = float(pred_recon.detach()) / self._features
        loss = sum(components.values())
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss, components, metrics)

    def latent_transition_loss(self, z: Tensor, action: Tensor, reward: Tensor,
                               next_z: Tensor) -> LossOutput:
        """The dynamics and reward terms of :meth:`transition_loss` on given latents
        ``z, next_z [E, N, Z]`` (no reconstruction; nothing reaches the encoder)."""
        return self.latent_window_loss(z.unsqueeze(2), action.unsqueeze(2),
                                       reward.unsqueeze(2), next_z.unsqueeze(2))

    def latent_window_loss(self, z: Tensor, action: Tensor, reward: Tensor, next_z: Tensor,
                           mask: Tensor | None = None) -> LossOutput:
        """Open-loop loss over windows of ``k`` consecutive transitions of given latents.

        Args:
            z, next_z: ``[E, N, k, Z]``, the encoded observation and next observation of each
                transition (``next_z[:, :, j]`` is ``z[:, :, j + 1]`` where both are valid).
            action: ``[E, N, k, A]``; reward: ``[E, N, k]``.
            mask: ``[E, N, k]`` bool, which steps are part of the window (a prefix; the first
                step always is); None = all.

        The dynamics start from ``z[:, :, 0]`` and are fed their own predictions (gradients
        through the whole window, as PlaNet's overshooting and TD-MPC's latent rollouts); the
        term is the mean over steps of each step's error against ``next_z`` (step 0 is the
        one-step term of :meth:`transition_loss`, and ``k = 1`` is that loss exactly). The
        reward head is fitted at every step on the encoded latents, and a potential head
        (``reward_head="potential"``) also on the windows' cumulative rewards
        (``phi(z'_j) - phi(z_0) + sum psi``), where the progress of many steps stands out of
        the latents' noise.
        """
        cfg = self.config
        z, next_z = z.detach(), next_z.detach()
        k = z.shape[2]
        if mask is None:
            mask = torch.ones(z.shape[:3], dtype=torch.bool, device=z.device)
        components: dict[str, Tensor] = {}
        metrics: dict[str, float] = {}
        state, loss_scale = self._dynamics_terms(z[:, :, 0], action[:, :, 0], reward[:, :, 0],
                                                 next_z[:, :, 0], components, metrics,
                                                 reward_terms=k == 1)
        if k > 1:
            if cfg.stochastic:
                raise ConfigError("rollout_steps: got windows of > 1 step with stochastic "
                                  "dynamics, expected deterministic dynamics")
            weight = mask[:, :, 1:].float()
            count = weight.sum().clamp_min(1.0)
            dyn = components["dynamics"] / cfg.dynamics_scale
            later = state.new_zeros(())
            for j in range(1, k):
                mean, _ = self._dynamics(state, action[:, :, j].float())
                state = state + mean * (self.delta_norm.std + self.delta_norm.eps) \
                    + self.delta_norm.mean
                err = ((state - next_z[:, :, j]) / loss_scale).pow(2).sum(-1)  # [E, N]
                later = later + (err * weight[:, :, j - 1]).sum()
            later = later / count  # mean over the valid later steps of members and rows
            # The mean over the window's k steps of the per-member sums (the one-step term's
            # scale: ``dyn`` sums the E members' means).
            components["dynamics"] = cfg.dynamics_scale * (dyn + z.shape[0] * (k - 1) * later) / k
            metrics["window_mse_normalized"] = float(later.detach()) / self.latent_size
            if cfg.learn_reward:
                self._window_reward_terms(z, action, reward, next_z, mask, components, metrics)
        loss = sum(components.values())
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss, components, metrics)

    def _window_reward_terms(self, z: Tensor, action: Tensor, reward: Tensor, next_z: Tensor,
                             mask: Tensor, components: dict[str, Tensor],
                             metrics: dict[str, float]) -> None:
        """Reward terms of windows ``[E, N, k, ...]`` (see :meth:`latent_window_loss`): the
        one-step error averaged over all valid steps, and for a potential head the error of
        the cumulative rewards ``[E, N, k]``."""
        cfg = self.config
        weight = mask.float()
        normed, next_normed = self.latent_norm.normalize(z), self.latent_norm.normalize(next_z)
        action = action.float()
        target = self.reward_norm.normalize(reward.float().unsqueeze(-1)).squeeze(-1)
        potential = cfg.reward_head == "potential"
        if potential:  # the parts of _head, each evaluated once for both terms
            lead = normed.shape[:-1]
            phi = self.potential(normed.reshape(1, -1, normed.shape[-1])).float().view(lead)
            phi_next = self.potential(next_normed.reshape(1, -1, normed.shape[-1])
                                      ).float().view(lead)
            psi = self.reward_head(torch.cat([action, next_normed], -1).reshape(
                1, -1, action.shape[-1] + normed.shape[-1])).float().view(lead)
            predicted = phi_next - phi + psi  # [E, N, k]
        else:
            one_step = self._reward_fit_error(normed, action, next_normed, reward.float(),
                                              weight, metrics)
            components["reward"] = cfg.reward_scale * one_step
            return
        one_step = (self._reward_error(predicted, target) * weight).sum() / weight.sum()
        components["reward"] = cfg.reward_scale * one_step
        metrics["reward_mse"] = float(one_step.detach())
        cumulative = phi_next - phi[:, :, :1] + (psi * weight).cumsum(-1)
        cum_target = (target * weight).cumsum(-1)
        later = weight[:, :, 1:]
        err = (self._reward_error(cumulative, cum_target)[:, :, 1:] * later).sum() \
            / later.sum().clamp_min(1)
        components["reward_sum"] = cfg.reward_scale * err
        metrics["reward_sum_mse"] = float(err.detach())

    def _dynamics_terms(self, source: Tensor, action: Tensor, reward: Tensor, z_next: Tensor,
                        components: dict[str, Tensor], metrics: dict[str, float],
                        reward_terms: bool = True) -> tuple[Tensor, Tensor]:
        """Add the dynamics and (unless ``reward_terms`` is False) reward terms of latents
        ``source -> z_next [E, N, Z]`` to ``components`` / ``metrics``; returns the predicted
        next latent ``[E, N, Z]`` and the
        scale ``[Z]`` its errors are measured in."""
        cfg = self.config
        joint = cfg.training == "joint"
        target = z_next.detach()
        loss_scale = self._statistics(source.detach(), target - source.detach())
        action = action.float()
        mean, logvar = self._dynamics(source, action)
        scale = self.delta_norm.std + self.delta_norm.eps
        predicted = source + mean * scale + self.delta_norm.mean  # next latent [E, N, Z]
        # Errors in units of this batch's latent-change scale: the loss stays a relative error
        # while the encoder (and so the latent scale) moves. The outputs keep the running scale
        # (a per-batch output scale measurably worsened predictions: label noise).
        err = (predicted - target) / loss_scale
        per_dim = err.detach().pow(2).mean(1)  # [E, Z]
        mse_member = per_dim.mean(1)
        metrics["mse_normalized"] = float(mse_member.mean())
        if logvar is None:
            dyn = err.pow(2).sum(-1).mean(1)  # [E]
            components["dynamics"] = cfg.dynamics_scale * dyn.sum()
        else:
            logvar = logvar + 2 * torch.log(scale / loss_scale)  # in loss_scale units
            nll = gaussian_nll(err, logvar, torch.zeros_like(err)).sum(-1).mean(1)  # [E]
            components["dynamics"] = cfg.dynamics_scale * nll.sum()
            components["logvar_bound"] = cfg.logvar_bound_coef * (
                self.max_logvar.sum() - self.min_logvar.sum())
            metrics["nll"] = float(nll.detach().mean()) / self.latent_size
            metrics.update({f"nll_member_{i}": float(v) / self.latent_size
                            for i, v in enumerate(nll.detach())})
        metrics.update({f"mse_member_{i}": float(v) for i, v in enumerate(mse_member)})
        if cfg.learn_reward and reward_terms:
            reward_in = z_next if joint else target
            reward_err = self._reward_fit_error(
                self.latent_norm.normalize(source), action, self.latent_norm.normalize(reward_in),
                reward.float().expand(predicted.shape[:-1]), None, metrics)
            components["reward"] = cfg.reward_scale * reward_err
        return predicted, loss_scale

    @torch.no_grad()
    def evaluation_mse(self, obs: Tensor, action: Tensor, reward: Tensor,
                       next_obs: Tensor) -> Tensor:
        """Per-member held-out error ``[E]``: squared error of the decoded predicted next
        observation (network space, standardised for states) averaged over its features
        together with the standardised reward error as one more feature; with
        ``training="encoded"``, :meth:`latent_evaluation_mse` of the encoded observations."""
        if self.trains_on_latents:
            return self.latent_evaluation_mse(self.encode_latent(obs), action, reward,
                                              self.encode_latent(next_obs))
        E = self.config.ensemble_size
        z = self.encode_latent(obs)
        action = action.float()
        mean, _ = self._dynamics(z.expand(E, -1, -1), action.expand(E, -1, -1))
        next_z = z + self.delta_norm.denormalize(mean)  # [E, N, Z]
        decoded = torch.cat([self.decoder(part) for part in next_z.reshape(-1, self.latent_size)
                             .split(CHUNK)]).view(E, obs.shape[0], -1)
        truth = self.obs_input(next_obs).reshape(1, obs.shape[0], -1)
        err = (decoded - truth).pow(2).sum(-1)  # [E, N]
        features = self._features
        if self.config.learn_reward:
            predicted = self._reward_normalized(z.expand(E, -1, -1), action.expand(E, -1, -1),
                                                next_z)
            target = self.reward_norm.normalize(reward.float().reshape(-1, 1)).reshape(1, -1)
            err = err + self._reward_error(predicted, target)
            features += 1
        return err.mean(1) / features

    @torch.no_grad()
    def latent_evaluation_mse(self, z: Tensor, action: Tensor, reward: Tensor,
                              next_z: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-member held-out error ``[E]`` on latents: the squared error of the predicted next
        latent in latent-change standard deviations, averaged over its features together with
        the standardised reward error as one more feature.

        Args:
            z, next_z: ``[N, Z]`` transitions, or ``[N, k, Z]`` windows of ``k`` consecutive
                ones; a window is predicted open loop from ``z[:, 0]`` (as
                :meth:`latent_window_loss` trains it) and scored by its mean over valid steps.
            action: ``[N, A]`` or ``[N, k, A]``; reward: ``[N]`` or ``[N, k]``.
            mask: ``[N, k]`` bool, the valid steps of each window (a prefix); None = all.
        """
        if z.dim() == 2:
            z, action, reward, next_z = (t.unsqueeze(1) for t in (z, action, reward, next_z))
        E, (N, k) = self.config.ensemble_size, z.shape[:2]
        weight = (torch.ones(N, k, device=z.device) if mask is None else mask.float())
        action = action.float()
        scale = self.delta_norm.std + self.delta_norm.eps
        state = z[:, 0].expand(E, -1, -1)
        err = z.new_zeros(E, N)
        for j in range(k):
            mean, _ = self._dynamics(state, action[:, j].expand(E, -1, -1))
            predicted = state + self.delta_norm.denormalize(mean)  # [E, N, Z]
            step = ((predicted - next_z[:, j]) / scale).pow(2).sum(-1)  # [E, N]
            if self.config.learn_reward:
                predicted_reward = self._reward_normalized(state, action[:, j].expand(E, -1, -1),
                                                           predicted)
                target = self.reward_norm.normalize(reward[:, j].float().reshape(-1, 1))
                step = step + self._reward_error(predicted_reward, target.reshape(1, -1))
            err = err + step * weight[:, j]
            state = predicted
        features = self.latent_size + int(self.config.learn_reward)
        return (err / weight.sum(1)).mean(1) / features

    @torch.no_grad()
    def particle_returns(self, obs: Tensor, action_sequences: Tensor, num_particles: int, *,
                         propagation: str | None = None, dtype: torch.dtype = torch.float32,
                         reward_fn: RewardFn | None = None, discount: float = 1.0,
                         generator: torch.Generator | None = None) -> Tensor:
        """Returns of ``num_particles`` latent rollouts per sequence (dynamics and reward head
        run in ``dtype``, accumulation in float32).

        The observation is encoded once per planning decision: the latent of the last ``obs``
        tensor is kept and reused while neither that tensor nor the encoder's weights change
        (a planner calls this once per iteration with the same observation).

        Args:
            obs: current observation ``[*obs]``.
            action_sequences: ``[N, H, A]``.
            num_particles: ``K`` rollouts per sequence.
            propagation: ``"ts_inf"``, ``"ts1"`` or ``"expectation"`` (default from config).
            reward_fn: known reward on decoded observations instead of the reward head.
        Returns:
            ``[N, K]`` discounted sums of predicted rewards.
        """
        propagation = propagation or self.config.propagation
        if reward_fn is None and not self.config.learn_reward:
            raise ConfigError("reward_fn: got None with learn_reward false; pass a reward "
                              "function on decoded observations")
        N, H, A = action_sequences.shape
        E, Z, K = self.config.ensemble_size, self.latent_size, num_particles
        z0 = self._planning_latent(obs)
        weights = self.dynamics.fast_weights(dtype)
        reward_weights = self._head_weights(dtype) if reward_fn is None else None
        lat_mean, lat_std = self.latent_norm.mean, self.latent_norm.std + self.latent_norm.eps
        d_mean, d_std = self.delta_norm.mean, self.delta_norm.std + self.delta_norm.eps
        r_mean, r_std = self.reward_norm.mean, self.reward_norm.std + self.reward_norm.eps
        stochastic = self.config.stochastic
        min_lv, max_lv = (self.min_logvar[0], self.max_logvar[0]) if stochastic else (None, None)
        acts = particle_actions(action_sequences, K, E).float()  # [H, E, M, A]
        M = acts.shape[2]
        state = z0.reshape(1, 1, Z).expand(E, M, Z).contiguous()
        returns = torch.zeros(E, M, device=obs.device)
        scale = 1.0
        for t in range(H):
            action = acts[t]
            if propagation == "ts1":
                state, action, perm = ts1_shuffle(state, action, generator)
            normed = (state - lat_mean) / lat_std
            x = torch.cat([normed, action], -1)
            if propagation == "expectation":
                x = x.reshape(1, E * M, Z + A).expand(E, -1, -1)
            out = self.dynamics.forward_with(weights, x).float()
            if not stochastic:
                sample = out.mean(0).view(E, M, Z) if propagation == "expectation" else out
            else:
                mean, logvar = out.chunk(2, -1)
                if propagation == "expectation":
                    mean, logvar = mean.mean(0).view(E, M, Z), logvar.mean(0).view(E, M, Z)
                logvar = soft_bound_logvar(logvar, min_lv, max_lv)
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                sample = mean + torch.exp(0.5 * logvar) * noise
            next_state = state + sample * d_std + d_mean
            if reward_fn is not None:
                reward = reward_fn(self.decode_latent(state.reshape(-1, Z)),
                                   action.reshape(-1, A),
                                   self.decode_latent(next_state.reshape(-1, Z))).view(E, M)
            else:
                head_out = self._head(normed, action, (next_state - lat_mean) / lat_std,
                                      reward_weights)
                reward = head_out * r_std[0] + r_mean[0]
            if propagation == "ts1":
                next_state, reward = ts1_restore(perm, next_state, reward)
            returns += scale * reward
            scale *= discount
            state = next_state
        return particle_returns_by_sequence(returns, N, K)

    @torch.no_grad()
    def imagine(self, obs: Tensor, actions: Tensor, num_samples: int, *,
                generator: torch.Generator | None = None) -> Tensor:
        """Decoded observations of ``num_samples`` open-loop latent rollouts.

        Sample ``k`` stays on dynamics member ``k % E`` (TS-inf), with Gaussian noise each step
        when the dynamics are stochastic.

        Args:
            obs: first observations ``[B, *obs]``.
            actions: ``[B, T, A]``.
            num_samples: ``K``.
        Returns:
            ``[K, B, T + 1, *obs]`` in observation units (images: float in ``[0, 255]``);
            index ``t = 0`` is the reconstruction of ``obs``.
        """
        actions = self.action_spec.to_tensor(actions, "actions").float()
        B, T, A = actions.shape
        E, Z, K = self.config.ensemble_size, self.latent_size, int(num_samples)
        if K < 1:
            raise ConfigError(f"num_samples: got {num_samples}, expected >= 1")
        J = -(-K // E)  # samples per member; sample k = j * E + e runs on member e
        z = self.encode_latent(obs)
        state = z.reshape(1, 1, B, Z).expand(E, J, B, Z).reshape(E, J * B, Z)
        steps = [state]
        for t in range(T):
            action = actions[:, t].reshape(1, 1, B, A).expand(E, J, B, A).reshape(E, J * B, A)
            mean, logvar = self._dynamics(state, action)
            if logvar is not None:
                mean = mean + torch.exp(0.5 * logvar) * torch.randn(
                    mean.shape, generator=generator, device=mean.device)
            state = state + self.delta_norm.denormalize(mean)
            steps.append(state)
        latents = torch.stack(steps, 1)  # [E, T + 1, J * B, Z]
        decoded = self.decode_latent(latents.reshape(-1, Z))
        shape = tuple(self.obs_spec.shape)
        decoded = decoded.view(E, T + 1, J, B, *shape)
        order = (2, 0, 3, 1, *range(4, 4 + len(shape)))
        return decoded.permute(order).reshape(J * E, B, T + 1, *shape)[:K]

    @torch.no_grad()
    def predict_uncertainty(self, obs: Tensor, action: Tensor) -> dict[str, Tensor]:
        """One-step predictive mean and variances of the latent change ``z' - z``.

        Args:
            obs: ``[N, *obs]``; action: ``[N, A]``.
        Returns:
            ``{"mean", "aleatoric", "epistemic"}``, each ``[N, Z]`` in latent units: the
            ensemble mean, the mean of the members' variances (zeros for deterministic
            dynamics) and the variance of the members' means (zeros for one member).
        """
        E = self.config.ensemble_size
        z = self.encode_latent(obs)
        action = self.action_spec.to_tensor(action, "action").float()
        mean, logvar = self._dynamics(z.expand(E, -1, -1), action.expand(E, -1, -1))
        scale = self.delta_norm.std + self.delta_norm.eps
        means = mean * scale + self.delta_norm.mean
        aleatoric = torch.zeros_like(means[0]) if logvar is None \
            else (torch.exp(logvar) * scale.pow(2)).mean(0)
        return {"mean": means.mean(0), "aleatoric": aleatoric,
                "epistemic": means.var(0, unbiased=False)}

    # -- quality gates (``worldflux verify``) ---------------------------------------------------
    @classmethod
    def smoke_specs(cls) -> tuple[ObservationSpec, ActionSpec]:
        """Pendulum-v1 ``(3,)`` with 1 action for state encoders; 64x64 RGB with 2 actions for
        the conv encoder."""
        if cls.config_class().encoder != "mlp":
            return ObservationSpec((3, 64, 64), "uint8"), ActionSpec(2)
        return ObservationSpec((3,)), ActionSpec(1)

    @classmethod
    def smoke_task(cls, seed: int, quick: bool = True):
        """State encoders: fit random-action Pendulum-v1 transitions (quick: 400 transitions,
        300 steps; full: 2000, 1500) and pass when the held-out MSE of the decoded one-step
        prediction is below 20% of that of predicting no change. Conv encoder: train on
        64x64 images of a linear-Gaussian system (quick: 40 steps, full: 150) and pass when
        the held-out loss falls by 30%."""
        if cls.config_class().encoder != "mlp":
            return cls._pixel_smoke_task(seed, quick)
        from worldflux.quality.smoke import SmokeResult, random_env_transitions

        transitions, steps = (400, 300) if quick else (2000, 1500)
        threshold = 0.2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            data = random_env_transitions("Pendulum-v1", transitions, seed=int(seed))
            obs, act, rew, nxt = data["obs"], data["actions"], data["rewards"], data["next_obs"]
            perm = torch.randperm(obs.shape[0])
            hold, train = perm[: obs.shape[0] // 5], perm[obs.shape[0] // 5:]
            config = cls.config_class(hidden_size=64, dynamics_hidden_size=64,
                                      dynamics_num_layers=2, reward_hidden_size=32)
            model = cls(config, ObservationSpec((obs.shape[1],)), ActionSpec(act.shape[1]))
            model.fit_normalizers(obs[train], act[train], rew[train], nxt[train])
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            for _ in range(steps):
                idx = train[torch.randint(train.numel(), (config.ensemble_size, 64))]
                out = model.transition_loss(obs[idx], act[idx], rew[idx], nxt[idx])
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                state = model.transition(model.encode(obs[hold]), act[hold], deterministic=True)
                predicted = model.decode(state).preds["obs"]
                mse = float((predicted - nxt[hold]).pow(2).mean())
                baseline = float((obs[hold] - nxt[hold]).pow(2).mean())
        ratio = mse / max(baseline, 1e-12)
        passed = bool(math.isfinite(ratio) and ratio < threshold)
        return SmokeResult(passed, ratio, threshold,
                           f"Pendulum-v1 decoded one-step prediction after {steps} steps: "
                           f"held-out MSE {mse:.3g} vs no-change {baseline:.3g}; ratio must "
                           f"be < {threshold}")

    @classmethod
    def _pixel_smoke_task(cls, seed: int, quick: bool):
        from worldflux.quality.smoke import (
            GENERIC_DROP,
            LinearGaussianSystem,
            SmokeResult,
            held_out_loss,
            relative_decrease,
        )

        steps = 40 if quick else 150
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            obs_spec, action_spec = cls.smoke_specs()
            config = cls.config_class(conv_depth=8, latent_size=16, dynamics_hidden_size=64,
                                      reward_hidden_size=32)
            model = cls(config, obs_spec, action_spec)
            system = LinearGaussianSystem(model.io_contract(), seed=int(seed))
            held_out = system.batch(8, 4)
            first = system.batch(8, 4)
            with torch.no_grad():  # start the latent statistics from data
                model.loss(first)
            before = held_out_loss(model, held_out, seed)
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            model.train()
            for _ in range(steps):
                out = model.loss(system.batch(4, 4))
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            after = held_out_loss(model, held_out, seed)
        decrease = relative_decrease(before, after)
        passed = math.isfinite(decrease) and decrease >= GENERIC_DROP
        return SmokeResult(bool(passed), float(decrease), float(GENERIC_DROP),
                           f"64x64 images of a linear-Gaussian system, {steps} steps: held-out "
                           f"loss {before:.4g} -> {after:.4g}; relative decrease must be >= "
                           f"{GENERIC_DROP}")

    # -- internals ----------------------------------------------------------------------------
    def _frozen_decoder(self, z: Tensor) -> Tensor:
        """The decoder with detached weights: gradients reach ``z`` but not the decoder."""
        params = {name: p.detach() for name, p in self.decoder.named_parameters()}
        return torch.func.functional_call(self.decoder, params, (z,))

    def _planning_latent(self, obs: Tensor) -> Tensor:
        """Posterior mean ``[Z]`` of one observation ``[*obs]``, cached per observation tensor."""
        key = (id(obs), obs._version, obs.device, self.training,
               tuple(p._version for p in self.encoder.parameters()),
               tuple(b._version for b in self.buffers()))
        cached = getattr(self, "_latent_cache", None)
        if cached is not None and cached[0] == key and cached[1] is obs:
            return cached[2]
        z = self.encode_latent(obs.unsqueeze(0))[0]
        self._latent_cache = (key, obs, z)
        return z

    @property
    def _features(self) -> int:
        return math.prod(self.obs_spec.shape)

    def _state(self, z: Tensor) -> State:
        B = z.shape[0]
        member = torch.arange(B, device=z.device) % self.config.ensemble_size
        return State({"latent": z, "reward": torch.zeros(B, device=z.device), "member": member},
                     {"family": self.family})

    def _recon_error(self, recon: Tensor, x: Tensor) -> Tensor:
        """Reconstruction error of network-space ``x [N, *obs]``: squared errors summed over
        features (foreground pixels of images weighted, ``config.foreground_weight``), mean
        over rows."""
        err = (recon - x).pow(2)
        weight = self.config.foreground_weight
        if self.image and weight > 0 and float(self.background_ready[0]) > 0.5:
            moving = (x - self.background).abs().amax(1, keepdim=True) > FOREGROUND_THRESHOLD
            err = err * (1.0 + weight * moving.to(err.dtype))
        return err.flatten(1).sum(1).mean()

    def _autoencode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Network-space ``x [N, *obs]`` -> reconstruction error (sum over features, mean over
        rows), KL term (0 for a plain autoencoder) and the posterior mean ``[N, Z]``.

        A VAE reconstructs from a posterior sample; the latent dynamics work on posterior means
        (the same latent that :meth:`encode` gives to planning)."""
        mean, std = self.posterior(x)
        z = mean if std is None else mean + std * torch.randn_like(mean)
        recon = self._recon_error(self.decoder(z), x)
        if std is None:
            return recon, recon.new_zeros(()), mean
        kl = 0.5 * (std.pow(2) + mean.pow(2) - 1) - torch.log(std)  # [N, Z] to N(0, I)
        kl = kl.mean(0).clamp_min(self.config.free_bits).sum()  # free bits per dimension
        return recon, self.config.kl_scale * kl, mean

    def _dynamics(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor | None]:
        """Latents ``[E, N, Z]`` and actions ``[E, N, A]`` -> standardised latent-change mean
        and log-variance (``None`` for deterministic dynamics), each ``[E, N, Z]``."""
        out = self.dynamics(torch.cat([self.latent_norm.normalize(z), action], -1)).float()
        if not self.config.stochastic:
            return out, None
        mean, logvar = out.chunk(2, -1)
        return mean, soft_bound_logvar(logvar, self.min_logvar, self.max_logvar)

    def _reward_normalized(self, z: Tensor, action: Tensor, next_z: Tensor) -> Tensor:
        """Standardised reward ``[...]`` of ``(z [..., Z], action [..., A], next_z [..., Z])``."""
        return self._head(self.latent_norm.normalize(z), action,
                          self.latent_norm.normalize(next_z))

    def _head_weights(self, dtype: torch.dtype) -> list | tuple:
        """Detached weights of the reward head (and potential or event head) for
        :meth:`_head`."""
        if self.config.reward_head == "potential":
            return (self.reward_head.fast_weights(dtype), self.potential.fast_weights(dtype))
        if self.config.reward_events is not None:
            return (self.reward_head.fast_weights(dtype), self.event_head.fast_weights(dtype))
        return self.reward_head.fast_weights(dtype)

    def _event_values(self) -> Tensor:
        """Standardised mean reward ``[2]`` of the low and high event classes."""
        values = self.event_sums[1:] / self.event_counts[1:].clamp_min(1.0)
        return (values - self.reward_norm.mean[0]) / (self.reward_norm.std[0]
                                                        + self.reward_norm.eps)

    def _reward_fit_error(self, normed: Tensor, action: Tensor, normed_next: Tensor,
                          reward: Tensor, weight: Tensor | None,
                          metrics: dict[str, float]) -> Tensor:
        """The reward term: the mean (weighted by ``weight [...]``, e.g. a window mask) of the
        error of the head's standardised reward against ``reward [...]`` (raw units) on
        standardised latents ``[..., Z]``. With ``reward_events``, the regression error counts
        on dense steps only and the event classifier's cross-entropy on every step (times
        ``event_scale``); the class means move with the rewards seen."""
        target = self.reward_norm.normalize(reward.unsqueeze(-1)).squeeze(-1)
        weight = torch.ones_like(target) if weight is None else weight.expand_as(target)
        if self.config.reward_events is None:
            err = (self._reward_error(self._head(normed, action, normed_next), target)
                   * weight).sum() / weight.sum().clamp_min(1e-8)
            metrics["reward_mse"] = float(err.detach())
            return err
        x = torch.cat([normed, action, normed_next], -1)
        flat = x.reshape(1, -1, x.shape[-1])
        dense = self.reward_head(flat).float().view(target.shape)
        logits = self.event_head(flat).float().view(*target.shape, 3)
        low, high = self.config.reward_events
        cls = (reward < low).long() + 2 * (reward > high).long()  # 0 dense, 1 low, 2 high
        if torch.is_grad_enabled():  # the class means follow the training rewards
            with torch.no_grad():
                counted = F.one_hot(cls, 3).float() * weight.unsqueeze(-1)
                self.event_sums += (counted * reward.unsqueeze(-1)).reshape(-1, 3).sum(0)
                self.event_counts += counted.reshape(-1, 3).sum(0)
        dense_weight = weight * (cls == 0).float()
        dense_err = (self._reward_error(dense, target) * dense_weight).sum() \
            / dense_weight.sum().clamp_min(1.0)
        ce = (F.cross_entropy(logits.reshape(-1, 3), cls.reshape(-1), reduction="none")
              .view(target.shape) * weight).sum() / weight.sum().clamp_min(1e-8)
        metrics["reward_mse"] = float(dense_err.detach())
        metrics["reward_event_ce"] = float(ce.detach())
        return dense_err + self.config.event_scale * ce

    def _head(self, normed: Tensor, action: Tensor, normed_next: Tensor,
              weights: list | tuple | None = None) -> Tensor:
        """Standardised reward ``[...]`` from standardised latents ``[..., Z]`` and actions
        ``[..., A]``: an MLP of ``(z, a, z')``, or ``phi(z') - phi(z) + psi(a, z')`` for
        ``reward_head="potential"`` (``weights`` from :meth:`_head_weights`: the planner's
        detached copies)."""
        lead = normed.shape[:-1]

        def run(net: EnsembleMLP, w: list | None, x: Tensor, *out: int) -> Tensor:
            x = x.reshape(1, -1, x.shape[-1])
            return (net(x) if w is None else net.forward_with(w, x)).float().view(*lead, *out)

        if self.config.reward_head == "potential":
            w_head, w_potential = weights if weights is not None else (None, None)
            return (run(self.potential, w_potential, normed_next)
                    - run(self.potential, w_potential, normed)
                    + run(self.reward_head, w_head, torch.cat([action, normed_next], -1)))
        x = torch.cat([normed, action, normed_next], -1)
        if self.config.reward_events is None:
            return run(self.reward_head, weights, x)
        w_head, w_event = weights if weights is not None else (None, None)
        p = run(self.event_head, w_event, x, 3).softmax(-1)  # dense / low / high
        return (p[..., 0] * run(self.reward_head, w_head, x)
                + (p[..., 1:] * self._event_values()).sum(-1))

    def _reward_error(self, predicted: Tensor, target: Tensor) -> Tensor:
        """Elementwise error of standardised rewards: squared, or Huber with
        ``reward_huber_delta`` (scaled by ``2 / delta`` so that small errors count as squared
        errors in both)."""
        delta = self.config.reward_huber_delta
        if delta is None:
            return (predicted - target).pow(2)
        return F.huber_loss(predicted, target.expand_as(predicted), reduction="none",
                            delta=delta) * 2

    def _reward(self, z: Tensor, action: Tensor, next_z: Tensor) -> Tensor:
        normalized = self._reward_normalized(z, action, next_z)
        return normalized * (self.reward_norm.std[0] + self.reward_norm.eps) \
            + self.reward_norm.mean[0]

    def _statistics(self, z: Tensor, delta: Tensor) -> Tensor:
        """Update the running statistics from latents and latent changes ``[..., Z]`` and return
        the scale ``[Z]`` (one value) in which this batch's dynamics errors are measured.

        The buffers are set from the first batch seen when ``fit_normalizers`` has not set
        them, then move with momentum ``config.latent_momentum`` while training with
        gradients. The scale is the batch's own latent-change standard deviation in training
        mode and the running one otherwise.
        """
        update = torch.is_grad_enabled()
        with torch.no_grad():
            z, delta = z.reshape(-1, self.latent_size), delta.reshape(-1, self.latent_size)
            batch = z.shape[0] >= 2
            per_feature = self.config.latent_scale == "per_feature"
            if batch and float(self.stats_ready[0]) < 0.5:
                _fit_latent(self.latent_norm, z, per_feature)
                _fit_latent(self.delta_norm, delta, per_feature)
                self.stats_ready.fill_(1.0)
            elif batch and update and self.training:
                for norm, data in ((self.latent_norm, z), (self.delta_norm, delta)):
                    norm.mean.lerp_(data.mean(0), self.config.latent_momentum)
                    norm.std.lerp_(_latent_std(norm, data, per_feature),
                                   self.config.latent_momentum)
            if batch and self.training:
                return _latent_std(self.delta_norm, delta, per_feature) + self.delta_norm.eps
            return self.delta_norm.std + self.delta_norm.eps


def _scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    if scale == 1.0:
        return x
    detached = x.detach()
    return detached + scale * (x - detached)


def _latent_std(norm: Normalizer, data: Tensor, per_feature: bool = False) -> Tensor:
    """``[Z]`` standard deviations of ``data [N, Z]``: one per feature, or (isotropic) the root
    mean per-feature variance for every feature, so that latent features that hardly vary are
    not magnified (the latent axes of an autoencoder carry no meaning of their own, unlike
    observation features). See ``LatentConfig.latent_scale``."""
    variance = data.var(0, unbiased=False)
    if per_feature:
        return variance.sqrt().clamp_min(norm.min_std)
    return variance.mean().sqrt().clamp_min(norm.min_std).expand(data.shape[-1])


def _fit_latent(norm: Normalizer, data: Tensor, per_feature: bool = False) -> None:
    norm.mean.copy_(data.mean(0))
    norm.std.copy_(_latent_std(norm, data, per_feature))
