"""Latent (autoencoder) world models: ``latent-mlp``, ``latent-vae`` and ``latent-conv``."""

from worldflux.models.latent.config import (
    LatentConfig,
    LatentConvConfig,
    LatentMLPConfig,
    LatentVAEConfig,
)
from worldflux.models.latent.families import LatentConvModel, LatentMLPModel, LatentVAEModel
from worldflux.models.latent.model import LatentModel

__all__ = [
    "LatentConfig", "LatentConvConfig", "LatentConvModel", "LatentMLPConfig", "LatentMLPModel",
    "LatentModel", "LatentVAEConfig", "LatentVAEModel",
]
