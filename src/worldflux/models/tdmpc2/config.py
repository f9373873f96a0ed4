"""Configuration of the TD-MPC2 world model (Hansen, Su, Wang 2024, "TD-MPC2", ICLR).

Defaults are the official release's ``config.yaml``; the model-size presets are its
``common/__init__.py`` ``MODEL_SIZE`` table (the paper's Table of model sizes). Architecture
fields left at ``None`` take the value of the preset named by ``model_size``; a value given
explicitly overrides the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError

MODEL_SIZES: dict[int, dict[str, int]] = {
    # official common/__init__.py MODEL_SIZE (num_q is 5 where not listed)
    1: {"enc_dim": 256, "mlp_dim": 384, "latent_dim": 128, "num_enc_layers": 2, "num_q": 2},
    5: {"enc_dim": 256, "mlp_dim": 512, "latent_dim": 512, "num_enc_layers": 2, "num_q": 5},
    19: {"enc_dim": 1024, "mlp_dim": 1024, "latent_dim": 768, "num_enc_layers": 3, "num_q": 5},
    48: {"enc_dim": 1792, "mlp_dim": 1792, "latent_dim": 768, "num_enc_layers": 4, "num_q": 5},
    317: {"enc_dim": 4096, "mlp_dim": 4096, "latent_dim": 1376, "num_enc_layers": 5, "num_q": 8},
}
"""Model-size presets in millions of parameters -> architecture fields."""


def discount_from_episode_length(episode_length: int, denom: float = 5.0,
                                 low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's discount heuristic (official ``tdmpc2.py`` ``_get_discount``).

    ``gamma = clip((L / denom - 1) / (L / denom), low, high)`` for an episode of ``L`` agent
    steps: 500 -> 0.99, 1000 -> 0.995 (the cap), 100 -> 0.95.
    """
    if episode_length < 1:
        raise ConfigError(f"episode_length: got {episode_length}, expected >= 1 agent steps")
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


@dataclass(frozen=True)
class ModelSizes:
    """Architecture sizes after resolving the preset (see :meth:`TDMPC2Config.sizes`)."""

    enc_dim: int
    mlp_dim: int
    latent_dim: int
    num_enc_layers: int
    num_q: int


