"""``worldflux train --resume``: option rules (the kill-and-resume runs are in tests/training)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from worldflux.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-resume") / "run"
    result = runner.invoke(app, [
        "train", "random", "--steps", "200", "--seed", "5", "--out", str(out),
        "--eval-episodes", "1", "--set", "train.tensorboard=false", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    return out


def test_resume_refuses_conflicting_settings(run_dir, tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--seed", "6"])
    assert result.exit_code == 2 and "train.seed: saved 5, given 6" in result.output
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--config",
                                 str(run_dir / "config.json")])
    assert result.exit_code == 2 and "--config" in result.output
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--out" in result.output
    result = runner.invoke(app, ["train", "pets", "--resume", str(run_dir)])
    assert result.exit_code == 2 and "run of agent 'random'" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "none")])
    assert result.exit_code == 2 and "config.json is missing" in result.output
    result = runner.invoke(app, ["train", "--steps", "10"])
    assert result.exit_code == 2 and "AGENT" in result.output


def test_resume_extends_a_finished_run(run_dir):
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--steps", "400",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 400 and summary["resumed_from"].endswith("step_00000200")
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--no-progress"])
    assert result.exit_code == 0 and "400 / 2" in result.output  # finished: nothing to do
