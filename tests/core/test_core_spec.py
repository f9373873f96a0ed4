"""Specs and containers: discrete actions, spec checks, fingerprints, State helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.core import ActionSpec, ContractError, IOContract, ObservationSpec, State


def test_discrete_indices_become_one_hot_and_are_range_checked():
    spec = ActionSpec(3, "discrete")
    out = spec.to_tensor(torch.tensor([0, 2]))
    assert torch.equal(out, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ContractError, match=r"indices in \[0, 3\], expected values in \[0, 2\]"):
        spec.to_tensor(torch.tensor([0, 3]))
    with pytest.raises(ContractError, match="dtype bool"):
        spec.to_tensor(torch.tensor([True]))


def test_contract_accepts_discrete_indices_in_batches():
    contract = IOContract(ObservationSpec((2,)), ActionSpec(4, "discrete"))
    actions = contract.validate_actions(torch.zeros(3, 5, dtype=torch.long), lead=2)
    assert actions.shape == (3, 5, 4)
    with pytest.raises(ContractError, match="index shape"):
        contract.validate_actions(torch.zeros(3, dtype=torch.long), lead=2)


@pytest.mark.parametrize("kwargs,match", [
    ({"dim": 0}, "action_dim: got 0"),
    ({"dim": 2, "kind": "box"}, "action kind: got 'box'"),
    ({"dim": 2, "low": 1.0, "high": 1.0}, "low=1.0, high=1.0"),
])
def test_action_spec_checks(kwargs, match):
    with pytest.raises(ContractError, match=match):
        ActionSpec(**kwargs)


def test_observation_spec_checks():
    assert ObservationSpec([3, 4]).shape == (3, 4)
    with pytest.raises(ContractError, match="obs_shape"):
        ObservationSpec(())
    with pytest.raises(ContractError, match="obs dtype: got 'int8'"):
        ObservationSpec((3,), "int8")  # type: ignore[arg-type]


def test_uint8_observations_accept_images_and_numpy():
    contract = IOContract(ObservationSpec((3, 8, 8), "uint8"), ActionSpec(1))
    images = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    assert contract.validate_obs(images).dtype == torch.uint8
    with pytest.raises(ContractError, match="expected uint8 images or float"):
        contract.validate_obs(torch.zeros(2, 3, 8, 8, dtype=torch.int32))


def test_fingerprint_depends_on_the_contract_only():
    a = IOContract(ObservationSpec((3,)), ActionSpec(1))
    assert a.fingerprint() == IOContract(ObservationSpec((3,)), ActionSpec(1)).fingerprint()
    assert a.fingerprint() != IOContract(ObservationSpec((4,)), ActionSpec(1)).fingerprint()
    assert a.fingerprint() != IOContract(ObservationSpec((3,)), ActionSpec(2)).fingerprint()


def test_non_binary_flags_are_rejected():
    contract = IOContract(ObservationSpec((2,)), ActionSpec(1))
    batch = {"obs": torch.zeros(2, 3, 2), "actions": torch.zeros(2, 3, 1),
             "rewards": torch.zeros(2, 3), "terminated": torch.zeros(2, 3),
             "truncated": torch.zeros(2, 3, dtype=torch.bool), "is_first": torch.zeros(2, 3)}
    out = contract.validate_batch(batch)
    assert out["terminated"].dtype == torch.bool and out["is_first"].dtype == torch.bool
    batch["terminated"] = torch.full((2, 3), 0.5)
    with pytest.raises(ContractError, match=r"batch\['terminated'\]: got non-binary"):
        contract.validate_batch(batch)


def test_state_helpers():
    state = State({"x": torch.zeros(2, 3), "m": torch.arange(2)}, {"family": "f"})
    assert state.batch_size == 2 and "x" in state and set(state) == {"x", "m"}
    replaced = state.replace(x=torch.ones(2, 3))
    assert torch.equal(state["x"], torch.zeros(2, 3)) and torch.equal(replaced["x"], torch.ones(2, 3))
    stacked = State.stack([state, replaced], dim=1)
    assert stacked["x"].shape == (2, 2, 3) and stacked.meta == {"family": "f"}
    with pytest.raises(ValueError, match="empty list"):
        State.stack([])
