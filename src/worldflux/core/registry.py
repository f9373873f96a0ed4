"""Registries of model families (and other components), with entry-point plugins.

Third-party packages add families through the entry-point group ``worldflux.models`` and other
components through ``worldflux.components``. Entry points are loaded lazily, the first time a
name is looked up or listed; one that fails to import is reported by a warning naming it and the
rest keep working. An entry point may name a module (registering on import with the decorator
below) or a callable, which is called with the registry.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from worldflux.core.errors import ConfigError, RegistryError, close_matches

logger = logging.getLogger(__name__)

Tier = Literal["reference", "experimental", "skeleton"]


@dataclass
class Entry:
    """One registered family or component."""

    name: str
    cls: type
    config_cls: type | None
    tier: str = "experimental"
    description: str = ""
    aliases: tuple[str, ...] = ()
    source: str = "worldflux"


@dataclass
class Registry:
    """Name -> class mapping with aliases, maturity tiers and lazy entry-point discovery."""

    kind: str
    entry_point_group: str | None = None
    _entries: dict[str, Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _plugins_loaded: bool = False
    _builtins: Callable[[], None] | None = None

    def register(
        self,
        name: str,
        config_cls: type | None = None,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        tier: Tier = "experimental",
        description: str | None = None,
    ) -> Callable[[type], type]:
        """Class decorator: ``@WorldModelRegistry.register("pets", PETSConfig, aliases=["ensemble"])``."""
        if tier not in ("reference", "experimental", "skeleton"):
            raise ConfigError(f"tier: got {tier!r}, expected reference, experimental or skeleton")

        def decorator(cls: type) -> type:
            doc = description or (cls.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            entry = Entry(name, cls, config_cls, tier, text, tuple(aliases), cls.__module__)
            for key in (name, *aliases):
                owner = self._aliases.get(key, key if key in self._entries else None)
                if owner is not None and self._entries[owner].cls is not cls:
                    raise RegistryError(
                        f"{self.kind} name '{key}' is already registered by "
                        f"{self._entries[owner].cls.__module__}.{self._entries[owner].cls.__name__}"
                    )
            self._entries[name] = entry
            for alias in aliases:
                self._aliases[alias] = name
            if hasattr(cls, "family") and not getattr(cls, "family", ""):
                cls.family = name
            return cls

        return decorator

    # -- discovery -------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._builtins is not None:
            builtins, self._builtins = self._builtins, None
            builtins()
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded(self)
            except Exception as exc:  # a broken plugin must not break the others
                warnings.warn(
                    f"worldflux plugin '{ep.name}' ({ep.value}) in group "
                    f"'{self.entry_point_group}' failed to load: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` or an alias; unknown names list close matches."""
        self._ensure_loaded()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = sorted([*self._entries, *self._aliases])
        raise RegistryError(
            f"unknown {self.kind} '{name}'; known: {', '.join(known) or '(none)'}."
            f"{close_matches(name, known)}"
        )

    def get(self, name: str) -> Entry:
        return self._entries[self.resolve(name)]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except RegistryError:
            return False
        return True


def _load_builtin_models() -> None:
    import worldflux.models  # noqa: F401  (registers the built-in families)


WorldModelRegistry = Registry("world model family", "worldflux.models", _builtins=_load_builtin_models)
"""Registry of world-model families: ``@WorldModelRegistry.register(name, ConfigClass)``."""

ComponentRegistry = Registry("component", "worldflux.components")
"""Registry of reusable components (encoders, planners, ...) contributed by plugins."""


def list_models() -> list[dict[str, Any]]:
    """Registered families: ``[{"name", "tier", "description", "aliases", "source"}]``."""
    return [
        {"name": e.name, "tier": e.tier, "description": e.description,
         "aliases": list(e.aliases), "source": e.source}
        for e in WorldModelRegistry.entries()
    ]


def build_config(config_cls: type, overrides: dict[str, Any], where: str) -> Any:
    """Instantiate ``config_cls`` from flat or dotted keyword overrides (strict, close matches)."""
    from worldflux.core.config import apply_overrides

    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{where}: config class {config_cls!r} is not a dataclass")
    try:
        return apply_overrides(config_cls(), overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
