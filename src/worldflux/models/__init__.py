"""Built-in world-model families (importing this registers them)."""

from worldflux.models.pets import PETSConfig, PETSModel

__all__ = ["PETSConfig", "PETSModel"]