@dataclass
class TDMPC2Config:
    """TD-MPC2 implicit world model: encoder, latent dynamics, reward, Q ensemble, policy prior."""

    model_size: int = 5
    """Preset in millions of parameters: 1, 5 (the paper's default), 19, 48 or 317."""
    enc_dim: int | None = None
    """Width of the state encoder's hidden layers (None = from the preset; 5M: 256)."""
    mlp_dim: int | None = None
    """Width of the hidden layers of dynamics, reward, Q and policy (None = preset; 5M: 512)."""
    latent_dim: int | None = None
    """Size of the latent state z (None = preset; 5M: 512). Pixel encoders need
    ``num_channels * 16`` (512 for 32 channels, as in the official release)."""
    num_enc_layers: int | None = None
    """Layers of the state encoder, its output layer included (None = preset; 5M: 2)."""
    num_q: int | None = None
    """Q-functions in the ensemble (None = preset; 5 except 1M: 2 and 317M: 8)."""
    simnorm_dim: int = 8
    """Simplex group size V of SimNorm on the encoder and dynamics outputs (paper: 8)."""
    dropout: float = 0.01
    """Dropout before the LayerNorm of each Q-function's first layer (official: 0.01)."""
    num_channels: int | None = None
    """Channels of every convolution of the pixel encoder. None = ``latent_dim // 16``, so that
    the flattened 4x4 conv output is the latent: 32 at the 5M preset (the official value),
    8 at 1M (latent 128)."""
    shift_pad: int = 3
    """Random-shift augmentation of pixel observations in training batches (and, with the
    agent's ``shift_when_acting``, of the frames it acts on): replicate-pad by this many pixels
    and crop back at a random offset (official ``layers.ShiftAug(pad=3)``)."""
    num_bins: int = 101
    """Bins of the discrete regression of rewards and values (official: 101)."""
    vmin: float = -10.0
    """Lowest bin centre, in symlog space (official: -10)."""
    vmax: float = 10.0
    """Highest bin centre, in symlog space (official: +10)."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log-std, reached through tanh scaling (official: -10)."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log-std (official: 2)."""
    consistency_coef: float = 20.0
    """Weight of the latent consistency loss (paper Eq. 3, official: 20)."""
    reward_coef: float = 0.1
    """Weight of the reward cross-entropy (official: 0.1)."""
    value_coef: float = 0.1
    """Weight of the Q cross-entropy (official: 0.1)."""
    termination_coef: float = 1.0
    """Weight of the termination BCE, episodic tasks only (official: 1)."""
    rho: float = 0.5
    """Temporal weight: the loss at horizon step t is scaled by rho^t (official: 0.5)."""
    entropy_coef: float = 1e-4
    """Weight of the policy's (action-dimension scaled) entropy bonus (official: 1e-4)."""
    tau: float = 0.01
    """Polyak rate of the target Q-functions and of the running Q scale (official: 0.01)."""
    episodic: bool = False
    """Learn a termination head and stop bootstrapping at predicted terminations (official
    ``episodic``; off for dm_control, whose episodes only end by the time limit)."""
    episode_length: int = 0
    """Agent steps per episode; sets the discount. 0 = unknown: the TD-MPC2 agent measures its
    first training episode; a model used alone then uses the discount of 500 steps (0.99)."""
    discount_denom: float = 5.0
    """Discount heuristic: gamma = (L / denom - 1) / (L / denom), clipped (official: 5)."""
    discount_min: float = 0.95
    """Lower clip of the discount (official: 0.95)."""
    discount_max: float = 0.995
    """Upper clip of the discount (official: 0.995)."""

    def sizes(self) -> ModelSizes:
        """Architecture sizes: the preset of ``model_size`` with explicit fields on top."""
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size: got {self.model_size}, expected one of "
                              f"{sorted(MODEL_SIZES)} (millions of parameters)")
        preset = MODEL_SIZES[self.model_size]
        values = {key: preset[key] if getattr(self, key) is None else int(getattr(self, key))
                  for key in preset}
        return ModelSizes(**values)

    def pixel_channels(self) -> int:
        """Conv channels of the pixel encoder: ``num_channels``, or ``latent_dim // 16``."""
        if self.num_channels is not None:
            return int(self.num_channels)
        return self.sizes().latent_dim // 16

    def discount(self) -> float:
        """Discount for ``episode_length`` (500 agent steps when it is 0)."""
        return discount_from_episode_length(self.episode_length or 500, self.discount_denom,
                                            self.discount_min, self.discount_max)

    def validate(self, obs_spec=None, action_spec=None) -> None:
        sizes = self.sizes()
        for name in ("enc_dim", "mlp_dim", "latent_dim", "num_enc_layers", "num_q"):
            if getattr(sizes, name) < 1:
                raise ConfigError(f"{name}: got {getattr(sizes, name)}, expected >= 1")
        if sizes.num_q < 2:
            raise ConfigError(f"num_q: got {sizes.num_q}, expected >= 2 (targets use the "
                              "minimum of two randomly drawn Q-functions)")
        if self.simnorm_dim < 1 or sizes.latent_dim % self.simnorm_dim:
            raise ConfigError(f"latent_dim: got {sizes.latent_dim}, expected a multiple of "
                              f"simnorm_dim ({self.simnorm_dim})")
        if self.num_bins < 2:
            raise ConfigError(f"num_bins: got {self.num_bins}, expected >= 2")
        if not self.vmin < self.vmax:
            raise ConfigError(f"vmin/vmax: got {self.vmin}/{self.vmax}, expected vmin < vmax")
        if not self.log_std_min < self.log_std_max:
            raise ConfigError(f"log_std_min/log_std_max: got {self.log_std_min}/"
                              f"{self.log_std_max}, expected min < max")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: got {self.dropout}, expected in [0, 1)")
        if not 0 < self.rho <= 1:
            raise ConfigError(f"rho: got {self.rho}, expected in (0, 1]")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"tau: got {self.tau}, expected in (0, 1]")
        if self.episode_length < 0:
            raise ConfigError(f"episode_length: got {self.episode_length}, expected >= 0 "
                              "(0 = measured by the agent)")
        if not 0 < self.discount_min <= self.discount_max < 1:
            raise ConfigError(f"discount_min/discount_max: got {self.discount_min}/"
                              f"{self.discount_max}, expected 0 < min <= max < 1")
        if self.shift_pad < 0:
            raise ConfigError(f"shift_pad: got {self.shift_pad}, expected >= 0")
        if action_spec is not None and action_spec.kind != "continuous":
            raise ConfigError(f"tdmpc2: got {action_spec.kind} actions, expected continuous "
                              "actions in [-1, 1] (the policy is a tanh-squashed Gaussian)")
        if obs_spec is not None:
            shape = tuple(obs_spec.shape)
            if len(shape) == 3:
                if shape[1:] != (64, 64):
                    raise ConfigError(f"tdmpc2: got image observations {shape}, expected "
                                      "[C, 64, 64] (the pixel encoder is built for 64x64)")
                channels = self.pixel_channels()
                if channels < 1 or sizes.latent_dim != channels * 16:
                    given = ("" if self.num_channels is None
                             else f" (num_channels {self.num_channels})")
                    raise ConfigError(
                        f"latent_dim: got {sizes.latent_dim}{given}, expected num_channels * 16 "
                        "for pixel observations, a multiple of 16 (the flattened 4x4 conv "
                        "output is the latent, as in the official release); leave num_channels "
                        "unset to take latent_dim // 16")
            elif len(shape) != 1:
                raise ConfigError(f"tdmpc2: got obs_shape {shape}, expected a vector (D,) or "
                                  "an image (C, 64, 64)")
