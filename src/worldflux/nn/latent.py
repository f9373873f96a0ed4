"""Latent-space helpers shared by families: Gaussian, straight-through categorical, SimNorm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Gaussian:
    """Diagonal Gaussian with ``mean [..., D]`` and ``std [..., D]``."""

    mean: Tensor
    std: Tensor

    @classmethod
    def from_mean_logvar(cls, mean: Tensor, logvar: Tensor) -> Gaussian:
        return cls(mean, torch.exp(0.5 * logvar))

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample ``[..., D]``."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density summed over the last axis -> ``[...]``."""
        var = self.std.pow(2)
        return (-0.5 * ((value - self.mean).pow(2) / var + torch.log(2 * math.pi * var))).sum(-1)

    def kl(self, other: Gaussian) -> Tensor:
        """KL(self || other) summed over the last axis -> ``[...]``."""
        var_ratio = (self.std / other.std).pow(2)
        t1 = ((self.mean - other.mean) / other.std).pow(2)
        return 0.5 * (var_ratio + t1 - 1 - var_ratio.log()).sum(-1)


def gaussian_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """Gaussian negative log-likelihood without the constant, per element ``[...]``:
    ``0.5 * ((target - mean)^2 * exp(-logvar) + logvar)``."""
    return 0.5 * ((target - mean).pow(2) * torch.exp(-logvar) + logvar)


def soft_bound_logvar(logvar: Tensor, min_logvar: Tensor, max_logvar: Tensor) -> Tensor:
    """Softly keep log-variance inside learned bounds (PETS, Chua et al. 2018, appendix A.1)."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


def unimix_logits(logits: Tensor, unimix: float) -> Tensor:
    """Mix categorical probabilities with a uniform: ``(1 - u) * softmax + u / K`` (DreamerV3)."""
    if unimix <= 0:
        return logits
    probs = torch.softmax(logits, -1)
    probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return torch.log(probs)


def straight_through_categorical(logits: Tensor, unimix: float = 0.01,
                                 generator: torch.Generator | None = None) -> Tensor:
    """One-hot sample ``[..., K]`` with straight-through gradients from the (mixed) probabilities.

    ``unimix = 0.01`` is DreamerV3's 1% uniform mixing (Hafner et al. 2023, section 3).
    """
    logits = unimix_logits(logits, unimix)
    probs = torch.softmax(logits, -1)
    flat = probs.reshape(-1, probs.shape[-1])
    index = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    sample = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    # Parenthesised so the forward value is exactly one-hot ((sample + p) - p rounds).
    return sample + (probs - probs.detach())


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over groups of ``group_size`` features (TD-MPC2, V=8).

    Input and output ``[..., D]`` with ``D`` divisible by ``group_size``.
    """

    def __init__(self, group_size: int = 8) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        if shape[-1] % self.group_size:
            raise ValueError(
                f"SimNorm: got feature size {shape[-1]}, expected a multiple of {self.group_size}"
            )
        x = x.reshape(*shape[:-1], -1, self.group_size)
        return torch.softmax(x, -1).reshape(shape)
