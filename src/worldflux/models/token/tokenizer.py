"""VQ-VAE tokenizer: 64x64 frames <-> a grid of discrete codes.

Encoder: stride-2 conv stages down to ``grid x grid`` cells, each mapped to a ``code_dim``
vector and snapped to its nearest code (straight-through gradients). Decoder: the mirror image,
from code vectors back to pixels. Codes update by EMA (or as parameters) and unused codes are
restarted at encoder outputs of the current batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.types import LossOutput
from worldflux.models.token.config import TokenConfig


class Quantizer(nn.Module):
    """Nearest-code quantisation of vectors ``[..., D]`` with EMA or learned codes."""

    def __init__(self, config: TokenConfig) -> None:
        super().__init__()
        self.config = config
        K, D = config.codebook_size, config.code_dim
        codes = torch.randn(K, D) / math.sqrt(D)
        if config.codebook_update == "ema":
            self.register_buffer("codebook", codes)
            self.register_buffer("cluster_size", torch.ones(K))
            self.register_buffer("code_sum", codes.clone())
        else:
            self.codebook = nn.Parameter(codes)
            self.register_buffer("cluster_size", torch.ones(K))
        # EMA of assignments per batch; starts at 0 so that codes never used restart at the
        # first check.
        self.register_buffer("usage", torch.zeros(K))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def indices(self, z: Tensor) -> Tensor:
        """Nearest code ``[...]`` (int64) of each vector ``z [..., D]``."""
        flat = z.reshape(-1, z.shape[-1])
        codes = self.codebook
        distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)
        return distance.argmin(1).reshape(z.shape[:-1])

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors ``[..., D]`` of ``indices [...]``."""
        return F.embedding(indices, self.codebook)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """Quantise ``z [N, D]``: returns straight-through codes ``[N, D]``, indices ``[N]``,
        the VQ loss (commitment, + codebook loss for learned codes) and metrics. In training
        mode EMA statistics update and dead codes restart."""
        idx = self.indices(z)
        e = self.lookup(idx)
        loss = self.config.commitment * F.mse_loss(z, e.detach())
        if self.config.codebook_update == "learned":
            loss = loss + F.mse_loss(e, z.detach())
        if self.training and torch.is_grad_enabled():
            self._update(z.detach(), idx)
        quantised = z + (e - z).detach()
        counts = torch.bincount(idx, minlength=self.config.codebook_size).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        metrics = {"codes_used": float((counts > 0).float().mean()),
                   "perplexity": float(perplexity)}
        return quantised, idx, loss, metrics

    @torch.no_grad()
    def _update(self, z: Tensor, idx: Tensor) -> None:
        K, decay = self.config.codebook_size, self.config.ema_decay
        onehot = F.one_hot(idx, K).type_as(z)
        counts = onehot.sum(0)
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        if self.config.codebook_update == "ema":
            self.code_sum.mul_(decay).add_(onehot.t() @ z, alpha=1 - decay)
            n = self.cluster_size.sum()
            # Laplace smoothing keeps rarely used codes from dividing by ~0 (VQ-VAE appendix).
            size = (self.cluster_size + 1e-5) / (n + K * 1e-5) * n
            self.codebook.copy_(self.code_sum / size.unsqueeze(1))
        self.steps.add_(1)
        every = self.config.restart_every
        if every and int(self.steps) % every == 0:
            dead = self.usage < self.config.dead_code_threshold
            count = int(dead.sum())
            if count:
                pick = torch.randint(z.shape[0], (count,), device=z.device)
                fresh = z[pick] + 0.01 * z.std() * torch.randn_like(z[pick])
                self.codebook.data[dead] = fresh
                self.cluster_size[dead] = 1.0
                self.usage[dead] = 1.0  # a grace period before it can be restarted again
                if self.config.codebook_update == "ema":
                    self.code_sum[dead] = fresh


class Tokenizer(nn.Module):
    """Conv encoder -> :class:`Quantizer` -> conv decoder over images ``[N, C, H, H]``.

    Images are uint8 (or float on the 0..255 scale); the network sees them in ``[-0.5, 0.5]``.
    """

    def __init__(self, config: TokenConfig, obs_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        C, H, _ = obs_shape
        stages = int(math.log2(H // config.grid_size))
        widths = [config.channels * min(2 ** i, 2) for i in range(stages)]
        layers: list[nn.Module] = []
        previous = C
        for width in widths:
            layers += [nn.Conv2d(previous, width, 4, 2, 1), nn.GroupNorm(1, width), nn.SiLU()]
            previous = width
        layers += [nn.Conv2d(previous, previous, 3, 1, 1), nn.SiLU(),
                   nn.Conv2d(previous, config.code_dim, 1)]
        self.encoder = nn.Sequential(*layers)
        self.quantizer = Quantizer(config)
        layers = [nn.Conv2d(config.code_dim, previous, 3, 1, 1), nn.SiLU()]
        for width in reversed(widths[:-1]):
            layers += [nn.ConvTranspose2d(previous, width, 4, 2, 1), nn.GroupNorm(1, width),
                       nn.SiLU()]
            previous = width
        layers += [nn.ConvTranspose2d(previous, C, 4, 2, 1)]
        self.decoder = nn.Sequential(*layers)

    @staticmethod
    def to_input(obs: Tensor) -> Tensor:
        return obs.float() / 255.0 - 0.5

    def encode_vectors(self, obs: Tensor) -> Tensor:
        """Encoder outputs ``[N, G, G, D]`` of images ``[N, C, H, H]``."""
        return self.encoder(self.to_input(obs)).permute(0, 2, 3, 1)

    def tokenize(self, obs: Tensor) -> Tensor:
        """Token indices ``[N, G*G]`` (row-major) of images ``[N, C, H, H]``."""
        z = self.encode_vectors(obs)
        return self.quantizer.indices(z).flatten(1)

    def detokenize(self, tokens: Tensor) -> Tensor:
        """Images ``[N, C, H, H]`` (float, 0..255) of token indices ``[N, G*G]``."""
        G = self.config.grid_size
        e = self.quantizer.lookup(tokens).reshape(tokens.shape[0], G, G, -1)
        return self._pixels(self.decoder(e.permute(0, 3, 1, 2)))

    @staticmethod
    def _pixels(x: Tensor) -> Tensor:
        return ((x + 0.5) * 255.0).clamp(0.0, 255.0)

    def loss(self, obs: Tensor) -> LossOutput:
        """Reconstruction (MSE in ``[-0.5, 0.5]`` units) + VQ loss of images ``[N, C, H, H]``.

        Metrics: ``psnr`` (dB, on the 0..1 scale), ``codes_used`` (fraction of the codebook
        used in this batch) and ``perplexity`` of the code distribution."""
        x = self.to_input(obs)
        z = self.encoder(x).permute(0, 2, 3, 1)
        quantised, _, vq_loss, metrics = self.quantizer(z.reshape(-1, z.shape[-1]))
        recon = self.decoder(quantised.reshape(z.shape).permute(0, 3, 1, 2))
        mse = F.mse_loss(recon, x)
        loss = mse + vq_loss
        with torch.no_grad():
            clipped = F.mse_loss(recon.clamp(-0.5, 0.5), x)
        metrics.update({"recon_mse": float(mse.detach()), "vq_loss": float(vq_loss.detach()),
                        "psnr": float(10 * torch.log10(1.0 / clipped.clamp_min(1e-10)))})
        return LossOutput(loss, {"recon": mse, "vq": vq_loss}, metrics)
