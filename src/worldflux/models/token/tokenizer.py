"""VQ-VAE tokenizer: 64x64 frames <-> a grid of discrete codes.

Encoder (``TokenConfig.encoder``): overlapping stride-2 conv stages down to ``grid x grid``
cells (``conv``), or a per-cell MLP on each cell's own pixels (``patch``: a cell whose pixels do
not change keeps its code), each cell mapped to a ``code_dim`` vector and snapped to its nearest
code (straight-through gradients). Decoder: transposed convs from code vectors back to pixels,
optionally drawn against a reference frame (``reference_decoder``: the last real frame, mixed in
through a per-pixel gate). Codes start from k-means of the first batch's encoder outputs, update
by EMA (or as parameters), and unused codes are restarted at encoder outputs of
the current batch whose cells are reconstructed worst (see :mod:`.quantizer`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.errors import ContractError
from worldflux.core.types import LossOutput
from worldflux.models.token.config import TokenConfig
from worldflux.models.token.quantizer import Quantizer

__all__ = ["Quantizer", "Tokenizer"]


class CellEncoder(nn.Module):
    """Runs ``inner`` (an encoder from ``P x P`` pixels to ``1 x 1``) on every cell of
    ``[N, C, H, H]`` images separately -> ``[N, D, G, G]`` with ``G = H / P``: each code sees
    exactly its own cell's pixels, so a cell whose pixels do not change keeps its token."""

    def __init__(self, inner: nn.Module, grid: int) -> None:
        super().__init__()
        self.inner = inner
        self.grid = grid

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, _ = x.shape
        G = self.grid
        P = H // G
        cells = x.reshape(N, C, G, P, G, P).permute(0, 2, 4, 1, 3, 5).reshape(N * G * G, C, P, P)
        out = self.inner(cells)  # [N*G*G, D, 1, 1]
        return out.reshape(N, G, G, -1).permute(0, 3, 1, 2)


