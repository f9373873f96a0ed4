"""Configuration of the DreamerV3 world model (Hafner, Pasukonis, Ba, Lillicrap 2023, "Mastering
Diverse Domains through World Models", arXiv:2301.04104).

Two sources, named at every field:

* **paper v1** (arXiv:2301.04104v1, Appendix hyperparameter table, and the v1 reference release's
  ``configs.yaml``): loss scales (``dyn`` 0.5, ``rep`` 0.1), free bits 1 nat, unimix 1%,
  255 two-hot bins on ``[-20, 20]`` in symlog space, layer normalisation, SiLU.
* **reference** (``danijar/dreamerv3`` ``configs.yaml``, the current release): the size presets
  named by parameter count (``size1m`` ... ``size400m``: ``deter``, ``hidden``, ``classes``,
  ``depth``, ``units``), the block-diagonal GRU (``blocks`` 8), layer counts of the encoder,
  decoder and heads, the CNN (``depth * (2, 3, 4, 4)`` channels, kernel 5, max-pool halving down
  to 4x4).

Architecture fields left at ``None`` take the value of the preset named by ``size``; a value
given explicitly overrides it, so presets stack with every other setting
(``create_world_model("dreamerv3", ..., size="size12m", units=128)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError

SIZE_PRESETS: dict[str, dict[str, int]] = {
    # reference configs.yaml: size1m .. size400m (.*\.rssm: deter, hidden, classes; .*\.depth;
    # .*\.units). Names count the parameters of the reference's whole agent.
    "size1m": {"deter": 512, "hidden": 64, "classes": 4, "depth": 4, "units": 64},
    "size12m": {"deter": 2048, "hidden": 256, "classes": 16, "depth": 16, "units": 256},
    "size25m": {"deter": 3072, "hidden": 384, "classes": 24, "depth": 24, "units": 384},
    "size50m": {"deter": 4096, "hidden": 512, "classes": 32, "depth": 32, "units": 512},
    "size100m": {"deter": 6144, "hidden": 768, "classes": 48, "depth": 48, "units": 768},
    "size200m": {"deter": 8192, "hidden": 1024, "classes": 64, "depth": 64, "units": 1024},
    "size400m": {"deter": 12288, "hidden": 1536, "classes": 96, "depth": 96, "units": 1536},
}
"""Size presets -> architecture fields (reference ``configs.yaml``)."""


@dataclass(frozen=True)
class Sizes:
    """Architecture sizes after resolving the preset (see :meth:`DreamerV3Config.sizes`)."""

    deter: int
    hidden: int
    classes: int
    depth: int
    units: int


@dataclass
class DreamerV3Config:
    """DreamerV3 world model: RSSM, encoder, decoder, reward and continue heads."""

    size: str = "size12m"
    """Size preset: ``size1m``, ``size12m``, ``size25m``, ``size50m``, ``size100m``, ``size200m``
    or ``size400m`` (reference ``configs.yaml``; the reference default is ``size200m``, its
    ``dmc_proprio`` setting ``size1m``)."""
    deter: int | None = None
    """Width of the recurrent deterministic state (None = preset; size12m: 2048)."""
    hidden: int | None = None
    """Width of the RSSM's hidden layers (None = preset; size12m: 256)."""
    classes: int | None = None
    """Classes of each categorical latent variable (None = preset; size12m: 16; paper v1: 32)."""
    depth: int | None = None
    """Base channel count of the CNN; stages use ``depth * cnn_mults`` (None = preset)."""
    units: int | None = None
    """Width of the MLPs of encoder, decoder and heads (None = preset; size12m: 256)."""
    stoch: int = 32
    """Categorical latent variables in the stochastic state (paper and reference: 32)."""
    blocks: int = 8
    """Blocks of the block-diagonal GRU (reference: 8; 1 = a dense GRU). ``deter`` must be a
    multiple of it. Either way the core is the current reference's (``deter``, ``stoch`` and
    action embedded separately, ``dyn_layers`` normalised hidden layers, gates without a norm),
    not the paper v1 reference's ``_gru`` (one embedding of ``stoch`` and action, then a single
    linear layer to the gates with layer normalisation on the gate pre-activations)."""
    unimix: float = 0.01
    """Uniform mixture weight of every categorical of the RSSM (paper: 1%)."""
    free_nats: float = 1.0
    """Free bits: the KL terms are clipped below at this many nats (paper: 1)."""
    dyn_scale: float = 0.5
    """Weight of the dynamics loss KL(sg(post) || prior) (paper v1: 0.5; reference: 1.0)."""
    rep_scale: float = 0.1
    """Weight of the representation loss KL(post || sg(prior)) (paper: 0.1)."""
    rec_scale: float = 1.0
    """Weight of the observation reconstruction loss (paper: 1)."""
    reward_scale: float = 1.0
    """Weight of the reward two-hot cross-entropy (paper: 1)."""
    cont_scale: float = 1.0
    """Weight of the continue binary cross-entropy (paper: 1)."""
    enc_layers: int = 3
    """Hidden layers of the vector encoder (reference ``enc.simple.layers``: 3)."""
    dec_layers: int = 3
    """Hidden layers of the vector decoder (reference ``dec.simple.layers``: 3)."""
    head_layers: int = 1
    """Hidden layers of the reward and continue heads (reference ``rewhead/conhead.layers``: 1)."""
    img_layers: int = 2
    """Hidden layers of the prior (reference ``rssm.imglayers``: 2)."""
    obs_layers: int = 1
    """Hidden layers of the posterior (reference ``rssm.obslayers``: 1)."""
    dyn_layers: int = 1
    """Block-linear hidden layers inside the recurrent core (reference ``rssm.dynlayers``: 1)."""
    cnn_mults: tuple[int, ...] = (2, 3, 4, 4)
    """Channel multipliers of the CNN stages, 64 -> 32 -> 16 -> 8 -> 4 (reference)."""
    cnn_kernel: int = 5
    """Kernel size of the CNN (reference: 5)."""
    cnn_strided: bool = False
    """Halve the resolution with stride-2 convolutions instead of stride 1 plus 2x2 max-pooling
    (reference ``strided: False``; True is about 4x cheaper on CPUs)."""
    num_bins: int = 255
    """Two-hot bins of the reward (paper: 255)."""
    bin_range: float = 20.0
    """Bins are uniform on ``[-bin_range, bin_range]`` in symlog space, i.e. symexp-spaced in
    reward units (paper: 20)."""
    action_clip: float = 1.0
    """Continuous actions fed to the RSSM are scaled to ``|a| <= action_clip`` (paper v1 reference
    ``rssm.action_clip``: 1)."""

    def sizes(self) -> Sizes:
        """Architecture sizes: the preset of ``size`` with explicit fields on top."""
        if self.size not in SIZE_PRESETS:
            raise ConfigError(f"size: got {self.size!r}, expected one of {list(SIZE_PRESETS)}")
        preset = SIZE_PRESETS[self.size]
        values = {key: preset[key] if getattr(self, key) is None else int(getattr(self, key))
                  for key in preset}
        return Sizes(**values)

    def validate(self, obs_spec=None, action_spec=None) -> None:
        sizes = self.sizes()
        for name in ("deter", "hidden", "classes", "depth", "units"):
            if getattr(sizes, name) < 1:
                raise ConfigError(f"{name}: got {getattr(sizes, name)}, expected >= 1")
        if sizes.classes < 2:
            raise ConfigError(f"classes: got {sizes.classes}, expected >= 2")
        if self.stoch < 1 or self.blocks < 1:
            raise ConfigError(f"stoch/blocks: got {self.stoch}/{self.blocks}, expected >= 1")
        if sizes.deter % self.blocks:
            raise ConfigError(f"deter: got {sizes.deter}, expected a multiple of blocks "
                              f"({self.blocks})")
        if not 0 <= self.unimix < 1:
            raise ConfigError(f"unimix: got {self.unimix}, expected in [0, 1)")
        if self.free_nats < 0:
            raise ConfigError(f"free_nats: got {self.free_nats}, expected >= 0")
        for name in ("dyn_scale", "rep_scale", "rec_scale", "reward_scale", "cont_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 0")
        for name in ("enc_layers", "dec_layers", "head_layers", "img_layers", "obs_layers",
                     "dyn_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 0")
        if self.num_bins < 2 or self.bin_range <= 0:
            raise ConfigError(f"num_bins/bin_range: got {self.num_bins}/{self.bin_range}, "
                              "expected num_bins >= 2 and bin_range > 0")
        if self.action_clip <= 0:
            raise ConfigError(f"action_clip: got {self.action_clip}, expected > 0")
        if obs_spec is not None:
            shape = tuple(obs_spec.shape)
            if len(shape) == 3:
                if shape[1] != shape[2] or shape[1] != 4 * 2 ** len(self.cnn_mults):
                    raise ConfigError(
                        f"obs_shape: got image observations {shape}, expected [C, S, S] with "
                        f"S = 4 * 2 ** len(cnn_mults) = {4 * 2 ** len(self.cnn_mults)} (the CNN "
                        "halves the resolution down to 4x4; 64x64 with the default 4 stages)")
            elif len(shape) != 1:
                raise ConfigError(f"obs_shape: got {shape}, expected a vector (D,) or an image "
                                  "(C, 64, 64)")
