"""Encoders and decoders of the latent families: MLPs for state vectors and a DreamerV3-like
convolutional pair for images (4 stride-2 stages, channels ``d, 2d, 4d, 8d``, norm + SiLU),
and a keypoint pair for images (spatial soft-argmax coordinates as the latent)."""

from __future__ import annotations

import math

import torch
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
    """Normalised state ``[N, D]`` -> ``[N, out]`` (``out`` = ``Z``, or ``2Z`` for a VAE).

    With ``skip``, a linear map of the input is added to the MLP's output (a residual
    autoencoder: the latent is a linear embedding of the state plus learned nonlinear
    corrections)."""

    def __init__(self, obs_dim: int, out_features: int, hidden_size: int, num_layers: int,
                 skip: bool = False) -> None:
        super().__init__()
        self.net = _mlp(obs_dim, out_features, hidden_size, num_layers)
        self.skip = nn.Linear(obs_dim, out_features, bias=False) if skip else None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) if self.skip is None else self.net(x) + self.skip(x)


class MLPDecoder(MLPEncoder):
    """Latent ``[N, Z]`` -> normalised state ``[N, D]`` (``skip``: as :class:`MLPEncoder`)."""

    def __init__(self, latent_size: int, obs_dim: int, hidden_size: int, num_layers: int,
                 skip: bool = False) -> None:
        super().__init__(latent_size, obs_dim, hidden_size, num_layers, skip)


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


KEYPOINT_GRID = 16
"""Side of the Gaussian heatmaps that the keypoint decoder draws (then upsampled 4x to 64)."""
KEYPOINT_SIGMA = 0.08
"""Standard deviation of a drawn keypoint, in the ``[-1, 1]`` image coordinates (about 0.6
cells of the 16x16 heatmap)."""


def _grid(size: int, like: Tensor) -> Tensor:
    return torch.linspace(-1.0, 1.0, size, device=like.device, dtype=like.dtype)


class KeypointEncoder(nn.Module):
    """Images ``[N, C, H, W]`` -> ``K`` image keypoints ``[N, 2K]`` (``x, y`` pairs in
    ``[-1, 1]``) by a spatial soft-argmax (the deep spatial autoencoder of Finn et al. 2016,
    "Deep Spatial Autoencoders for Visuomotor Learning").

    One Conv(4x4, stride 2) stage to ``H/2 x W/2``, two 3x3 stages, then a 3x3 conv to ``K``
    feature maps; each map's softmax over positions is a distribution whose mean is the
    keypoint. Positions are what small moving objects change, and a soft-argmax keeps them as
    coordinates (sub-pixel, linear in the object's position) rather than entangled in a dense
    code, so that latent dynamics and a reward head on them generalise to unseen positions.
    With ``frames > 1`` the channels hold that many stacked frames, each encoded on its own
    (shared weights) to ``K`` keypoints: ``[N, frames * 2K]``, oldest frame first, so that a
    motion of a fraction of a pixel is the difference of two precise coordinates.
    """

    def __init__(self, shape: tuple[int, int, int], num_keypoints: int, depth: int,
                 frames: int = 1) -> None:
        super().__init__()
        self.frames = frames
        channels = shape[0] // frames
        self.convs = nn.Sequential(
            nn.Conv2d(channels, depth, 4, stride=2, padding=1), _norm(depth), nn.SiLU(),
            nn.Conv2d(depth, 2 * depth, 3, padding=1), _norm(2 * depth), nn.SiLU(),
            nn.Conv2d(2 * depth, 2 * depth, 3, padding=1), _norm(2 * depth), nn.SiLU(),
            nn.Conv2d(2 * depth, num_keypoints, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[0]
        x = x.reshape(lead * self.frames, x.shape[1] // self.frames, *x.shape[2:])
        maps = self.convs(x)  # [N * frames, K, H/2, W/2]
        N, K, H, W = maps.shape
        prob = torch.softmax(maps.flatten(2).float(), -1).view(N, K, H, W)
        u = (prob.sum(2) * _grid(W, prob)).sum(-1)  # [N, K]
        v = (prob.sum(3) * _grid(H, prob)).sum(-1)
        return torch.stack([u, v], -1).reshape(lead, -1)


class KeypointDecoder(nn.Module):
    """Keypoints ``[N, 2K]`` -> images ``[N, C, H, W]`` in (about) ``[-0.5, 0.5]``.

    Each keypoint is drawn as a Gaussian on a ``16 x 16`` grid; with ``depth`` learned
    constant feature maps (the static scene) a conv stack upsamples them 4x (two transposed
    convs, stride 2) to the image, as in keypoint-bottleneck autoencoders (Jakab et al. 2018).
    With ``frames > 1`` each frame's keypoints draw that frame's channels (shared weights).
    """

    def __init__(self, num_keypoints: int, shape: tuple[int, int, int], depth: int,
                 frames: int = 1) -> None:
        super().__init__()
        channels, height, width = shape
        self.frames, channels = frames, channels // frames
        self.grid = (height // 4, width // 4)
        self.num_keypoints = num_keypoints
        self.scene = nn.Parameter(torch.zeros(1, depth, *self.grid))
        self.net = nn.Sequential(
            nn.Conv2d(num_keypoints + depth, 2 * depth, 3, padding=1), _norm(2 * depth), nn.SiLU(),
            nn.ConvTranspose2d(2 * depth, 2 * depth, 4, stride=2, padding=1), _norm(2 * depth),
            nn.SiLU(),
            nn.Conv2d(2 * depth, depth, 3, padding=1), _norm(depth), nn.SiLU(),
            nn.ConvTranspose2d(depth, channels, 4, stride=2, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[0]
        N = lead * self.frames
        points = z.reshape(N, self.num_keypoints, 2)
        rows, cols = self.grid
        gx = (_grid(cols, z).view(1, 1, 1, cols) - points[..., 0, None, None]).pow(2)
        gy = (_grid(rows, z).view(1, 1, rows, 1) - points[..., 1, None, None]).pow(2)
        maps = torch.exp(-(gx + gy) / (2 * KEYPOINT_SIGMA**2))  # [N, K, rows, cols]
        images = self.net(torch.cat([maps, self.scene.expand(N, -1, -1, -1)], 1))
        return images.reshape(lead, -1, *images.shape[2:])
