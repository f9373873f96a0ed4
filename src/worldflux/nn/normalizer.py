"""Running-free feature normaliser whose statistics are buffers (saved with the model)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Standardise features ``[..., D]`` with stored mean/std; ``fit`` sets them from data."""

    def __init__(self, size: int, eps: float = 1e-6, min_std: float = 1e-3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.eps = eps
        self.min_std = min_std

    @torch.no_grad()
    def fit(self, data: Tensor) -> None:
        """Set statistics from ``data [N, D]``."""
        data = data.reshape(-1, self.mean.shape[0]).to(self.mean)
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0, unbiased=False).clamp_min(self.min_std) if data.shape[0] > 1
                       else torch.ones_like(self.std))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / (self.std + self.eps)

    def denormalize(self, x: Tensor) -> Tensor:
        return x * (self.std + self.eps) + self.mean
