"""Config helpers: dotted overrides with type parsing, strict keys, Literal/bool, JSON round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from worldflux.core.config import (
    apply_overrides,
    from_dict,
    load_json,
    parse_set_options,
    save_json,
    to_dict,
)
from worldflux.core.errors import ConfigError
from worldflux.models.pets import PETSConfig


@dataclass
class PlannerSection:
    """Nested test section."""

    horizon: int = 15
    """Steps."""
    temperature: float = 0.5
    """Softness."""
    name: Literal["cem", "mppi"] = "cem"
    """Which."""


@dataclass
class AgentSection:
    """Top-level test config."""

    planner: PlannerSection = field(default_factory=PlannerSection)
    """Nested planner settings."""
    use_bf16: bool = False
    """A flag."""
    sizes: tuple[int, ...] = (64, 64)
    """Layer sizes."""
    seed: int | None = None
    """Optional seed."""
    label: str = "run"
    """Free text."""


def test_dotted_overrides_parse_strings_to_field_types():
    cfg = apply_overrides(AgentSection(), {
        "planner.horizon": "20", "planner.temperature": "0.25", "planner.name": "mppi",
        "use_bf16": "true", "sizes": "32,16", "seed": "7", "label": "x"})
    assert cfg.planner == PlannerSection(horizon=20, temperature=0.25, name="mppi")
    assert cfg.use_bf16 is True
    assert cfg.sizes == (32, 16)
    assert cfg.seed == 7 and isinstance(cfg.seed, int)
    assert cfg.label == "x"


def test_overrides_return_a_copy_and_accept_native_values():
    original = AgentSection()
    cfg = apply_overrides(original, {"planner.horizon": 3, "sizes": [8], "seed": None})
    assert cfg.planner.horizon == 3 and cfg.sizes == (8,) and cfg.seed is None
    assert original.planner.horizon == 15 and original.sizes == (64, 64)


def test_whole_section_override_from_mapping():
    cfg = apply_overrides(AgentSection(), {"planner": {"horizon": 4}})
    assert cfg.planner == PlannerSection(horizon=4)


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
])
def test_bool_parsing(text, expected):
    assert apply_overrides(AgentSection(), {"use_bf16": text}).use_bf16 is expected


def test_bad_bool_names_field():
    with pytest.raises(ConfigError, match=r"'use_bf16'.*'maybe'.*true or false"):
        apply_overrides(AgentSection(), {"use_bf16": "maybe"})


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError) as excinfo:
        apply_overrides(AgentSection(), {"planner.horizn": "3"})
    message = str(excinfo.value)
    assert "planner.horizn" in message and "Did you mean: horizon" in message
    assert "PlannerSection" in message
    with pytest.raises(ConfigError, match="Did you mean: use_bf16"):
        apply_overrides(AgentSection(), {"use_bf61": "1"})


def test_unknown_key_without_close_match_lists_known_keys():
    with pytest.raises(ConfigError) as excinfo:
        apply_overrides(AgentSection(), {"zzz": 1})
    assert "known keys: label, planner, seed, sizes, use_bf16" in str(excinfo.value)
    assert "Did you mean" not in str(excinfo.value)


def test_setting_inside_a_non_section_fails():
    with pytest.raises(ConfigError, match="'label' is a str, not a section"):
        apply_overrides(AgentSection(), {"label.x": 1})


def test_literal_validation_names_field_and_choices():
    with pytest.raises(ConfigError, match=r"'planner.name'.*'icem'.*\['cem', 'mppi'\]"):
        apply_overrides(AgentSection(), {"planner.name": "icem"})
    with pytest.raises(ConfigError, match="propagation"):
        apply_overrides(PETSConfig(), {"propagation": "ts2"})
    assert apply_overrides(PETSConfig(), {"propagation": "ts1"}).propagation == "ts1"


@pytest.mark.parametrize("key,value", [
    ("planner.horizon", "2.5"), ("planner.horizon", "ten"), ("planner.temperature", "hot"),
    ("planner.horizon", True), ("seed", "1.5"),
])
def test_bad_numbers_name_field(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        apply_overrides(AgentSection(), {key: value})


def test_integral_float_text_is_accepted_for_int():
    assert apply_overrides(AgentSection(), {"planner.horizon": "20.0"}).planner.horizon == 20


def test_none_only_for_optional_fields():
    assert apply_overrides(AgentSection(), {"seed": "none"}).seed is None
    with pytest.raises(ConfigError, match=r"'planner.horizon': got None"):
        apply_overrides(AgentSection(), {"planner.horizon": None})


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(AgentSection(), {"planner.name": "mppi", "sizes": "1,2,3", "seed": 4})
    data = to_dict(cfg)
    assert data["sizes"] == [1, 2, 3] and data["planner"]["name"] == "mppi"
    assert from_dict(AgentSection, data) == cfg
    path = tmp_path / "config.json"
    save_json(cfg, str(path))
    assert load_json(AgentSection, str(path)) == cfg
    pets = PETSConfig(hidden_size=17, propagation="expectation")
    assert from_dict(PETSConfig, to_dict(pets)) == pets


def test_from_dict_is_strict():
    with pytest.raises(ConfigError, match=r"unknown config key 'planner.horizn'"):
        from_dict(AgentSection, {"planner": {"horizn": 3}})


def test_load_json_reports_bad_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(AgentSection, str(path))


def test_to_dict_rejects_non_dataclass():
    with pytest.raises(ConfigError, match="dataclass"):
        to_dict({"a": 1})


def test_parse_set_options():
    assert parse_set_options(["planner.horizon=20", " seed = 3 ", "label=a=b"]) == {
        "planner.horizon": "20", "seed": "3", "label": "a=b"}
    assert parse_set_options(None) == {}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["horizon"])


def test_every_pets_field_round_trips_through_its_text_form():
    cfg = PETSConfig()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        assert apply_overrides(cfg, {f.name: str(value)}) == cfg, f.name