class PositionNorm(nn.Module):
    """LayerNorm over the channels of each position of ``[N, C, H, W]`` on its own: unlike
    GroupNorm over the whole image, a position's output does not depend on the other
    positions' values."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _patch_encoder(channels: int, cell: int, width: int, code_dim: int, context: int,
                   norms: bool) -> nn.Sequential:
    """Each cell's ``cell x cell`` pixels through a linear map (a ``cell``-stride conv), then
    a per-position MLP with per-position norms; ``context = 1`` adds a 3x3 conv on the grid
    (each vector also sees the 8 neighbouring cells). Nothing normalises over the image, so a
    vector depends on its own cell's pixels (and its neighbours' with ``context = 1``) only."""
    def norm() -> list[nn.Module]:
        return [PositionNorm(width)] if norms else []

    layers: list[nn.Module] = [nn.Conv2d(channels, width, cell, cell), *norm(), nn.SiLU()]
    if context:
        layers += [nn.Conv2d(width, width, 3, 1, 1), *norm(), nn.SiLU()]
    layers += [nn.Conv2d(width, width, 1), *norm(), nn.SiLU(), nn.Conv2d(width, code_dim, 1)]
    return nn.Sequential(*layers)


def _conv_encoder(channels: int, widths: list[int], code_dim: int) -> nn.Sequential:
    """Overlapping 4x4 stride-2 convs with whole-image GroupNorm and a 3x3 conv on the grid:
    each vector also sees the neighbouring cells (and the frame's statistics)."""
    layers: list[nn.Module] = []
    previous = channels
    for width in widths:
        layers += [nn.Conv2d(previous, width, 4, 2, 1), nn.GroupNorm(1, width), nn.SiLU()]
        previous = width
    return nn.Sequential(*layers, nn.Conv2d(previous, previous, 3, 1, 1), nn.SiLU(),
                         nn.Conv2d(previous, code_dim, 1))


def _norm(kind: str, width: int) -> list[nn.Module]:
    if kind == "group":
        return [nn.GroupNorm(1, width)]
    if kind == "position":
        return [PositionNorm(width)]
    return []


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
        if config.encoder == "patch":
            self.encoder = _patch_encoder(C, H // config.grid_size, config.patch_width,
                                          config.code_dim, config.encoder_context,
                                          config.patch_norm)
        else:
            self.encoder = _conv_encoder(C, widths, config.code_dim)
        if config.encoder == "cell":
            self.encoder = CellEncoder(self.encoder, config.grid_size)
        previous = widths[-1]
        self.quantizer = Quantizer(config)
        # With ``reference_decoder``: each cell of the reference frame (its pixels and a
        # channel saying whether there is one) through a linear map to ``code_dim`` features
        # that join the codes; the decoder draws ``C`` pixel channels and one gate channel.
        # ``gate`` compares, pixel by pixel, the drawn frame with the reference (both, and
        # their squared difference, through a small conv) and adds to the decoder's gate logit:
        # where the drawing roughly agrees with the reference, the reference's exact pixels win.
        self.reference: nn.Module | None = None
        self.gate: nn.Module | None = None
        inputs, outputs = config.code_dim, C
        if config.reference_decoder:
            cell = H // config.grid_size
            self.reference = nn.Conv2d(C + 1, config.code_dim, cell, cell)
            self.gate = nn.Sequential(nn.Conv2d(3 * C, 16, 3, 1, 1), nn.SiLU(),
                                      nn.Conv2d(16, 1, 1))
            inputs, outputs = 2 * config.code_dim, C + 1
        layers = [nn.Conv2d(inputs, previous, 3, 1, 1), nn.SiLU()]
        for width in reversed(widths[:-1]):
            layers += [nn.ConvTranspose2d(previous, width, 4, 2, 1), *_norm(config.decoder_norm,
                                                                            width), nn.SiLU()]
            previous = width
        layers += [nn.ConvTranspose2d(previous, outputs, 4, 2, 1)]
        self.decoder = nn.Sequential(*layers)
        if config.decoder == "patch":
            # Each code vector through a per-position MLP to its own cell's pixels (a transposed
            # conv with kernel = stride = the cell side): a cell's pixels depend on its token only.
            width, cell = config.patch_width, H // config.grid_size
            self.decoder = nn.Sequential(
                nn.Conv2d(inputs, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1),
                nn.SiLU(), nn.ConvTranspose2d(width, outputs, cell, cell))

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

    def detokenize(self, tokens: Tensor, reference: Tensor | None = None,
                   present: Tensor | None = None) -> Tensor:
        """Images ``[N, C, H, H]`` (float, 0..255) of token indices ``[N, G*G]``; with
        ``reference_decoder``, ``reference [N, C, H, H]`` is the frame the codes are drawn
        against (``present [N]`` bool: rows that have one; default all when given)."""
        G = self.config.grid_size
        e = self.quantizer.lookup(tokens).reshape(tokens.shape[0], G, G, -1)
        return self._pixels(self.draw(e.permute(0, 3, 1, 2), reference, present))

    def draw(self, codes: Tensor, reference: Tensor | None = None,
             present: Tensor | None = None) -> Tensor:
        """Decoder: code vectors ``[N, D, G, G]`` -> images ``[N, C, H, H]`` in ``[-0.5, 0.5]``
        units. With ``reference_decoder``: ``gate * reference + (1 - gate) * drawn``, the gate
        per pixel from the decoder and from comparing ``drawn`` with the reference (0 for rows
        without a reference)."""
        if self.reference is None:
            return self.decoder(codes)
        N, G = codes.shape[0], codes.shape[-1]
        cell = self.reference.kernel_size[0]
        C = self.reference.in_channels - 1
        if reference is None:
            reference = codes.new_zeros(N, C, G * cell, G * cell)
            present = torch.zeros(N, dtype=torch.bool, device=codes.device)
        elif tuple(reference.shape) != (N, C, G * cell, G * cell):
            raise ContractError(f"reference: got shape {tuple(reference.shape)}, expected "
                                f"{(N, C, G * cell, G * cell)} (one frame per row of tokens)")
        if present is None:
            present = torch.ones(N, dtype=torch.bool, device=codes.device)
        on = present.to(codes.dtype)[:, None, None, None]
        ref = self.to_input(reference) * on
        features = self.reference(torch.cat([ref, on.expand(-1, 1, *ref.shape[-2:])], 1))
        out = self.decoder(torch.cat([codes, features], 1))
        drawn = out[:, :C]
        logit = out[:, C:] + self.gate(torch.cat([drawn, ref, (drawn - ref).pow(2)], 1))
        gate = torch.sigmoid(logit) * on
        return gate * ref + (1 - gate) * drawn

    @staticmethod
    def _pixels(x: Tensor) -> Tensor:
        return ((x + 0.5) * 255.0).clamp(0.0, 255.0)

    def loss(self, obs: Tensor, reference: Tensor | None = None,
             present: Tensor | None = None) -> LossOutput:
        """Reconstruction (``recon_loss``: MSE or L1 in ``[-0.5, 0.5]`` units) + VQ loss of
        images ``[N, C, H, H]``; in training mode, dead codes restart at the encoder outputs of
        the worst-reconstructed cells. With ``reference_decoder``, each image is drawn against
        ``reference [N, C, H, H]`` where ``present [N]`` (see :meth:`draw`); in training a
        ``reference_blank`` share of the rows is drawn without one.

        Metrics: ``psnr`` (dB, on the 0..1 scale), ``codes_used`` (fraction of the codebook
        used in this batch), ``perplexity`` of the code distribution, ``restarted`` codes."""
        # Read before the no_grad block below, inside which is_grad_enabled() is always False.
        training = self.training and torch.is_grad_enabled()
        x = self.to_input(obs)
        z = self.encoder(x).permute(0, 2, 3, 1)
        flat = z.reshape(-1, z.shape[-1])
        quantised, _, vq_loss, metrics = self.quantizer(flat)
        if self.reference is not None and reference is not None:
            if present is None:
                present = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
            if training and self.config.reference_blank > 0:
                keep = torch.rand(obs.shape[0], device=obs.device) >= self.config.reference_blank
                present = present & keep
        recon = self.draw(quantised.reshape(z.shape).permute(0, 3, 1, 2), reference, present)
        if self.config.recon_loss == "l1":
            recon_loss = F.l1_loss(recon, x)
        else:
            recon_loss = F.mse_loss(recon, x)
        fraction = self.config.hard_pixel_fraction
        if fraction > 0:
            per_pixel = (recon - x).pow(2).mean(1).flatten(1)  # [N, H*W]
            k = max(1, int(round(fraction * per_pixel.shape[1])))
            hard = per_pixel.topk(k, dim=1).values.mean()
            recon_loss = recon_loss + hard
        loss = recon_loss + vq_loss
        with torch.no_grad():
            squared = (recon.clamp(-0.5, 0.5) - x).pow(2)
            clipped = squared.mean()
            if training:
                G = self.config.grid_size
                cell_error = F.adaptive_avg_pool2d(squared.mean(1, keepdim=True), G)  # [N,1,G,G]
                metrics["restarted"] = float(self.quantizer.restart_dead(
                    flat.detach(), cell_error.reshape(-1)))
        metrics.update({"recon_loss": float(recon_loss.detach()),
                        "recon_mse": float(clipped), "vq_loss": float(vq_loss.detach()),
                        "psnr": float(10 * torch.log10(1.0 / clipped.clamp_min(1e-10)))})
        return LossOutput(loss, {"recon": recon_loss, "vq": vq_loss}, metrics)
