"""Configuration of the latent (autoencoder) world models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worldflux.core.errors import ConfigError


@dataclass
class LatentConfig:
    """Encoder -> latent dynamics (+ reward head) -> decoder, planned in the latent space."""

    encoder: Literal["mlp", "conv", "keypoints"] = "mlp"
    """``mlp`` for flat state vectors ``(D,)``; ``conv`` for images ``(C, H, W)`` with ``H`` and
    ``W`` multiples of 16 (uint8, e.g. ``(3, 64, 64)``); ``keypoints`` for such images too, the
    latent being ``latent_size / 2`` image keypoints (spatial soft-argmax ``x, y`` pairs, see
    :class:`~worldflux.models.latent.networks.KeypointEncoder`)."""
    latent_size: int = 16
    """Width ``Z`` of the latent vector (even for ``keypoints``: two coordinates each)."""
    variational: bool = False
    """VAE posterior ``N(mu, sigma)`` with a KL term to ``N(0, I)`` (free bits); False: a plain
    autoencoder (the latent is the encoder output)."""
    kl_scale: float = 1.0
    """Weight of the KL term (beta) when ``variational``."""
    free_bits: float = 2.0
    """Nats per latent dimension below which the batch-mean KL is not penalised (with 0.1 and
    ``kl_scale`` 1 the state VAE reconstructed Pendulum-v1 too coarsely for its dynamics to
    beat predicting no change; 2.0 lets the posterior std shrink to about 0.14)."""
    encoder_skip: bool = False
    """``mlp`` encoder and decoder: add a linear map of the input to each MLP's output (a
    residual autoencoder). The latent is then a linear embedding of the state plus learned
    corrections, so that latent changes keep the state's local geometry, which the latent
    dynamics must otherwise learn through the MLP's warping (on Nav3D, plain MLP latents held
    16 steps under 10% open-loop error against 20 for dynamics on the raw state)."""
    hidden_size: int = 256
    """Width of the MLP encoder/decoder hidden layers."""
    num_layers: int = 2
    """Hidden layers of the MLP encoder and of the MLP decoder (each: Linear, LayerNorm, SiLU)."""
    conv_depth: int = 32
    """Channels of the first conv stage; the 4 stride-2 stages have ``d, 2d, 4d, 8d``."""
    ensemble_size: int = 1
    """Members of the latent dynamics ensemble (each trained on its own bootstrap sample)."""
    stochastic: bool = False
    """Gaussian latent dynamics (mean and log-variance, NLL) instead of deterministic (MSE)."""
    dynamics_hidden_size: int = 200
    """Width of the latent dynamics MLPs."""
    dynamics_num_layers: int = 3
    """Hidden layers of the latent dynamics MLPs."""
    reward_hidden_size: int = 128
    """Width of the reward head on ``(latent, action, next latent)``."""
    reward_num_layers: int = 2
    """Hidden layers of the reward head."""
    reward_head: Literal["mlp", "potential"] = "mlp"
    """``mlp``: the reward is an MLP of ``(z, a, z')``. ``potential``: ``phi(z') - phi(z) +
    psi(a, z')`` with MLPs ``phi`` and ``psi``, the form of potential-based shaping (Ng, Harada
    and Russell 1999) that progress rewards have: the progress term of a return then telescopes
    to a potential of the last latent, which needs the latent to locate the body only coarsely,
    where a per-step MLP must resolve each step's small change of distance."""
    activation: str = "silu"
    """Hidden activation of the dynamics and reward MLPs."""
    learn_reward: bool = True
    """Train the reward head (else planning needs a reward function on decoded observations)."""
    training: Literal["joint", "two_stage", "encoded"] = "two_stage"
    """``two_stage``: the autoencoder learns from its own loss only (reconstruction, + KL); the
    dynamics and reward head learn on detached latents (call ``autoencoder_loss`` first for a
    separate first stage), the dynamics also from their decoded prediction through a frozen
    decoder. ``joint``: reconstruction + latent dynamics (encoded next latent as
    stop-gradient target, plus reconstruction of the predicted next observation) + reward, the
    encoder also learning from the dynamics terms (see ``representation_scale``). On random
    Pendulum-v1 data two_stage gave the better open-loop predictions. ``encoded``: the
    autoencoder learns alone (the MPC agents' ``autoencoder_epochs`` stage) and is then frozen;
    the dynamics and reward head learn on latents encoded once per training round
    (:meth:`~worldflux.models.latent.model.LatentModel.latent_transition_loss`), thousands of
    cheap steps where an image step costs an encoder and decoder pass (on Nav3D pixels the
    two-stage dynamics learned nothing in the steps a CPU affords)."""
    representation_scale: float = 0.01
    """Joint training: scale of the gradient that the dynamics, predicted-reconstruction and
    reward terms send into the encoder through the current latent (1 passes it unscaled; 0.1
    made state-AE training oscillate on Pendulum-v1 since latent changes are small next to
    latents)."""
    recon_scale: float = 1.0
    """Weight of the reconstruction term (sum over observation features, mean over rows)."""
    rollout_steps: int = 1
    """``training="encoded"``: windows of this many consecutive transitions (transitions chain
    where one's next observation is the next one's observation, as in recorded episodes);
    the dynamics run open loop over each window, fed their own predictions, and every step's
    error counts (one-step training when 1). A potential reward head also fits the windows'
    cumulative rewards. Deterministic dynamics only."""
    frames: int = 1
    """``keypoints``: stacked frames in the image channels (``C = frames * channels``, e.g. 2
    for ``frame_stack=2`` RGB); each frame gets its own ``latent_size / (2 * frames)``
    keypoints from shared weights."""
    foreground_weight: float = 0.0
    """Images: extra reconstruction weight of the pixels that differ from the static
    background (the per-pixel median of the frames given to ``fit_normalizers``) by more than
    ``FOREGROUND_THRESHOLD`` in any channel; such a pixel counts ``1 + foreground_weight``
    times. Small moving objects (a body, a goal marker) are a few dozen of 4096 pixels, and a
    plain pixel loss trains an autoencoder to draw the scene without them; 0 disables it."""
    dynamics_scale: float = 1.0
    """Weight of the latent dynamics term (sum over latent features, summed over members)."""
    predicted_recon_scale: float = 1.0
    """Weight of the reconstruction of the predicted next observation (in two-stage training
    through a frozen decoder: it trains the dynamics only); 0 leaves it out."""
    reward_scale: float = 1.0
    """Weight of the reward term (squared error of the normalised reward)."""
    reward_huber_delta: float | None = None
    """None: the reward terms are squared errors of the standardised reward. A number: Huber
    errors with this threshold (in reward standard deviations), so that rare large rewards
    (a goal bonus, collision penalties) pull on the head linearly instead of quadratically.
    Measured on Nav3D pixel latents (seed 0, 100 scripted flights): with squared errors the
    bonus steps dominate the fit and the head's prediction of the dense progress reward on
    held-out flights correlates 0.12-0.22 with the truth (and predicts spurious bonuses the
    planner then seeks); Huber 0.3 gives 0.85 and no spurious bonus (it under-predicts the
    real one instead). Held-out early stopping scores the reward with the same error."""
    reward_events: tuple[float, float] | None = None
    """None: one head regresses every reward. ``(low, high)`` in reward units: a step whose
    reward is below ``low`` or above ``high`` is a rare *event* (a collision penalty, a goal
    bonus), told apart from the dense rewards by a classifier head (cross-entropy over the
    classes dense / low / high, on ``(z, a, z')``); the regression head fits the dense steps
    only, and the predicted reward is ``p_dense * head + p_low * v_low + p_high * v_high`` with
    ``v`` the mean reward of each event class seen in training. Measured on Nav3D pixel
    latents (seed 0): the goal bonus is predictable from ``(z, a, z')`` (AUC 0.976), which a
    Huber head trades away to keep the dense progress. ``mlp`` reward head only."""
    event_scale: float = 1.0
    """Weight of the event classifier's cross-entropy (``reward_events``)."""
    latent_scale: Literal["isotropic", "per_feature"] = "isotropic"
    """How the dynamics' latent inputs and latent changes are standardised: one standard
    deviation for every feature (``isotropic``: autoencoder axes carry no meaning of their own,
    so features that hardly vary are not magnified) or one per feature (``per_feature``, as the
    raw-observation models standardise each entry; with ``encoder_skip`` the latent is close to
    a linear embedding of the state, whose axes do)."""
    latent_momentum: float = 0.02
    """Momentum of the running latent and latent-change statistics that normalise the dynamics'
    inputs and outputs (set exactly by ``fit_normalizers``). Larger values follow a fast-moving
    encoder sooner but carry more batch noise: 0.1 instead of 0.02 raised the 20-step open-loop
    error of the state AE on Pendulum-v1 from 0.038 to 0.096."""
    min_logvar_init: float = -10.0
    """Initial lower soft bound on the dynamics log-variance (stochastic dynamics)."""
    max_logvar_init: float = 0.5
    """Initial upper soft bound on the dynamics log-variance (stochastic dynamics)."""
    logvar_bound_coef: float = 0.01
    """Weight of ``sum(max_logvar) - sum(min_logvar)`` in the loss (stochastic dynamics)."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    propagation: Literal["ts_inf", "ts1", "expectation"] = "ts_inf"
    """Particle propagation over dynamics members (as PETS)."""

    def validate(self, obs_spec=None, action_spec=None) -> None:
        positive = {"latent_size": self.latent_size, "hidden_size": self.hidden_size,
                    "num_layers": self.num_layers, "conv_depth": self.conv_depth,
                    "ensemble_size": self.ensemble_size,
                    "dynamics_hidden_size": self.dynamics_hidden_size,
                    "dynamics_num_layers": self.dynamics_num_layers,
                    "reward_hidden_size": self.reward_hidden_size,
                    "reward_num_layers": self.reward_num_layers}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name}: got {value}, expected >= 1")
        if self.encoder not in ("mlp", "conv", "keypoints"):
            raise ConfigError(f"encoder: got {self.encoder!r}, expected 'mlp', 'conv' or "
                              "'keypoints'")
        if self.rollout_steps < 1:
            raise ConfigError(f"rollout_steps: got {self.rollout_steps}, expected >= 1")
        if self.latent_scale not in ("isotropic", "per_feature"):
            raise ConfigError(f"latent_scale: got {self.latent_scale!r}, expected 'isotropic' "
                              "or 'per_feature'")
        if self.rollout_steps > 1 and (self.training != "encoded" or self.stochastic):
            raise ConfigError(f"rollout_steps: got {self.rollout_steps} with training "
                              f"{self.training!r} and stochastic {self.stochastic}, expected 1 "
                              "unless training='encoded' with deterministic dynamics")
        if self.frames < 1:
            raise ConfigError(f"frames: got {self.frames}, expected >= 1")
        if self.encoder == "keypoints" and self.latent_size % (2 * self.frames):
            raise ConfigError(f"latent_size: got {self.latent_size}, expected a multiple of "
                              f"2 * frames = {2 * self.frames} with encoder 'keypoints' (an x, "
                              "y pair per keypoint and frame)")
        if self.encoder == "keypoints" and self.variational:
            raise ConfigError("variational: got True with encoder 'keypoints', expected False "
                              "(keypoints are coordinates, not a posterior)")
        if self.reward_head not in ("mlp", "potential"):
            raise ConfigError(f"reward_head: got {self.reward_head!r}, expected 'mlp' or "
                              "'potential'")
        if self.reward_huber_delta is not None and not self.reward_huber_delta > 0:
            raise ConfigError(f"reward_huber_delta: got {self.reward_huber_delta}, expected > 0 "
                              "or None")
        if self.encoder_skip and self.encoder != "mlp":
            raise ConfigError(f"encoder_skip: got True with encoder {self.encoder!r}, expected "
                              "encoder 'mlp' (state vectors)")
        if self.reward_events is not None:
            events = tuple(self.reward_events)
            if len(events) != 2 or not events[0] < events[1]:
                raise ConfigError(f"reward_events: got {self.reward_events!r}, expected None or "
                                  "(low, high) with low < high, in reward units")
            if self.reward_head != "mlp":
                raise ConfigError(f"reward_events: got {self.reward_events!r} with reward_head "
                                  f"{self.reward_head!r}, expected reward_head 'mlp'")
        if self.event_scale < 0:
            raise ConfigError(f"event_scale: got {self.event_scale}, expected >= 0")
        if self.foreground_weight < 0:
            raise ConfigError(f"foreground_weight: got {self.foreground_weight}, expected >= 0")
        if self.training not in ("joint", "two_stage", "encoded"):
            raise ConfigError(f"training: got {self.training!r}, expected 'joint', 'two_stage' "
                              "or 'encoded'")
        if not 0 < self.latent_momentum <= 1:
            raise ConfigError(f"latent_momentum: got {self.latent_momentum}, expected in (0, 1]")
        if self.free_bits < 0 or self.kl_scale < 0:
            raise ConfigError(f"free_bits/kl_scale: got {self.free_bits}/{self.kl_scale}, "
                              "expected >= 0")
        if not self.min_logvar_init < self.max_logvar_init:
            raise ConfigError(
                f"min_logvar_init/max_logvar_init: got {self.min_logvar_init}/"
                f"{self.max_logvar_init}, expected min < max"
            )
        if obs_spec is None:
            return
        shape = tuple(obs_spec.shape)
        if self.encoder == "mlp" and len(shape) != 1:
            raise ConfigError(f"encoder 'mlp': got obs_shape {shape}, expected a flat vector (D,); "
                              "use encoder='conv' (family latent-conv) for images")
        if self.encoder == "keypoints" and len(shape) == 3 and shape[0] % self.frames:
            raise ConfigError(f"frames: got {self.frames} for obs_shape {shape}, expected a "
                              "divisor of the channel count")
        if self.encoder != "mlp" and (len(shape) != 3 or shape[1] % 16 or shape[2] % 16):
            raise ConfigError(f"encoder {self.encoder!r}: got obs_shape {shape}, expected images "
                              "(C, H, W) with H and W multiples of 16 such as (3, 64, 64)")


@dataclass
class LatentMLPConfig(LatentConfig):
    """State autoencoder + deterministic latent dynamics (family ``latent-mlp``)."""

    encoder: Literal["mlp", "conv", "keypoints"] = "mlp"
    """MLP encoder/decoder for state vectors."""
    variational: bool = False
    """A plain autoencoder."""


@dataclass
class LatentVAEConfig(LatentConfig):
    """State VAE + Gaussian latent dynamics (family ``latent-vae``)."""

    encoder: Literal["mlp", "conv", "keypoints"] = "mlp"
    """MLP encoder/decoder for state vectors."""
    variational: bool = True
    """VAE posterior with KL to ``N(0, I)`` and free bits."""
    stochastic: bool = True
    """Gaussian latent dynamics trained by negative log-likelihood."""


@dataclass
class LatentConvConfig(LatentConfig):
    """Pixel autoencoder (DreamerV3-like 4-stage conv) + deterministic latent dynamics
    (family ``latent-conv``)."""

    encoder: Literal["mlp", "conv", "keypoints"] = "conv"
    """Convolutional encoder/decoder for uint8 images such as ``(3, 64, 64)``; ``keypoints``
    for the keypoint pair (the better choice for small moving objects, see ``nav3d_pixel_mpc``)."""
    latent_size: int = 32
    """Latent width."""
    dynamics_hidden_size: int = 200
    """Width of the latent dynamics MLPs."""
    dynamics_num_layers: int = 2
    """Two hidden layers keep a CEM decision of 5 x 300 sequences x 15 steps fast on a CPU."""
