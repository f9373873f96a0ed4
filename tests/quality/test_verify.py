"""``verify`` and ``worldflux verify`` end to end: every reference family, a real tiny run, a saved
model, and the failure paths (non-finite metrics, a damaged model, a family that never learns)."""

from __future__ import annotations

import json
import shutil

import pytest
from quality_models import TinyLinearModel
from typer.testing import CliRunner

import worldflux
from worldflux.cli.main import app
from worldflux.core import CheckpointError, ConfigError
from worldflux.quality import GATES, SmokeResult, verify

runner = CliRunner()
REFERENCE_FAMILIES = [m["name"] for m in worldflux.list_models() if m["tier"] == "reference"]


class NeverLearns(TinyLinearModel):
    """A family whose smoke task never learns."""

    @classmethod
    def smoke_task(cls, seed, quick=True):
        return SmokeResult(False, 1.0, 0.2, f"seed {seed}: error ratio 1.0 (must be < 0.2)")


def _invoke(*args: str):
    return runner.invoke(app, ["verify", *args])


def test_the_reference_families_are_pets():
    assert "pets" in REFERENCE_FAMILIES


@pytest.mark.parametrize("family", REFERENCE_FAMILIES)
def test_every_reference_family_passes_the_quick_gates(family, tmp_path):
    out = tmp_path / "report.json"
    result = _invoke(family, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "all gates passed" in result.output
    report = json.loads(out.read_text())
    assert report["kind"] == "family" and report["family"] == family and report["quick"] is True
    assert report["passed"] is True and report["failed"] == []
    gates = {g["name"]: g for g in report["gates"]}
    assert list(gates) == list(GATES)
    assert gates["finite_metrics"]["value"] == 0.0
    assert gates["save_load_parity"]["value"] == 0.0
    assert gates["loss_decrease"]["value"] >= gates["loss_decrease"]["threshold"] == 0.01
    assert gates["seed_success"]["value"] >= 0.8
    assert len(gates["seed_success"]["info"]["seeds"]) == 5


def test_a_tiny_pets_run_passes(pets_run):
    report = verify(pets_run, seeds=2)
    assert report.passed, report.to_dict()
    assert report.kind == "run" and report.family == "pets"
    assert report.model_source == f"final model {pets_run / 'model'}"
    finite = report.gate("finite_metrics")
    assert finite.info["numbers_checked"] > 10 and "metrics.jsonl" in finite.detail
    loss = report.gate("loss_decrease")
    assert "1 replay episodes (201 rows)" in loss.detail and loss.info["steps"] == 60
    assert report.gate("seed_success").value == 1.0


def test_a_saved_model_directory_passes(pets_run, tmp_path):
    model_dir = shutil.copytree(pets_run / "model", tmp_path / "model")
    report = verify(model_dir, seeds=1)
    assert report.passed and report.kind == "model"
    assert "synthetic" in report.gate("loss_decrease").detail


def test_null_in_metrics_fails_finite_metrics_and_exits_1(pets_run, tmp_path):
    run = shutil.copytree(pets_run, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    key = next(k for k, v in record.items() if isinstance(v, float) and k != "wall_time")
    record[key] = None  # how the logger writes a NaN
    lines[1] = json.dumps(record)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.json"
    result = _invoke(str(run), "--seeds", "1", "--json", str(out))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "failed: finite_metrics" in result.output
    report = json.loads(out.read_text())
    gate = next(g for g in report["gates"] if g["name"] == "finite_metrics")
    assert gate["passed"] is False and gate["value"] == 1.0
    assert f"metrics.jsonl line 2 (step {record['step']}): '{key}' is null" in gate["detail"]
    assert report["failed"] == ["finite_metrics"]  # the other gates still ran and passed


def test_a_damaged_saved_model_is_a_checkpoint_error_and_exits_2(pets_run, tmp_path):
    model_dir = shutil.copytree(pets_run / "model", tmp_path / "model")
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: checksum mismatch"):
        verify(model_dir)
    result = _invoke(str(model_dir))
    assert result.exit_code == 2
    assert "checksum mismatch" in result.output


def test_a_family_that_never_learns_fails_seed_success(register_family, tmp_path):
    register_family("test-never-learns", NeverLearns)
    out = tmp_path / "report.json"
    result = _invoke("test-never-learns", "--seeds", "3", "--json", str(out))
    assert result.exit_code == 1, result.output
    assert "failed: seed_success" in result.output
    report = json.loads(out.read_text())
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["seed_success"]["value"] == 0.0 and gates["seed_success"]["threshold"] == 0.8
    assert "0/3 seeds learned" in gates["seed_success"]["detail"]
    assert all(gates[name]["passed"] for name in GATES[:3])


def test_a_run_without_a_world_model_skips_the_model_gates(tmp_path):
    from worldflux.training import TrainConfig, train

    config = TrainConfig(env="Pendulum-v1", steps=200, seed=0, eval_episodes=1,
                         tensorboard=False, device="cpu")
    train("random", config, {}, tmp_path / "random", progress=False)
    report = verify(tmp_path / "random", seeds=1)
    assert report.passed and report.family is None
    assert report.gate("finite_metrics").info["numbers_checked"] > 0
    assert [g.status for g in report.gates] == ["pass", "skip", "skip", "skip"]


def test_targets_that_are_neither_run_model_nor_family_exit_2(tmp_path):
    with pytest.raises(ConfigError, match="not a registered family.*Did you mean: pets"):
        verify("pest")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="a file, expected"):
        verify(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="seeds: got 0"):
        verify("pets", seeds=0)
    result = _invoke(str(tmp_path))
    assert result.exit_code == 2
    assert "neither a run directory" in result.output


def test_help_explains_every_gate():
    result = runner.invoke(app, ["verify", "--help"], terminal_width=100)
    assert result.exit_code == 0
    for gate in GATES:
        assert f"{gate}:" in result.output
