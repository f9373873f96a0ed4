"""The WorldModel contract, checked for every registered family (built-ins and installed plugins).

A new family is covered automatically: it is built from ``SMALL_CASES`` when listed there, else
from ``DEFAULT_CASE`` (flat observations, continuous actions, default config). Batches are built
from the family's own ``io_contract().batch_keys``, so extra keys are filled in too.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import worldflux
from worldflux.core import (
    CheckpointError,
    ConfigError,
    ContractError,
    RegistryError,
    State,
    TensorSpec,
    WorldModel,
    from_pretrained,
)

PLUGIN_SRC = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "minimal_plugin" / "src"


@dataclass(frozen=True)
class FamilyCase:
    """How to build a small instance of a family for the contract tests."""

    obs_shape: tuple[int, ...] = (4,)
    action_dim: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)


SMALL_CASES: dict[str, FamilyCase] = {
    "pets": FamilyCase((4,), 2, {"hidden_size": 32, "num_layers": 2}),
    "mlp": FamilyCase((4,), 2, {"hidden_size": 32, "num_layers": 2}),
    "ensemble-mlp": FamilyCase((4,), 2, {"hidden_size": 32, "num_layers": 2}),
    "gaussian": FamilyCase((4,), 2, {"hidden_size": 32, "num_layers": 2}),
    "latent-mlp": FamilyCase((4,), 2, {"hidden_size": 32, "dynamics_hidden_size": 32}),
    # Random batches move a fresh VAE encoder fast: latent statistics that follow it sooner.
    "latent-vae": FamilyCase((4,), 2, {"hidden_size": 32, "dynamics_hidden_size": 32,
                                       "latent_momentum": 0.3}),
    "latent-conv": FamilyCase((3, 64, 64), 2, {"conv_depth": 4, "latent_size": 8,
                                               "dynamics_hidden_size": 32}),
    "linear-gaussian": FamilyCase((4,), 2, {}),
    "tdmpc2": FamilyCase((4,), 2, {"model_size": 1, "enc_dim": 32, "mlp_dim": 32,
                                   "latent_dim": 16}),
    "token": FamilyCase((3, 64, 64), 4, {"channels": 8, "code_dim": 8, "codebook_size": 16,
                                         "history": 2, "embed_dim": 32, "num_layers": 1,
                                         "num_heads": 2}),
    "dreamerv3": FamilyCase((4,), 2, {"size": "size1m", "deter": 32, "hidden": 16,
                                      "units": 16, "classes": 4, "stoch": 4, "blocks": 2}),
}
DEFAULT_CASE = FamilyCase()
B, T = 3, 4


def _families() -> list[str]:
    """Every registered family; the example plugin joins from source when it is not installed."""
    names = {m["name"] for m in worldflux.list_models()}
    if "linear-gaussian" not in names and PLUGIN_SRC.is_dir():
        # Only for the import: left on sys.path, the build's egg-info there would shadow the
        # installed distribution's metadata (tests/models/test_plugin.py installs it).
        sys.path.insert(0, str(PLUGIN_SRC))
        try:
            importlib.import_module("worldflux_minimal_plugin")
        except ImportError:  # pragma: no cover - the example is part of the repository
            pass
        finally:
            sys.path.remove(str(PLUGIN_SRC))
        names = {m["name"] for m in worldflux.list_models()}
    return sorted(names)


FAMILIES = _families()


def make_model(family: str) -> WorldModel:
    case = SMALL_CASES.get(family, DEFAULT_CASE)
    torch.manual_seed(0)
    model = worldflux.create_world_model(family, obs_shape=case.obs_shape,
                                         action_dim=case.action_dim, device="cpu",
                                         **case.overrides)
    return model


@pytest.fixture(params=FAMILIES)
def model(request) -> WorldModel:
    torch.manual_seed(0)  # the same initial weights whatever ran before in this worker
    return make_model(request.param)


def make_obs(model: WorldModel, *lead: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, *model.obs_spec.shape)
    if model.obs_spec.dtype == "uint8":
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    return torch.randn(shape, generator=g)


def make_actions(model: WorldModel, *lead: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spec = model.action_spec
    if spec.kind == "discrete":
        index = torch.randint(0, spec.dim, lead, generator=g)
        return torch.nn.functional.one_hot(index, spec.dim).float()
    return spec.low + (spec.high - spec.low) * torch.rand((*lead, spec.dim), generator=g)


def _concrete_shape(spec: TensorSpec, model: WorldModel, b: int, t: int) -> tuple[int, ...]:
    out: list[int] = []
    for dim in spec.shape:
        if dim == "B":
            out.append(b)
        elif dim == "T":
            out.append(t)
        elif dim == "*obs":
            out.extend(model.obs_spec.shape)
        elif dim == "A":
            out.append(model.action_spec.dim)
        else:
            out.append(int(dim))
    return tuple(out)


def make_batch(model: WorldModel, b: int = B, t: int = T, seed: int = 0) -> dict[str, torch.Tensor]:
    """A valid batch for every key of the model's contract (one episode per row)."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for key, spec in model.io_contract().batch_keys.items():
        shape = _concrete_shape(spec, model, b, t)
        if key == "obs":
            value = make_obs(model, b, t, seed=seed)
        elif spec.dtype == "action":
            value = make_actions(model, b, t, seed=seed + 1)
            value[:, 0] = 0  # the action that led to the first row
        elif key == "is_first":
            value = torch.zeros(shape, dtype=torch.bool)
            value[:, 0] = True
        elif spec.dtype == "bool":
            value = torch.zeros(shape, dtype=torch.bool)
        elif spec.dtype == "uint8":
            value = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        else:
            value = torch.randn(shape, generator=g)
        batch[key] = value
    return batch


