"""Registered latent families: ``latent-mlp``, ``latent-vae`` and ``latent-conv``."""

from __future__ import annotations

from worldflux.core.registry import WorldModelRegistry
from worldflux.models.latent.config import LatentConvConfig, LatentMLPConfig, LatentVAEConfig
from worldflux.models.latent.model import LatentModel


@WorldModelRegistry.register("latent-mlp", LatentMLPConfig, tier="experimental",
                             description="State autoencoder + latent MLP dynamics, planned in "
                                         "the latent space")
class LatentMLPModel(LatentModel):
    """MLP autoencoder over state vectors with deterministic latent dynamics."""

    family = "latent-mlp"
    config_class = LatentMLPConfig


@WorldModelRegistry.register("latent-vae", LatentVAEConfig, tier="experimental",
                             description="State VAE + Gaussian latent dynamics (stochastic "
                                         "latent model)")
class LatentVAEModel(LatentModel):
    """VAE over state vectors (KL to N(0, I), free bits) with Gaussian latent dynamics."""

    family = "latent-vae"
    config_class = LatentVAEConfig


@WorldModelRegistry.register("latent-conv", LatentConvConfig, tier="experimental",
                             description="Pixel autoencoder (4-stage conv) + latent MLP "
                                         "dynamics for 64x64 images")
class LatentConvModel(LatentModel):
    """DreamerV3-like convolutional autoencoder over uint8 images with latent MLP dynamics."""

    family = "latent-conv"
    config_class = LatentConvConfig
