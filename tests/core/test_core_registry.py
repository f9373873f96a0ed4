"""Registry: registration, aliases, duplicate names, close matches and entry-point plugins."""

from __future__ import annotations

import importlib.metadata
import textwrap
import warnings
from dataclasses import dataclass

import pytest

from worldflux.core.errors import ConfigError, RegistryError
from worldflux.core.registry import Registry, WorldModelRegistry, build_config


@dataclass
class ThingConfig:
    """Config of the test things."""

    size: int = 3
    """How big."""


class Thing:
    """A thing for tests."""


class OtherThing:
    """Another thing."""


def test_register_alias_resolve_and_entries():
    registry = Registry("thing")
    registry.register("thing", ThingConfig, aliases=("widget",), tier="reference")(Thing)
    assert registry.resolve("thing") == "thing"
    assert registry.resolve("widget") == "thing"
    entry = registry.get("widget")
    assert entry.cls is Thing and entry.config_cls is ThingConfig
    assert entry.tier == "reference" and entry.description == "A thing for tests."
    assert entry.source == __name__
    assert registry.names() == ["thing"]
    assert "widget" in registry and "gadget" not in registry


def test_registering_the_same_class_twice_is_harmless():
    registry = Registry("thing")
    registry.register("thing")(Thing)
    registry.register("thing")(Thing)  # module re-imported
    assert registry.names() == ["thing"]


def test_duplicate_name_or_alias_is_an_error():
    registry = Registry("thing")
    registry.register("thing", aliases=("widget",))(Thing)
    with pytest.raises(RegistryError, match=r"'thing' is already registered by .*\.Thing"):
        registry.register("thing")(OtherThing)
    with pytest.raises(RegistryError, match="'widget' is already registered"):
        registry.register("other", aliases=("widget",))(OtherThing)
    with pytest.raises(RegistryError, match="'widget' is already registered"):
        registry.register("widget")(OtherThing)
    assert registry.get("thing").cls is Thing


def test_unknown_name_lists_known_names_and_close_matches():
    registry = Registry("thing")
    registry.register("thing", aliases=("widget",))(Thing)
    with pytest.raises(RegistryError) as excinfo:
        registry.resolve("thign")
    message = str(excinfo.value)
    assert message.startswith("unknown thing 'thign'; known: thing, widget.")
    assert "Did you mean: thing" in message


def test_bad_tier_is_a_config_error():
    with pytest.raises(ConfigError, match="tier"):
        Registry("thing").register("x", tier="beta")  # type: ignore[arg-type]


def test_family_attribute_is_filled_from_the_name():
    class Family:
        family = ""

    Registry("thing").register("my-family")(Family)
    assert Family.family == "my-family"


def test_build_config_names_the_caller():
    assert build_config(ThingConfig, {"size": "5"}, "here").size == 5
    with pytest.raises(ConfigError, match=r"^here: unknown config key 'sise'.*Did you mean: size"):
        build_config(ThingConfig, {"sise": 5}, "here")
    with pytest.raises(ConfigError, match="not a dataclass"):
        build_config(Thing, {}, "here")


def _fake_entry_points(monkeypatch, group: str, points: list[importlib.metadata.EntryPoint]):
    seen: list[str | None] = []

    def entry_points(group: str | None = None, **kwargs):
        seen.append(group)
        return [p for p in points if p.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return seen


def test_entry_points_register_lazily_and_a_broken_one_only_warns(monkeypatch, tmp_path):
    group = "worldflux.test_things"
    (tmp_path / "good_thing_plugin.py").write_text(textwrap.dedent("""
        class GoodThing:
            '''Registered by a callable entry point.'''

        def register(registry):
            registry.register("good-thing", aliases=("good",))(GoodThing)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = _fake_entry_points(monkeypatch, group, [
        importlib.metadata.EntryPoint("broken", "no_such_module_for_worldflux_tests", group),
        importlib.metadata.EntryPoint("good", "good_thing_plugin:register", group),
    ])
    registry = Registry("thing", group)
    registry.register("builtin")(Thing)
    assert seen == []  # nothing is discovered before the first look-up
    with pytest.warns(RuntimeWarning) as record:
        names = registry.names()
    assert names == ["builtin", "good-thing"]
    assert len(record) == 1
    message = str(record[0].message)
    assert "'broken'" in message and "no_such_module_for_worldflux_tests" in message
    assert group in message and "ModuleNotFoundError" in message
    assert registry.get("good").cls.__name__ == "GoodThing"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second warning
        assert registry.resolve("builtin") == "builtin"
    assert seen == [group]


def test_entry_point_that_raises_on_import_only_warns(monkeypatch, tmp_path):
    group = "worldflux.test_things_raising"
    (tmp_path / "raising_thing_plugin.py").write_text("raise RuntimeError('plugin exploded')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_entry_points(monkeypatch, group, [
        importlib.metadata.EntryPoint("raising", "raising_thing_plugin", group)])
    registry = Registry("thing", group)
    with pytest.warns(RuntimeWarning, match="'raising'.*RuntimeError: plugin exploded"):
        assert registry.names() == []
    with pytest.raises(RegistryError, match="known: \\(none\\)"):
        registry.resolve("raising")


def test_world_model_registry_lists_the_builtin_family():
    assert "pets" in WorldModelRegistry.names()
    assert WorldModelRegistry.resolve("ensemble") == "pets"