def assert_states_equal(a: State, b: State) -> None:
    assert set(a.tensors) == set(b.tensors)
    for key in a.tensors:
        assert torch.equal(a[key], b[key]), f"state key {key!r} differs"


# -- shapes ------------------------------------------------------------------------------------
def test_every_family_is_covered():
    assert "pets" in FAMILIES
    assert "linear-gaussian" in FAMILIES, "the example plugin should join the contract suite"


def test_initial_state_shapes(model):
    state = model.initial_state(B)
    assert isinstance(state, State)
    assert state.batch_size == B
    assert all(t.shape[0] == B for t in state.tensors.values())
    assert set(model.io_contract().state_keys) <= set(state.tensors)


def test_encode_transition_update_shapes(model):
    obs = make_obs(model, B)
    action = make_actions(model, B)
    encoded = model.encode(obs)
    assert isinstance(encoded, State) and encoded.batch_size == B
    assert set(model.io_contract().state_keys) <= set(encoded.tensors)
    initial = model.initial_state(B)
    for state in (model.transition(encoded, action), model.update(encoded, action, obs)):
        assert isinstance(state, State)
        assert set(state.tensors) == set(encoded.tensors)
        for key in encoded.tensors:
            assert state[key].shape == encoded[key].shape == initial[key].shape, key


def test_decode_prediction_shapes(model):
    state = model.transition(model.encode(make_obs(model, B)), make_actions(model, B))
    preds = model.decode(state).preds
    assert set(model.io_contract().predictions) <= set(preds)
    if "obs" in preds:
        assert preds["obs"].shape == (B, *model.obs_spec.shape)
    for key in ("reward", "continue"):
        if key in preds:
            assert preds[key].shape == (B,), key
            assert torch.isfinite(preds[key]).all()


def test_rollout_shapes(model):
    state = model.encode(make_obs(model, B))
    trajectory = model.rollout(state, make_actions(model, B, T))
    assert trajectory.rewards.shape == (B, T)
    assert trajectory.horizon == T
    if trajectory.continues is not None:
        assert trajectory.continues.shape == (B, T)
    for key, value in state.tensors.items():
        assert trajectory.states[key].shape == (B, T, *value.shape[1:]), key


def test_rollout_equals_repeated_transition(model):
    state = model.encode(make_obs(model, B))
    actions = make_actions(model, B, T)
    with torch.no_grad():
        torch.manual_seed(123)
        trajectory = model.rollout(state, actions)
        torch.manual_seed(123)
        steps, rewards = [], []
        current = state
        for t in range(T):
            current = model.transition(current, actions[:, t])
            preds = model.decode(current).preds
            steps.append(current)
            rewards.append(preds.get("reward", torch.zeros(B)))
    assert_states_equal(trajectory.states, State.stack(steps, dim=1))
    assert torch.equal(trajectory.rewards, torch.stack(rewards, 1))


# -- training ----------------------------------------------------------------------------------
def test_loss_is_finite_scalar_with_gradients(model):
    out = model.loss(make_batch(model))
    assert out.loss.dim() == 0
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(v).all() for v in out.components.values())
    assert all(math.isfinite(v) for v in out.metrics.values())
    out.loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, param in trainable:
        assert param.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


def test_adam_steps_reduce_loss_on_a_fixed_batch(model):
    batch = make_batch(model, b=8, t=6)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def seeded_loss() -> torch.Tensor:
        torch.manual_seed(0)  # families that bootstrap or sample see the same draws
        return model.loss(batch).loss

    with torch.no_grad():
        before = float(seeded_loss())
    for step in range(15):
        optimizer.zero_grad()
        torch.manual_seed(step)
        model.loss(batch).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(seeded_loss())
    assert after < before


# -- serialization -----------------------------------------------------------------------------
def _predictions(model: WorldModel, obs: torch.Tensor, actions: torch.Tensor):
    with torch.no_grad():
        torch.manual_seed(7)
        trajectory = model.rollout(model.encode(obs), actions)
        return trajectory.states, trajectory.rewards


