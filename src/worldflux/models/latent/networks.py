"""Encoders and decoders of the latent families: MLPs for state vectors and a DreamerV3-like
convolutional pair for images (4 stride-2 stages, channels ``d, 2d, 4d, 8d``, norm + SiLU)."""

from __future__ import annotations

import math

from torch import Tensor, nn


def _mlp(in_features: int, out_features: int, hidden_size: int, num_layers: int) -> nn.Sequential:
    """``num_layers`` blocks of Linear, LayerNorm, SiLU, then a Linear output layer."""
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(num_layers):
        layers += [nn.Linear(size, hidden_size), nn.LayerNorm(hidden_size), nn.SiLU()]
        size = hidden_size
    layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Normalised state ``[N, D]`` -> ``[N, out]`` (``out`` = ``Z``, or ``2Z`` for a VAE)."""

    def __init__(self, obs_dim: int, out_features: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.net = _mlp(obs_dim, out_features, hidden_size, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """Latent ``[N, Z]`` -> normalised state ``[N, D]``."""

    def __init__(self, latent_size: int, obs_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.net = _mlp(latent_size, obs_dim, hidden_size, num_layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _norm(channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W) of each image


class ConvEncoder(nn.Module):
    """Images ``[N, C, H, W]`` in ``[-0.5, 0.5]`` -> ``[N, out]``.

    Four stages of Conv(4x4, stride 2) + GroupNorm + SiLU with ``d, 2d, 4d, 8d`` channels
    (64x64 -> 4x4), then a linear layer on the flattened ``[8d, H/16, W/16]`` features.
    """

    def __init__(self, shape: tuple[int, int, int], out_features: int, depth: int) -> None:
        super().__init__()
        channels, height, width = shape
        layers: list[nn.Module] = []
        size = channels
        for stage in range(4):
            width_out = depth * 2**stage
            layers += [nn.Conv2d(size, width_out, 4, stride=2, padding=1, bias=False),
                       _norm(width_out), nn.SiLU()]
            size = width_out
        self.convs = nn.Sequential(*layers)
        self.flat = size * (height // 16) * (width // 16)
        self.out = nn.Linear(self.flat, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    """Latent ``[N, Z]`` -> images ``[N, C, H, W]`` in (about) ``[-0.5, 0.5]``.

    A linear layer to ``[8d, H/16, W/16]``, then four transposed-conv stages (stride 2) with
    ``4d, 2d, d, C`` channels; GroupNorm + SiLU after all but the last.
    """

    def __init__(self, latent_size: int, shape: tuple[int, int, int], depth: int) -> None:
        super().__init__()
        channels, height, width = shape
        self.start = (8 * depth, height // 16, width // 16)
        self.inp = nn.Linear(latent_size, math.prod(self.start))
        layers: list[nn.Module] = [_norm(8 * depth), nn.SiLU()]
        size = 8 * depth
        for stage in range(4):
            last = stage == 3
            width_out = channels if last else depth * 2 ** (2 - stage)
            layers.append(nn.ConvTranspose2d(size, width_out, 4, stride=2, padding=1, bias=last))
            if not last:
                layers += [_norm(width_out), nn.SiLU()]
            size = width_out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconvs(self.inp(z).view(-1, *self.start))
