"""PETS probabilistic ensemble family (``pets``, alias ``ensemble``) and its raw-observation
variants ``mlp``, ``ensemble-mlp`` and ``gaussian``."""

from worldflux.models.pets.config import (
    DeterministicEnsembleConfig,
    GaussianMLPConfig,
    MLPDynamicsConfig,
    PETSConfig,
)
from worldflux.models.pets.model import PETSModel
from worldflux.models.pets.variants import (
    DeterministicEnsembleModel,
    GaussianMLPModel,
    MLPDynamicsModel,
)

__all__ = [
    "DeterministicEnsembleConfig", "DeterministicEnsembleModel", "GaussianMLPConfig",
    "GaussianMLPModel", "MLPDynamicsConfig", "MLPDynamicsModel", "PETSConfig", "PETSModel",
]