def test_save_and_load_give_identical_predictions(model, tmp_path):
    with torch.no_grad():  # move buffers (normalisers ...) away from their initial values
        persistent = set(model.state_dict())  # saved buffers; others derive from the config
        for name, buffer in model.named_buffers():
            if torch.is_floating_point(buffer) and name in persistent:
                buffer.mul_(1.05).add_(0.01)
    model.eval()
    model.save_pretrained(str(tmp_path))
    assert {"config.json", "model.safetensors", "worldflux.json"} <= {
        p.name for p in tmp_path.iterdir()}
    meta = json.loads((tmp_path / "worldflux.json").read_text())
    assert meta["family"] == model.family
    assert meta["contract_fingerprint"] == model.io_contract().fingerprint()

    loaded = from_pretrained(str(tmp_path), device="cpu")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    obs, actions = make_obs(model, B), make_actions(model, B, T)
    states, rewards = _predictions(model, obs, actions)
    loaded_states, loaded_rewards = _predictions(loaded, obs, actions)
    assert_states_equal(states, loaded_states)
    assert torch.equal(rewards, loaded_rewards)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_tampered_weights_raise_checkpoint_error(model, tmp_path):
    model.save_pretrained(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        from_pretrained(str(tmp_path), device="cpu")


def test_missing_metadata_raises_checkpoint_error(model, tmp_path):
    model.save_pretrained(str(tmp_path))
    (tmp_path / "worldflux.json").unlink()
    with pytest.raises(CheckpointError, match="worldflux.json"):
        from_pretrained(str(tmp_path), device="cpu")


# -- input validation --------------------------------------------------------------------------
def _message(excinfo) -> str:
    return str(excinfo.value)


def test_wrong_obs_shape_is_rejected(model):
    shape = model.obs_spec.shape
    bad = torch.zeros(B, *shape[:-1], shape[-1] + 1)
    with pytest.raises(ContractError) as excinfo:
        model.encode(bad)
    assert "obs" in _message(excinfo) and str(tuple(bad.shape)) in _message(excinfo)
    assert str(shape) in _message(excinfo)
    with pytest.raises(ContractError, match=r"obs.*got shape"):
        model.update(model.initial_state(B), make_actions(model, B), bad)
    batch = make_batch(model)
    batch["obs"] = torch.zeros(B, T, *shape[:-1], shape[-1] + 1)
    with pytest.raises(ContractError, match=r"batch\['obs'\].*got shape"):
        model.loss(batch)


def test_wrong_action_width_is_rejected(model):
    A = model.action_spec.dim
    state = model.encode(make_obs(model, B))
    with pytest.raises(ContractError) as excinfo:
        model.transition(state, torch.zeros(B, A + 1))
    assert "action" in _message(excinfo)
    assert str((B, A + 1)) in _message(excinfo) and str(A) in _message(excinfo)
    with pytest.raises(ContractError, match=rf"actions: got shape \({B}, {T}, {A + 1}\)"):
        model.rollout(state, torch.zeros(B, T, A + 1))
    with pytest.raises(ContractError, match="expected 3 dims"):
        model.rollout(state, torch.zeros(B, A))
    batch = make_batch(model)
    batch["actions"] = torch.zeros(B, T, A + 1)
    with pytest.raises(ContractError, match=r"batch\['actions'\].*last dimension"):
        model.loss(batch)


def test_missing_batch_key_is_rejected(model):
    for key in model.io_contract().batch_keys:
        batch = make_batch(model)
        del batch[key]
        with pytest.raises(ContractError, match=f"missing key '{key}'"):
            model.loss(batch)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", ["obs", "actions", "rewards"])
def test_non_finite_batch_values_are_rejected(model, key, bad_value):
    batch = make_batch(model)
    if key == "obs" and model.obs_spec.dtype == "uint8":
        batch[key] = batch[key].float()
    batch[key] = batch[key].clone()
    batch[key].view(-1)[5] = bad_value
    with pytest.raises(ContractError) as excinfo:
        model.loss(batch)
    assert f"batch['{key}']" in _message(excinfo) and "non-finite" in _message(excinfo)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_step_inputs_are_rejected(model, bad_value):
    obs = make_obs(model, B).float()
    obs.view(-1)[0] = bad_value
    with pytest.raises(ContractError, match="obs: got 1 non-finite"):
        model.encode(obs)
    action = make_actions(model, B)
    action[1, 0] = bad_value
    with pytest.raises(ContractError, match=r"action: got 1 non-finite.*\(1, 0\)"):
        model.transition(model.initial_state(B), action)


def test_integer_obs_is_rejected(model):
    obs = make_obs(model, B).long()
    with pytest.raises(ContractError) as excinfo:
        model.encode(obs)
    assert "obs" in _message(excinfo) and "torch.int64" in _message(excinfo)
    batch = make_batch(model)
    batch["obs"] = batch["obs"].long()
    with pytest.raises(ContractError, match=r"batch\['obs'\]: got dtype torch.int64"):
        model.loss(batch)


def test_integer_rewards_and_continuous_actions_are_rejected(model):
    batch = make_batch(model)
    batch["rewards"] = torch.zeros(B, T, dtype=torch.int64)
    with pytest.raises(ContractError, match=r"batch\['rewards'\]: got dtype torch.int64"):
        model.loss(batch)
    if model.action_spec.kind == "continuous":
        with pytest.raises(ContractError, match="action: got dtype torch.int64"):
            model.transition(model.initial_state(B),
                             torch.zeros(B, model.action_spec.dim, dtype=torch.int64))


def test_mismatched_batch_sizes_are_rejected(model):
    state = model.initial_state(B)
    with pytest.raises(ContractError, match=rf"action: got batch size {B + 1}, expected {B}"):
        model.transition(state, make_actions(model, B + 1))
    with pytest.raises(ContractError, match="batch size"):
        model.update(state, make_actions(model, B + 1), make_obs(model, B + 1))
    with pytest.raises(ContractError, match="batch size"):
        model.rollout(state, make_actions(model, B + 1, T))
    batch = make_batch(model)
    batch["rewards"] = torch.zeros(B + 1, T)
    with pytest.raises(ContractError) as excinfo:
        model.loss(batch)
    assert "batch['rewards']" in _message(excinfo) and str((B + 1, T)) in _message(excinfo)


def test_time_mismatch_between_batch_keys_is_rejected(model):
    batch = make_batch(model)
    batch["actions"] = make_actions(model, B, T + 1)
    with pytest.raises(ContractError) as excinfo:
        model.loss(batch)
    assert "batch['actions']" in _message(excinfo) and str((B, T + 1)) in _message(excinfo)
    assert f"[{B}, {T}]" in _message(excinfo)
    for key in ("rewards", "is_first"):
        batch = make_batch(model)
        batch[key] = torch.zeros(B, T + 1, dtype=batch[key].dtype)
        with pytest.raises(ContractError, match=rf"batch\['{key}'\].*\[{B}, {T}\]"):
            model.loss(batch)


def test_too_short_sequences_and_wrong_types_are_rejected(model):
    min_length = model.io_contract().min_sequence_length
    if min_length > 1:
        with pytest.raises(ContractError, match=f"sequence length T={min_length - 1}"):
            model.loss(make_batch(model, t=min_length - 1))
    with pytest.raises(ContractError, match="expected a torch.Tensor"):
        model.encode(make_obs(model, B).tolist())
    with pytest.raises(ContractError, match="expected worldflux State"):
        model.transition({"obs": make_obs(model, B)}, make_actions(model, B))
    with pytest.raises(ContractError, match="expected a mapping"):
        model.loss([make_batch(model)])


# -- factory and registry ----------------------------------------------------------------------
def test_unknown_family_suggests_close_match():
    with pytest.raises(RegistryError) as excinfo:
        worldflux.create_world_model("petz", obs_shape=(3,), action_dim=1)
    assert "petz" in str(excinfo.value) and "pets" in str(excinfo.value)
    assert "Did you mean" in str(excinfo.value)


def test_misspelt_config_key_suggests_close_match():
    with pytest.raises(ConfigError) as excinfo:
        worldflux.create_world_model("pets", obs_shape=(3,), action_dim=1, hiden_size=3)
    assert "hiden_size" in str(excinfo.value) and "hidden_size" in str(excinfo.value)


def test_alias_builds_the_same_family():
    model = worldflux.create_world_model("ensemble", obs_shape=(3,), action_dim=1, device="cpu",
                                         hidden_size=8, num_layers=1)
    assert model.family == "pets"
    assert type(model).__name__ == "PETSModel"
    assert model.config.hidden_size == 8


def test_list_models_reports_tiers_and_aliases():
    models = {m["name"]: m for m in worldflux.list_models()}
    assert models["pets"]["tier"] == "reference"
    assert "ensemble" in models["pets"]["aliases"]
    assert all(m["tier"] in ("reference", "experimental", "skeleton") for m in models.values())
    assert all(m["description"] for m in models.values())


def test_factory_requires_shapes():
    with pytest.raises(ConfigError, match="obs_shape is required"):
        worldflux.create_world_model("pets", action_dim=1)
    with pytest.raises(ConfigError, match="action_dim"):
        worldflux.create_world_model("pets", obs_shape=(3,))
    with pytest.raises(ContractError, match="obs_shape"):
        worldflux.create_world_model("pets", obs_shape=(0,), action_dim=1)
