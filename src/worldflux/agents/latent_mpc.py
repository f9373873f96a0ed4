"""MPC agents over the latent families: plan in the latent space of an autoencoder.

The same :class:`~worldflux.agents.mpc.MPCAgent` (bootstrap training rounds at episode ends,
receding-horizon planning with particles, risk measures) with a latent world model: the
observation is encoded once per decision and candidate sequences are rolled out and scored in
the latent space (see :mod:`worldflux.models.latent`).

* ``latent-mpc``: state autoencoder + latent MLP dynamics (``latent-mlp``);
* ``vae-mpc``: state VAE + Gaussian latent dynamics (``latent-vae``);
* ``pixel-mpc``: convolutional autoencoder over 64x64 images (``latent-conv``); train it with
  ``--set train.obs_type=image``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worldflux.agents.base import AgentRegistry
from worldflux.agents.mpc import MPCAgent, MPCAgentConfig
from worldflux.models.latent.config import LatentConvConfig, LatentMLPConfig, LatentVAEConfig


@dataclass
class LatentMPCAgentConfig(MPCAgentConfig):
    """MPC in the latent space of a state autoencoder."""

    model: LatentMLPConfig = field(default_factory=LatentMLPConfig)
    """The latent world model (``--set model.latent_size=16``)."""


@dataclass
class VAEMPCAgentConfig(MPCAgentConfig):
    """MPC in the latent space of a state VAE with Gaussian latent dynamics."""

    model: LatentVAEConfig = field(default_factory=LatentVAEConfig)
    """The latent world model."""


@dataclass
class PixelMPCAgentConfig(MPCAgentConfig):
    """MPC from 64x64 pixels in the latent space of a convolutional autoencoder."""

    model: LatentConvConfig = field(default_factory=LatentConvConfig)
    """The latent world model."""


@AgentRegistry.register("latent-mpc", LatentMPCAgentConfig, tier="experimental",
                        description="MPC in the latent space of a state autoencoder")
class LatentMPCAgent(MPCAgent):
    name = "latent-mpc"
    family = "latent-mlp"


@AgentRegistry.register("vae-mpc", VAEMPCAgentConfig, tier="experimental",
                        description="MPC in the latent space of a state VAE (stochastic latent)")
class VAEMPCAgent(MPCAgent):
    name = "vae-mpc"
    family = "latent-vae"


@AgentRegistry.register("pixel-mpc", PixelMPCAgentConfig, tier="experimental",
                        description="MPC from 64x64 pixels through a convolutional autoencoder")
class PixelMPCAgent(MPCAgent):
    name = "pixel-mpc"
    family = "latent-conv"
