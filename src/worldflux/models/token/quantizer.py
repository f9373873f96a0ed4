"""Vector quantiser of the ``token`` tokenizer: nearest-code lookup, EMA or learned codes,
codebook initialisation from data (k-means) and error-weighted restarts of dead codes.

Why data initialisation and error-weighted restarts: with codes drawn at random, the rare
vectors of a game frame (a 2x2-pixel ball in one of 64 cells, a few frames in a thousand
cells) were always nearer to a background code than to any code of their own, so they were
quantised to background and the ball vanished from the tokens. k-means++ seeding picks
far-away vectors with probability proportional to their squared distance (Arthur and
Vassilvitskii 2007), and a restarted code goes to a vector whose cell is reconstructed worst,
so rare objects get codes of their own (data-driven codebook re-initialisation: Łańcucki et
al. 2020, "Robust training of vector quantized bottleneck models").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.models.token.config import TokenConfig


def squared_distances(z: Tensor, codes: Tensor) -> Tensor:
    """``||z_i - c_j||^2`` as ``[N, K]`` for ``z [N, D]`` and ``codes [K, D]``."""
    return (z.pow(2).sum(1, keepdim=True) - 2 * z @ codes.t() + codes.pow(2).sum(1)).clamp_min(0)


def kmeans(z: Tensor, k: int, iterations: int = 10, generator: torch.Generator | None = None
           ) -> tuple[Tensor, Tensor]:
    """k-means++ seeding then Lloyd iterations on ``z [N, D]``: centres ``[k, D]`` and the
    number of vectors assigned to each ``[k]``. With fewer distinct vectors than ``k``, the
    spare centres are copies of data vectors (the dead-code restarts move them later)."""
    N = z.shape[0]
    centres = torch.empty(k, z.shape[1], dtype=z.dtype, device=z.device)
    first = int(torch.randint(N, (1,), generator=generator, device="cpu"))
    centres[0] = z[first]
    nearest = (z - centres[0]).pow(2).sum(1)
    for j in range(1, k):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights.cpu(), 1, generator=generator))
        centres[j] = z[pick]
        nearest = torch.minimum(nearest, (z - centres[j]).pow(2).sum(1))
    counts = torch.zeros(k, dtype=z.dtype, device=z.device)
    for _ in range(iterations):
        assign = squared_distances(z, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(z.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, z)
        used = counts > 0
        centres[used] = sums[used] / counts[used, None]
    return centres, counts


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
        # Training updates so far; 0 also means "not initialised from data yet".
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def prepare(self, z: Tensor) -> Tensor:
        """The vectors that are quantised: ``z`` itself, or ``z / ||z||`` with
        ``normalize_codes`` (then the codes are unit vectors too)."""
        return F.normalize(z, dim=-1) if self.config.normalize_codes else z

    def indices(self, z: Tensor) -> Tensor:
        """Nearest code ``[...]`` (int64) of each vector ``z [..., D]``."""
        flat = self.prepare(z.reshape(-1, z.shape[-1]))
        return squared_distances(flat, self.codebook).argmin(1).reshape(z.shape[:-1])

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors ``[..., D]`` of ``indices [...]``."""
        return F.embedding(indices, self.codebook)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """Quantise ``z [N, D]``: returns straight-through codes ``[N, D]``, indices ``[N]``,
        the VQ loss (commitment, + codebook loss for learned codes) and metrics. In training
        mode the codebook is first initialised from ``z`` (``codebook_init="kmeans"``) and the
        EMA statistics update; dead codes restart in :meth:`restart_dead`."""
        training = self.training and torch.is_grad_enabled()
        z = self.prepare(z)
        if training and int(self.steps) == 0 and self.config.codebook_init == "kmeans":
            self._initialise(z.detach())
        idx = self.indices(z)
        e = self.lookup(idx)
        loss = self.config.commitment * F.mse_loss(z, e.detach())
        if self.config.codebook_update == "learned":
            loss = loss + F.mse_loss(e, z.detach())
        if training:
            self._update(z.detach(), idx)
        quantised = z + (e - z).detach()
        counts = torch.bincount(idx, minlength=self.config.codebook_size).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        metrics = {"codes_used": float((counts > 0).float().mean()),
                   "perplexity": float(perplexity)}
        return quantised, idx, loss, metrics

    def _grace(self) -> float:
        """Usage given to a fresh code: twice the dead threshold, i.e. about 70 training steps
        unused (EMA decay 0.99) before it is restarted again."""
        return 2.0 * self.config.dead_code_threshold

    @torch.no_grad()
    def _initialise(self, z: Tensor) -> None:
        codes, counts = kmeans(z, self.config.codebook_size)
        self.codebook.data.copy_(self.prepare(codes))
        self.cluster_size.copy_(counts.clamp_min(1.0))
        # Centres of k-means on the untrained encoder's outputs lose their vectors as the encoder
        # learns; starting every usage at a restart's grace lets the restarts reach
        # them within ~70 steps instead of after their (up to thousands of) k-means counts
        # have decayed.
        self.usage.fill_(self._grace())
        if self.config.codebook_update == "ema":
            self.code_sum.copy_(codes * self.cluster_size[:, None])

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
            self.codebook.copy_(self.prepare(self.code_sum / size.unsqueeze(1)))
        self.steps.add_(1)

    @torch.no_grad()
    def restart_dead(self, z: Tensor, error: Tensor | None = None) -> int:
        """Every ``restart_every`` training steps, move the codes whose EMA usage is below
        ``dead_code_threshold`` to vectors of ``z [N, D]`` (this batch's encoder outputs):
        drawn in proportion to ``error [N]`` (e.g. each vector's reconstruction error;
        ``restart_sampling="error"``) or uniformly. Returns the number of codes restarted."""
        every = self.config.restart_every
        if not every or int(self.steps) % every or int(self.steps) == 0:
            return 0
        dead = self.usage < self.config.dead_code_threshold
        count = int(dead.sum())
        if not count:
            return 0
        if error is not None and self.config.restart_sampling == "error":
            weights = error.detach().float().reshape(-1).clamp_min(0) + 1e-12
        else:
            weights = torch.ones(z.shape[0], device=z.device)
        pick = torch.multinomial(weights, count, replacement=count > z.shape[0])
        z = self.prepare(z)
        fresh = self.prepare(z[pick] + 0.01 * z.std() * torch.randn_like(z[pick]))
        self.codebook.data[dead] = fresh
        self.cluster_size[dead] = 1.0
        self.usage[dead] = self._grace()  # a grace period before it can be restarted again
        if self.config.codebook_update == "ema":
            self.code_sum[dead] = fresh
        return count
