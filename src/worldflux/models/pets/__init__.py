"""PETS probabilistic ensemble family (``pets``, alias ``ensemble``)."""

from worldflux.models.pets.config import PETSConfig
from worldflux.models.pets.model import PETSModel

__all__ = ["PETSConfig", "PETSModel"]
