"""Configuration of the ``token`` family (VQ-VAE tokenizer + transformer dynamics, IRIS-like)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from worldflux.core.errors import ConfigError


@dataclass
class TokenConfig:
    """Frames -> a grid of discrete tokens -> a transformer predicts the next frame's tokens.

    Sizes default to what trains in minutes on one CPU thread for 64x64 games; IRIS (Micheli et
    al. 2023) uses a 16x16 grid, a 512-code book and a 10-layer, 256-wide transformer on Atari.
    """

    # -- tokenizer ----------------------------------------------------------------------------
    grid_size: int = 8
    """Tokens per image side (``K = grid_size**2`` tokens per frame); the image side divided by
    it must be a power of two (one stride-2 conv stage per halving)."""
    codebook_size: int = 128
    """Codes in the VQ codebook (the vocabulary of the dynamics)."""
    code_dim: int = 32
    """Width of a code vector."""
    channels: int = 32
    """Channels of the first conv stage of the tokenizer (later stages: twice as many)."""
    encoder: Literal["conv", "cell", "patch"] = "conv"
    """``conv``: overlapping 4x4 stride-2 convs with whole-image GroupNorm, so a code also sees
    the neighbouring cells and the frame's statistics; ``cell``: the same layers run on each
    cell alone; ``patch``: each cell's pixels through a linear map and a per-position MLP (no
    norm over the image; ``encoder_context`` = 1 adds the 8 neighbouring cells). With ``cell``
    or ``patch`` (context 0) a cell whose pixels do not change keeps its token. Measured on
    Breakout64 / Collect64 (benchmarks/RESULTS.md, "Game world models"): with ``conv``, 20% /
    15% of the cells change token between consecutive frames while their pixels do not (noise
    for the dynamics); ``patch`` makes that 0%, but each cell's code must then carry the
    position of a small object inside it on its own, which needs more codes (the benchmark
    uses 512)."""
    patch_width: int = 256
    """Hidden width of the ``patch`` encoder."""
    patch_norm: bool = False
    """Per-position LayerNorm after each hidden layer of the ``patch`` encoder. Off by default:
    right after the linear map of a cell's pixels it keeps only the direction of the vector, so
    cells of one colour at different brightness look alike to the rest of the encoder."""
    encoder_context: int = 0
    """Neighbouring cells each ``patch`` encoder vector sees: 0 (its own cell only) or 1 (a 3x3
    conv on the grid: also the 8 cells around it)."""
    decoder: Literal["conv", "patch"] = "conv"
    """``conv``: a 3x3 conv on the grid and transposed convs (a cell's pixels also depend on
    the tokens of the two cells around it); ``patch``: a per-position MLP from each code
    vector to its own cell's pixels (the mirror of the ``patch`` encoder)."""
    decoder_norm: Literal["group", "position", "none"] = "group"
    """Norm after the decoder's hidden transposed convs: ``group`` = GroupNorm over the whole
    image (one group), so every pixel's colour also depends on the rest of the frame;
    ``position`` = LayerNorm over the channels of each position alone; ``none``."""
    reference_decoder: bool = False
    """The decoder also sees a reference frame (the last real frame; in tokenizer training a
    frame of the same episode up to ``reference_max_lag`` steps before): each cell's pixels
    through a linear map join the code vectors, and a per-pixel gate (from the decoder and
    from comparing the drawn pixels with the reference's) mixes the reference's pixels into
    the drawn ones. Codes then need to carry only what the reference does not
    show: on Collect64, 19% of the cells that move hold part of a bush whose leaves and edges
    sit at any offset (18.8k distinct 8x8 contents among 30k such cells, against 263 that
    cover 90% of the moving cells without a bush), which no codebook of hundreds can draw. (The
    reference frame of a video codec's predicted frames; conditional decoding.) Off by
    default: ``detokenize`` without a reference then draws from the codes alone."""
    reference_max_lag: int = 24
    """Largest distance (steps) between a training frame and its reference: an imagined
    frame's reference is the rollout's start, up to the rollout horizon back."""
    reference_blank: float = 0.25
    """Share of tokenizer training frames drawn without a reference, so that codes alone
    still draw a frame (``initial_state``, reconstructions without a real frame)."""
    codebook_update: Literal["ema", "learned"] = "ema"
    """``ema``: codes follow an exponential moving average of the encoder outputs assigned to
    them (VQ-VAE, van den Oord et al. 2017, appendix A.1); ``learned``: codes are parameters
    trained by the codebook loss ``||sg(z) - e||^2``."""
    ema_decay: float = 0.99
    """Decay of the EMA codebook statistics (0.99 as in the VQ-VAE paper)."""
    commitment: float = 0.25
    """Weight ``beta`` of the commitment loss ``||z - sg(e)||^2`` (0.25, VQ-VAE paper)."""
    dead_code_threshold: float = 0.1
    """A code whose EMA usage (assignments per training batch) falls below this is restarted
    at a random encoder output of the current batch (after Dhariwal et al. 2020, Jukebox)."""
    restart_every: int = 20
    """Tokenizer training steps between dead-code restarts (0 = never)."""
    restart_sampling: Literal["error", "uniform"] = "error"
    """Where dead codes restart: at encoder outputs drawn in proportion to their cell's
    reconstruction error (``error``: rare objects that the codebook misses get codes), or drawn
    uniformly from the batch (``uniform``, Jukebox's rule)."""
    normalize_codes: bool = False
    """Quantise ``z / ||z||`` against unit-length codes (nearest code = highest cosine
    similarity), as ViT-VQGAN does to keep the codebook in use (Yu et al. 2022, "Vector-quantized
    image modeling with improved VQGAN", section 3.2: l2-normalised codes)."""
    codebook_init: Literal["kmeans", "random"] = "kmeans"
    """``kmeans``: the codebook starts as k-means++ / Lloyd centres of the first training
    batch's encoder outputs (data-driven initialisation, Łańcucki et al. 2020); ``random``:
    Gaussian codes."""
    recon_loss: Literal["mse", "l1"] = "mse"
    """Pixel reconstruction loss of the tokenizer (IRIS, Micheli et al. 2023, uses L1 plus a
    perceptual loss)."""
    hard_pixel_fraction: float = 0.005
    """Adds the mean squared error of each frame's worst-reconstructed pixels (this fraction of
    them) to the reconstruction loss (0 = off). A 2x2-pixel ball is 0.1% of a 64x64 frame: the
    plain pixel loss is dominated by the background and left it out of the reconstructions;
    mining the hardest pixels keeps small moving objects in view (online hard example mining,
    Shrivastava et al. 2016, applied to pixels). 0.005 (20 pixels of a 64x64 frame, five balls'
    worth) is this project's choice, measured in benchmarks/RESULTS.md ("Game world models")."""
    # -- dynamics -----------------------------------------------------------------------------
    history: int = 4
    """Frames of context ``N`` the dynamics sees (the current one and ``N - 1`` before it)."""
    embed_dim: int = 128
    """Width of the transformer."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    spatial_init: Literal["random", "sincos"] = "random"
    """Start of the learned spatial embeddings: N(0, 1) per cell, or 2D sine-cosine (MAE, He
    et al. 2022), where neighbouring cells start similar. On Breakout64 tokens (8x8 grid, 64
    wide) sincos doubled the changed-token accuracy after 600 steps (12.3% against 6.3%); on
    the 4x4 moving-ball test (32 wide) it learned far slower than random, hence not the
    default."""
    mlp_ratio: int = 4
    """Hidden width of the blocks' MLPs over ``embed_dim``."""
    num_games: int = 1
    """Rows of the game embedding (one model learning several games: their ``game`` index)."""
    parallel_fraction: float = 0.5
    """Training rows whose target frame is fed as mask tokens (parallel mode); the others are
    teacher-forced token by token (causal mode). Both modes share every weight."""
    copy_prior: float = 4.0
    """Initial weight (a learned scalar) added to the logit of the token that the same cell holds
    in the last context frame. Most cells of a game frame do not change, and without this prior
    the benchmark's dynamics models needed hundreds of steps to learn copying before anything
    else; 0 starts without it."""
    changed_token_weight: float = 1.0
    """Weight of the token loss on the cells whose next token differs from the last context
    frame's, against 1 for the others (a weighted mean). About 90% of a game frame's cells do not
    change, so the plain mean (1.0) is mostly about copying; a weight above 1 puts the motion in
    front (as class-balanced losses do, Cui et al. 2019)."""
    copy_unchanged_cells: bool = True
    """``decode`` draws a cell with the last real frame's pixels when the cell's token is the
    one that frame had there, and with the decoder's pixels otherwise. The state keeps that
    frame (``frame``, ``frame_tokens``) from ``encode`` / ``update``; an imagined frame then
    differs from the last real one only where the dynamics predicted a different token, so
    static detail the codebook cannot reproduce (textures, unaligned edges) stays exact. It pays
    off with a token-stable tokenizer (``encoder="patch"``: a cell whose pixels do not change
    keeps its code), with which an equal token means an unchanged cell. (The same idea as the
    skipped blocks of a video codec's predicted frames.)"""
    decoding: Literal["parallel", "causal"] = "parallel"
    """How ``transition`` generates the next frame: all tokens in one pass, or token by token
    with a KV cache."""
    temperature: float = 0.0
    """Sampling temperature of generated tokens; 0 = the most likely token (deterministic)."""
    # -- losses and optimisation --------------------------------------------------------------
    reward_scale: float = 1.0
    """Weight of the reward loss (squared error in symlog space)."""
    end_scale: float = 1.0
    """Weight of the episode-end loss (binary cross-entropy of ``terminated``)."""
    tokenizer_learning_rate: float = 1e-3
    """Adam learning rate of the tokenizer."""
    dynamics_learning_rate: float = 2e-3
    """AdamW learning rate of the dynamics."""
    weight_decay: float = 0.01
    """AdamW weight decay of the dynamics' matrices."""

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_size * self.grid_size

    def validate(self, obs_spec=None, action_spec=None) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        positive = {"grid_size": self.grid_size, "codebook_size": self.codebook_size,
                    "code_dim": self.code_dim, "channels": self.channels,
                    "history": self.history, "embed_dim": self.embed_dim,
                    "num_layers": self.num_layers, "num_heads": self.num_heads,
                    "mlp_ratio": self.mlp_ratio, "num_games": self.num_games,
                    "patch_width": self.patch_width, "reference_max_lag": self.reference_max_lag}
        for name, value in positive.items():
            if int(value) < 1:
                raise ConfigError(f"{name}: got {value}, expected an integer >= 1")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim: got {self.embed_dim}, expected a multiple of "
                              f"num_heads={self.num_heads}")
        if self.codebook_update not in ("ema", "learned"):
            raise ConfigError(f"codebook_update: got {self.codebook_update!r}, expected 'ema' or "
                              "'learned'")
        if self.encoder_context not in (0, 1):
            raise ConfigError(f"encoder_context: got {self.encoder_context}, expected 0 or 1")
        choices = {"encoder": ("conv", "cell", "patch"),
                   "decoder": ("conv", "patch"),
                   "decoder_norm": ("group", "position", "none"), "restart_sampling": ("error", "uniform"),
                   "codebook_init": ("kmeans", "random"), "spatial_init": ("random", "sincos"),
                   "recon_loss": ("mse", "l1")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}, expected one of "
                                  f"{', '.join(allowed)}")
        if self.decoding not in ("parallel", "causal"):
            raise ConfigError(f"decoding: got {self.decoding!r}, expected 'parallel' or 'causal'")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: got {self.ema_decay}, expected in (0, 1)")
        if not 0.0 <= self.parallel_fraction <= 1.0:
            raise ConfigError(f"parallel_fraction: got {self.parallel_fraction}, expected in [0, 1]")
        if not 0.0 <= self.reference_blank <= 1.0:
            raise ConfigError(f"reference_blank: got {self.reference_blank}, expected in [0, 1]")
        if not 0.0 <= self.hard_pixel_fraction <= 1.0:
            raise ConfigError(f"hard_pixel_fraction: got {self.hard_pixel_fraction}, expected in "
                              "[0, 1]")
        if self.changed_token_weight <= 0:
            raise ConfigError(f"changed_token_weight: got {self.changed_token_weight}, expected > 0")
        if self.temperature < 0:
            raise ConfigError(f"temperature: got {self.temperature}, expected >= 0")
        if self.restart_every < 0:
            raise ConfigError(f"restart_every: got {self.restart_every}, expected >= 0 (0 = off)")
        if obs_spec is None:
            return
        shape = tuple(obs_spec.shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(f"obs_shape: got {shape}, expected square images (C, H, H) such as "
                              "(3, 64, 64)")
        ratio = shape[1] / self.grid_size
        if ratio < 2 or ratio != int(ratio) or not math.log2(ratio).is_integer():
            raise ConfigError(f"grid_size: got {self.grid_size} for {shape[1]}x{shape[2]} images, "
                              "expected the image side divided by a power of two (>= 2)")
