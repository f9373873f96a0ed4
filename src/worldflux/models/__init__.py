"""Built-in world-model families (importing this registers them)."""

from worldflux.models.dreamerv3 import DreamerV3Config, DreamerV3Model
from worldflux.models.latent import (
    LatentConfig,
    LatentConvModel,
    LatentMLPModel,
    LatentModel,
    LatentVAEModel,
)
from worldflux.models.pets import (
    DeterministicEnsembleModel,
    GaussianMLPModel,
    MLPDynamicsModel,
    PETSConfig,
    PETSModel,
)
from worldflux.models.tdmpc2 import TDMPC2Config, TDMPC2Model
from worldflux.models.token import TokenConfig, TokenModel

__all__ = [
    "DeterministicEnsembleModel", "DreamerV3Config", "DreamerV3Model", "GaussianMLPModel",
    "LatentConfig", "LatentConvModel", "LatentMLPModel", "LatentModel", "LatentVAEModel",
    "MLPDynamicsModel", "PETSConfig", "PETSModel", "TDMPC2Config", "TDMPC2Model", "TokenConfig",
    "TokenModel",
]
