"""worldflux: world models and model-based reinforcement learning.

Quick use::

    import worldflux
    model = worldflux.create_world_model("pets", obs_shape=(3,), action_dim=1)
    worldflux.list_models()
"""

__version__ = "0.1.0"

from worldflux.core import (  # noqa: E402
    ActionSpec,
    ContractError,
    IOContract,
    LossOutput,
    ModelOutput,
    ObservationSpec,
    State,
    Trajectory,
    WorldModel,
    WorldModelRegistry,
    create_world_model,
    from_pretrained,
    list_models,
)

__all__ = [
    "ActionSpec", "ContractError", "IOContract", "LossOutput", "ModelOutput", "ObservationSpec",
    "State", "Trajectory", "WorldModel", "WorldModelRegistry", "__version__",
    "create_world_model", "from_pretrained", "list_models",
]

import worldflux.envs.games  # noqa: E402,F401  (registers worldflux/Breakout64-v0, Collect64-v0)
import worldflux.envs.nav3d  # noqa: E402,F401  (registers worldflux/Nav3D-v0 with gymnasium)
