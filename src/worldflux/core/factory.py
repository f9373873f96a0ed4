"""``create_world_model``: build any registered family by name."""

from __future__ import annotations

import dataclasses
from typing import Any

from worldflux.core.device import resolve_device
from worldflux.core.errors import ConfigError
from worldflux.core.registry import WorldModelRegistry, build_config
from worldflux.core.spec import ActionSpec, ObservationSpec


def create_world_model(
    name: str,
    *,
    obs_shape: tuple[int, ...] | list[int] | None = None,
    action_dim: int | None = None,
    action_spec: ActionSpec | None = None,
    obs_spec: ObservationSpec | None = None,
    obs_dtype: str | None = None,
    action_kind: str = "continuous",
    device: str = "auto",
    config: Any = None,
    **config_overrides: Any,
):
    """Build the family ``name`` (or an alias) for the given observation and action specs.

    Args:
        name: a registered family, e.g. ``"pets"`` (see :func:`worldflux.list_models`).
        obs_shape: shape of one observation, e.g. ``(3,)`` or ``(3, 64, 64)``.
        action_dim: action width (continuous) or number of choices (discrete).
        action_spec / obs_spec: full specs instead of ``action_dim`` / ``obs_shape``.
        obs_dtype: ``"float32"`` or ``"uint8"``; defaults to uint8 for 3-D shapes.
        action_kind: ``"continuous"`` or ``"discrete"`` when ``action_dim`` is given.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda:0"``...
        config: a ready config dataclass instance (overrides still apply on top).
        **config_overrides: config fields, flat (``hidden_size=256``) or dotted strings.

    Raises:
        RegistryError: unknown family (lists close matches).
        ConfigError: unknown keyword argument or bad value (lists close matches).
    """
    entry = WorldModelRegistry.get(name)
    if obs_spec is None:
        if obs_shape is None:
            raise ConfigError(f"create_world_model('{name}'): obs_shape is required, e.g. obs_shape=(3,)")
        shape = tuple(int(s) for s in obs_shape)
        obs_spec = ObservationSpec(shape, obs_dtype or ("uint8" if len(shape) == 3 else "float32"))
    if action_spec is None:
        if action_dim is None:
            raise ConfigError(
                f"create_world_model('{name}'): action_dim or action_spec is required, e.g. action_dim=1"
            )
        action_spec = ActionSpec(int(action_dim), action_kind)  # type: ignore[arg-type]
    if entry.config_cls is None:
        if config_overrides:
            raise ConfigError(f"family '{entry.name}' takes no config, got {sorted(config_overrides)}")
        cfg = None
    elif config is not None:
        from worldflux.core.config import apply_overrides

        cfg = apply_overrides(config, config_overrides) if config_overrides else config
    else:
        cfg = build_config(entry.config_cls, config_overrides, f"create_world_model('{entry.name}')")
    if cfg is not None and dataclasses.is_dataclass(cfg) and hasattr(cfg, "validate"):
        cfg.validate(obs_spec, action_spec)
    model = entry.cls(cfg, obs_spec, action_spec)
    return model.to(resolve_device(device))
