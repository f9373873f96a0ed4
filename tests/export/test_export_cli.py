"""``worldflux export`` end to end on run directories written by ``worldflux train``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from worldflux.cli.main import app
from worldflux.export import OnnxDynamics, OnnxMPCPolicy

runner = CliRunner()
TINY = ["--set", "model.hidden_size=32", "--set", "model.num_layers=2",
        "--set", "model.ensemble_size=3", "--set", "planner.population=24",
        "--set", "planner.iterations=2", "--set", "planner.elites=5",
        "--set", "planner.horizon=5", "--set", "num_particles=4", "--set", "max_epochs=5"]


def _train(out, agent, steps, extra=()):
    result = runner.invoke(app, ["train", agent, "--env", "Pendulum-v1", "--steps", str(steps),
                                 "--seed", "0", "--out", str(out), "--eval-episodes", "1",
                                 "--no-progress", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory):
    # One random episode, one model fit at its end, a checkpoint at step 200.
    return _train(tmp_path_factory.mktemp("export-cli") / "pets", "pets", 200, TINY)


def test_export_policy_and_dynamics_of_a_run(pets_run, tmp_path):
    target = tmp_path / "out" / "pendulum_policy.onnx"
    result = runner.invoke(app, ["export", str(pets_run), "--onnx", str(target)])
    assert result.exit_code == 0, result.output
    assert "onnx.checker ok" in result.output and "max abs difference" in result.output
    assert "step 200" in result.output
    sidecar = json.loads((tmp_path / "out" / "pendulum_policy.onnx.json").read_text())
    assert sidecar["source"]["step"] == 200 and sidecar["source"]["env"] == "Pendulum-v1"
    assert sidecar["planner"]["population"] == 24 and sidecar["planner"]["name"] == "cem"
    assert max(sidecar["validation"]["max_abs_diff"].values()) < 1e-4
    policy = OnnxMPCPolicy(target, seed=0)
    action = policy.act(np.array([np.cos(3.0), np.sin(3.0), 0.0], np.float32))
    assert action.shape == (1,) and -1 <= float(action[0]) <= 1

    model_file = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(pets_run), "--onnx", str(model_file),
                                 "--what", "dynamics", "--device", "cpu", "--opset", "18"])
    assert result.exit_code == 0, result.output
    predicted = OnnxDynamics(model_file).predict(np.zeros((2, 3)), np.zeros((2, 1)))
    assert predicted["next_obs_mean"].shape == (3, 2, 3)
    assert json.loads((tmp_path / "model.onnx.json").read_text())["kind"] == "pets-dynamics"


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_export_errors_are_one_clear_line(pets_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(pets_run / "config.json", empty / "config.json")
    line = _error(runner.invoke(app, ["export", str(empty), "--onnx", str(tmp_path / "a.onnx")]))
    assert "no valid checkpoint to export" in line

    line = _error(runner.invoke(app, ["export", str(tmp_path / "nowhere"), "--onnx",
                                      str(tmp_path / "a.onnx")]))
    assert "config.json: missing" in line

    line = _error(runner.invoke(app, ["export", str(pets_run), "--onnx", str(tmp_path / "a.onnx"),
                                      "--what", "encoder"]))
    assert "--what: got 'encoder'" in line

    line = _error(runner.invoke(app, ["export", str(pets_run), "--onnx", str(tmp_path / "a.onnx"),
                                      "--set", "planner.name=random"]))
    assert "planner.name: got 'random'" in line
    assert not (tmp_path / "a.onnx").exists()


def test_export_of_a_random_agent_run_is_not_supported(tmp_path):
    run = _train(tmp_path / "random", "random", 10)
    line = _error(runner.invoke(app, ["export", str(run), "--onnx", str(tmp_path / "r.onnx")]))
    assert "agent 'random': ONNX export is not supported" in line


def test_export_policy_with_planner_settings_changed(pets_run, tmp_path):
    target = tmp_path / "mppi.onnx"
    result = runner.invoke(app, ["export", str(pets_run), "--onnx", str(target),
                                 "--set", "planner.name=mppi", "--set", "planner.horizon=3",
                                 "--set", "propagation=ts1", "--set", "risk.measure=cvar",
                                 "--set", "risk.alpha=0.5"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(target.with_name("mppi.onnx.json").read_text())
    assert sidecar["planner"]["name"] == "mppi" and sidecar["propagation"] == "ts1"
    assert sidecar["risk"]["measure"] == "cvar" and sidecar["risk"]["alpha"] == 0.5
    assert sidecar["outputs"][1]["shape"] == [3, 1]  # next_mean [H, A]
    assert "member_noise" in [i["name"] for i in sidecar["inputs"]]
    assert max(sidecar["validation"]["max_abs_diff"].values()) < 1e-4
    policy = OnnxMPCPolicy(target, seed=1)
    actions = [policy.act(np.array([np.cos(a), np.sin(a), 0.0], np.float32)) for a in (3.0, 2.9)]
    assert np.all(np.abs(actions) <= 1) and policy.mean.shape == (3, 1)
