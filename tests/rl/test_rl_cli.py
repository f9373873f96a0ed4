"""``worldflux train ppo|alphazero`` writes a run directory like the other agents."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from worldflux.cli.main import app


def test_train_ppo_on_the_puzzle_writes_a_run(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "ppo", "--env", "puzzle/sliding-3x3", "--steps", "4096", "--seed", "1",
        "--eval-episodes", "20", "--out", str(out), "--no-progress",
        "--set", "env.depth=3", "--set", "num_envs=64", "--set", "rollout_steps=32",
        "--set", "train.tensorboard=false", "--set", "train.checkpoint_every=1",
        "--set", "train.export_onnx=false"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["agent"] == "ppo" and config["train"]["env_options"] == {"depth": 3}
    assert config["agent_config"]["num_envs"] == 64
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "loss/policy" in json.loads(lines[0])
    assert len(list((out / "checkpoints").iterdir())) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4096 and len(summary["final_eval"]["returns"]) == 20


def test_train_alphazero_and_bad_settings(tmp_path):
    out = tmp_path / "az"
    result = CliRunner().invoke(app, [
        "train", "alphazero", "--env", "game/tictactoe", "--steps", "200",
        "--eval-episodes", "10", "--out", str(out), "--no-progress",
        "--set", "games_per_iteration=32", "--set", "mcts.simulations=8",
        "--set", "train_steps=5", "--set", "train.tensorboard=false"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == "alphazero" and summary["final_eval"]["episodes"] == 10
    assert (out / "policy.onnx").is_file() and (out / "policy.onnx.json").is_file()
    bad = CliRunner().invoke(app, ["train", "ppo", "--env", "CartPole-v1", "--out",
                                   str(tmp_path / "bad"), "--set", "no_such_field=1"])
    assert bad.exit_code == 2 and "no_such_field" in bad.output
    bad = CliRunner().invoke(app, ["train", "alphazero", "--env", "CartPole-v1", "--out",
                                   str(tmp_path / "bad2")])
    assert bad.exit_code == 2 and "AlphaZero runs on" in bad.output


def test_a_ppo_run_resumes_from_its_newest_checkpoint(tmp_path):
    import shutil

    out = tmp_path / "run"
    common = ["--eval-episodes", "5", "--no-progress", "--set", "env.depth=3", "--set",
              "num_envs=64", "--set", "rollout_steps=32", "--set", "train.tensorboard=false",
              "--set", "train.checkpoint_every=1", "--set", "train.export_onnx=false"]
    result = CliRunner().invoke(app, ["train", "ppo", "--env", "puzzle/sliding-3x3", "--steps",
                                      "4096", "--seed", "1", "--out", str(out), *common])
    assert result.exit_code == 0, result.output
    # A crash after the first update: only its checkpoint survives.
    checkpoints = sorted((out / "checkpoints").iterdir())
    for path in checkpoints[1:]:
        shutil.rmtree(path)
    before = len((out / "metrics.jsonl").read_text().splitlines())
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumed = [line for line in lines[before:] if "loss/policy" in line]
    # One more update, from 2048 to 4096 env steps: the run continued, it did not restart.
    assert [line["env_steps"] for line in resumed] == [4096.0]
    assert json.loads((out / "summary.json").read_text())["steps"] == 4096
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--steps", "6144",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 6144
