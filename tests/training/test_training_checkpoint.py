"""Checkpoints: lossless round trip without pickle, atomic layout, damaged ones skipped."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from worldflux.core.errors import CheckpointError
from worldflux.training.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)


def _state() -> dict:
    generator = np.random.default_rng(7)
    generator.random(3)
    return {
        "agent": {
            "model": {"net.0.weight": torch.randn(4, 3), "steps": torch.tensor(12)},
            "optimizer": {"state": [torch.ones(2, dtype=torch.float64), {"lr": 1e-3}]},
            "obs_mean": np.linspace(0, 1, 5, dtype=np.float64),
            "mask": np.array([True, False, True]),
            "frame": np.arange(12, dtype=np.uint8).reshape(3, 2, 2),
            "rng": generator,
            "rng_state": generator.bit_generator.state,
            "count": 3, "ratio": 0.25, "flag": False, "name": "pets", "nothing": None,
            "numpy_scalar": np.float32(1.5),
        },
        "loop": {"env_step": 200, "rng": capture_rng_state()},
    }


def test_round_trip_preserves_tensors_arrays_numbers_and_generators(tmp_path):
    state = _state()
    path = save_checkpoint(tmp_path, 200, state)
    assert path == checkpoint_path(tmp_path, 200) == tmp_path / "checkpoints" / "step_00000200"
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json", "state.json", "tensors.safetensors"]

    loaded = load_checkpoint(path)
    assert loaded["step"] == 200
    agent, expected = loaded["state"]["agent"], state["agent"]
    assert torch.equal(agent["model"]["net.0.weight"], expected["model"]["net.0.weight"])
    assert agent["model"]["steps"].dtype == torch.int64 and int(agent["model"]["steps"]) == 12
    assert agent["optimizer"]["state"][0].dtype == torch.float64
    assert agent["optimizer"]["state"][1] == {"lr": 1e-3}
    for key in ("obs_mean", "mask", "frame"):
        assert isinstance(agent[key], np.ndarray)
        assert agent[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(agent[key], expected[key])
    assert agent["frame"].shape == (3, 2, 2)
    assert (agent["count"], agent["ratio"], agent["flag"], agent["name"], agent["nothing"]) == (
        3, 0.25, False, "pets", None)
    assert agent["numpy_scalar"] == 1.5
    # The generator continues exactly where the saved one was.
    assert isinstance(agent["rng"], np.random.Generator)
    np.testing.assert_array_equal(agent["rng"].random(4), expected["rng"].random(4))
    assert agent["rng_state"] == expected["rng_state"]
    # No pickle anywhere: the non-tensor part is plain JSON.
    tree = json.loads((path / "state.json").read_text())
    assert tree["state"]["agent"]["model"]["net.0.weight"] == {"__tensor__": "agent/model/net.0.weight"}


def test_rng_states_restore_torch_numpy_and_python(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    assert load_checkpoint(checkpoint_path(tmp_path, 1))["state"]["rng"]["torch"].dtype == torch.uint8

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(checkpoint_path(tmp_path, 1))["state"]["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_damaged_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path):
    save_checkpoint(tmp_path, 100, {"w": torch.zeros(3)})
    newest = save_checkpoint(tmp_path, 200, {"w": torch.ones(3)})
    assert latest_checkpoint(tmp_path) == newest

    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip one bit of the tensor payload
    (newest / "tensors.safetensors").write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match="checksum mismatch"):
        verify_checkpoint(newest)
    with pytest.raises(CheckpointError, match="tensors.safetensors"):
        load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="step_00000200"):
        previous = latest_checkpoint(tmp_path)
    assert previous == checkpoint_path(tmp_path, 100)
    assert torch.equal(load_checkpoint(previous)["state"]["w"], torch.zeros(3))


def test_missing_manifest_and_leftover_temp_dirs(tmp_path):
    first = save_checkpoint(tmp_path, 1, {"x": 1})
    second = save_checkpoint(tmp_path, 2, {"x": 2})
    (second / "manifest.json").unlink()
    (tmp_path / "checkpoints" / ".tmp-step_00000003-abc").mkdir()  # a crash mid-write
    assert list_checkpoints(tmp_path) == [first, second]
    with pytest.warns(RuntimeWarning, match="manifest.json"):
        assert latest_checkpoint(tmp_path) == first
    (first / "state.json").write_text("{}")
    with pytest.warns(RuntimeWarning):
        assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "no-such-run") is None


def test_optimizer_state_with_integer_keys_round_trips(tmp_path):
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    loaded = load_checkpoint(save_checkpoint(tmp_path, 1, {"optim": saved}))["state"]["optim"]
    assert sorted(loaded["state"]) == [0, 1]
    assert torch.equal(loaded["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded)  # accepted as a torch optimizer state
    assert fresh.state_dict()["param_groups"][0]["params"] == [0, 1]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 5, {"x": 1})
    path = save_checkpoint(tmp_path, 5, {"x": 2})
    assert load_checkpoint(path)["state"]["x"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005"]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"a": {"b": object()}}, "'a/b'"),
        ({"a/b": 1}, "without '/'"),
        ({"a": {3: 1, "b": 2}}, "got key 3"),
        ({"names": np.array(["x", "y"])}, "'names'"),
    ],
)
def test_unsupported_state_is_refused_naming_the_entry(tmp_path, state, message):
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(tmp_path, 1, state)
    assert list_checkpoints(tmp_path) == []
    root = tmp_path / "checkpoints"
    assert not root.exists() or not any(root.iterdir())  # nothing half-written is left


def test_prune_keeps_the_newest_and_only_after_the_newest_verifies(tmp_path):
    paths = [save_checkpoint(tmp_path, step, {"step": step}) for step in (1, 2, 3, 4, 5)]
    assert prune_checkpoints(tmp_path, 0) == [] and list_checkpoints(tmp_path) == paths
    # Step 4 does not count (say, taken mid-episode): kept while newer than the 2nd that does.
    deleted = prune_checkpoints(tmp_path, 2, counts=lambda path: path.name != "step_00000004")
    assert deleted == [paths[1], paths[0]]
    assert list_checkpoints(tmp_path) == paths[2:]
    assert prune_checkpoints(tmp_path, 3) == []

    newest = save_checkpoint(tmp_path, 6, {"step": 6})
    (newest / "state.json").write_text("{}")  # a damaged write must not cost the good ones
    with pytest.warns(RuntimeWarning, match="does not verify"):
        assert prune_checkpoints(tmp_path, 1) == []
    assert list_checkpoints(tmp_path) == [*paths[2:], newest]
