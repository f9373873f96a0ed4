"""The command line, driven through typer's CliRunner: a real (tiny) run of the random agent."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import worldflux
from worldflux.cli.main import app
from worldflux.training import latest_checkpoint, verify_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "random-pendulum"
    result = runner.invoke(app, [
        "train", "random", "--env", "Pendulum-v1", "--steps", "300", "--seed", "3",
        "--out", str(out), "--eval-every", "100", "--eval-episodes", "2",
        "--set", "train.checkpoint_every=100", "--set", "train.log_every=100", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "final eval return" in result.output
    return out


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_the_run_directory(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"] == "random" and config["agent_config"] == {}
    assert config["train"]["env"] == "Pendulum-v1" and config["train"]["steps"] == 300
    assert config["train"]["seed"] == 3 and config["train"]["checkpoint_every"] == 100
    assert config["worldflux_version"] == worldflux.__version__

    metrics = _jsonl(run_dir / "metrics.jsonl")
    episodes = [m for m in metrics if "episode/return" in m]
    assert len(episodes) == 1 and episodes[0]["step"] == 200  # Pendulum episodes: 200 steps
    assert episodes[0]["episode/length"] == 200 and math.isfinite(episodes[0]["episode/return"])
    assert all("wall_time" in m and "step" in m for m in metrics)
    assert [m["step"] for m in metrics if "perf/steps_per_s" in m] == [100, 200, 300]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))

    evals = _jsonl(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [200, 300]  # first episode end after 100, then the end
    assert all(len(e["returns"]) == 2 and math.isfinite(e["mean"]) for e in evals)

    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step_00000200", "step_00000300"]
    assert latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step_00000300"
    verify_checkpoint(run_dir / "checkpoints" / "step_00000200")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["episodes"] == 1
    assert summary["final_eval"]["mean"] == pytest.approx(evals[-1]["mean"])
    assert summary["env_steps_per_s"] > 0 and summary["wall_time_s"] > 0
    assert summary["model"] is None  # the random agent has no world model
    assert summary["cli_args"]["agent"] == "random" and summary["cli_args"]["steps"] == 300


def test_eval_writes_eval_json_and_reproduces_the_final_evaluation(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert "±" in result.output
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert math.isfinite(evaluation["mean"]) and len(evaluation["returns"]) == 2
    assert evaluation["step"] == 300 and evaluation["episodes"] == 2
    # Same seeds and the checkpointed generator: the same episodes as the final evaluation.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert evaluation["returns"] == pytest.approx(summary["final_eval"]["returns"])


def test_eval_falls_back_to_the_previous_checkpoint_when_one_is_damaged(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "step_00000300" / "state.json").write_text("{}")
    with pytest.warns(RuntimeWarning, match="step_00000300"):
        result = runner.invoke(app, ["eval", str(copy), "--episodes", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "eval.json").read_text())["step"] == 200


def test_config_file_repeats_a_run(run_dir, tmp_path):
    result = runner.invoke(app, ["train", "random", "--config", str(run_dir / "config.json"),
                                 "--steps", "50", "--out", str(tmp_path / "again"),
                                 "--set", "train.tensorboard=false"])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "again" / "config.json").read_text())["train"]
    assert train["steps"] == 50 and train["seed"] == 3 and train["checkpoint_every"] == 100
    assert not (tmp_path / "again" / "tb").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "planner.nope=3"], "planner.nope"),
        (["--set", "train.stepz=3"], "train.stepz"),
        (["--set", "steps=3"], "train.steps"),
        (["--set", "novalue"], "novalue"),
        (["--steps", "0"], "train.steps"),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_the_key(tmp_path, args, named):
    out = tmp_path / "never"
    result = runner.invoke(app, ["train", "random", "--out", str(out), *args])
    assert result.exit_code == 2
    assert named in result.output and "error:" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_existing_run_directory_and_unknown_agent_are_refused(run_dir, tmp_path):
    result = runner.invoke(app, ["train", "random", "--out", str(run_dir), "--steps", "5"])
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = runner.invoke(app, ["train", "randon", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown agent 'randon'" in result.output
    assert "random" in result.output  # close match suggested


def test_eval_of_a_missing_run_exits_2(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "config.json" in result.output


def test_models_lists_families_and_agents():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "World-model families" in result.output and "Agents" in result.output
    for family in worldflux.list_models():
        assert family["name"] in result.output
    assert "random" in result.output and "baseline" in result.output
    assert "ppo" in result.output and "alphazero" in result.output  # fast RL, same command


def test_envs_lists_known_ids_and_filters():
    result = runner.invoke(app, ["envs"])
    assert result.exit_code == 0, result.output
    assert "Pendulum-v1" in result.output and "CartPole-v1" in result.output
    result = runner.invoke(app, ["envs", "cartpole"])
    assert "CartPole-v1" in result.output and "Pendulum-v1" not in result.output


def test_demo_fails_clearly_when_its_agent_is_missing(monkeypatch, tmp_path):
    import worldflux.training.demo as demo

    monkeypatch.setattr(demo, "DEMO_AGENT", "not-an-agent")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert "demo: needs the 'not-an-agent' agent" in result.output
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("command", [[], ["models"], ["envs"], ["train"], ["eval"], ["demo"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_worldflux_runs():
    result = subprocess.run([sys.executable, "-m", "worldflux", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert worldflux.__version__ in result.stdout


@pytest.mark.slow
def test_demo_runs_the_nav3d_pipeline_end_to_end_on_a_tiny_budget(monkeypatch, tmp_path):
    import worldflux.training.demo as demo

    monkeypatch.setattr(demo, "DEMO_STEPS", 430)
    monkeypatch.setattr(demo, "DEMO_EVAL_EPISODES", 2)
    monkeypatch.setattr(demo, "DEMO_FIDELITY_EPISODES", 2)
    monkeypatch.setattr(demo, "DEMO_FIDELITY_HORIZON", 10)
    monkeypatch.setattr(demo, "DEMO_AGENT_OVERRIDES", {
        **demo.DEMO_AGENT_OVERRIDES, "planner.population": "40", "planner.elites": "5",
        "planner.iterations": "2", "num_particles": "8", "model.hidden_size": "64"})
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert result.exit_code == 0, result.output
    for label in ("random actions", "scripted controller", "risk-neutral", "risk-averse"):
        assert label in result.output
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "Policies on the same evaluation episodes" in report and "data:image/png" in report
    assert "data:image/gif" in report  # a flight, real next to imagined
    assert "open-loop fidelity" in result.output
