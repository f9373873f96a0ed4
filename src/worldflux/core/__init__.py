"""Core contract: types, specs, validation, registry, config and serialization.

Imports nothing else from worldflux (dependencies run one way: core <- nn <- ... <- cli).
"""

from worldflux.core.errors import (
    CheckpointError,
    ConfigError,
    ContractError,
    DataError,
    EnvCheckError,
    RegistryError,
    WorldFluxError,
)
from worldflux.core.factory import create_world_model
from worldflux.core.model import WorldModel, validation_disabled
from worldflux.core.registry import ComponentRegistry, Registry, WorldModelRegistry, list_models
from worldflux.core.serialization import from_pretrained, save_pretrained
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec, TensorSpec
from worldflux.core.types import Batch, LossOutput, ModelOutput, State, Trajectory

__all__ = [
    "ActionSpec", "Batch", "CheckpointError", "ComponentRegistry", "ConfigError", "ContractError",
    "DataError", "EnvCheckError", "IOContract", "LossOutput", "ModelOutput", "ObservationSpec",
    "Registry", "RegistryError", "State", "TensorSpec", "Trajectory", "WorldFluxError",
    "WorldModel", "WorldModelRegistry", "create_world_model", "from_pretrained", "list_models",
    "save_pretrained", "validation_disabled",
]
