"""Built-in world-model families (importing this registers them)."""

from worldflux.models.pets import PETSConfig, PETSModel
from worldflux.models.tdmpc2 import TDMPC2Config, TDMPC2Model  # noqa: F401

__all__ = ["PETSConfig", "PETSModel"]
