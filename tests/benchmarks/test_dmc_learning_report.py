"""The DMC learning report accumulates seeds trained in separate sessions."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("matplotlib")

import benchmarks.common as common  # noqa: E402
import benchmarks.dmc_learning as dmc_learning  # noqa: E402
from benchmarks.dmc_learning import AGENTS, report  # noqa: E402


def _fake_run(run_dir, evals: list[tuple[int, float]], precision: str) -> None:
    """A run directory as the training loop leaves it: evaluations, metrics and config."""
    run_dir.mkdir(parents=True)
    (run_dir / "eval.jsonl").write_text("".join(
        json.dumps({"step": step, "mean": mean, "std": 1.0, "returns": [mean] * 5}) + "\n"
        for step, mean in evals))
    (run_dir / "metrics.jsonl").write_text(json.dumps(
        {"step": evals[-1][0], "elapsed": 60.0, "episode/return": evals[-1][1]}) + "\n")
    (run_dir / "config.json").write_text(json.dumps(
        {"agent_config": {"train_ratio": 128}, "train": {"precision": precision}}))


def test_report_keeps_committed_seeds_whose_run_dirs_are_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    played = []

    def fake_random_return(train, seed, episodes):
        played.append((train["env"], train["action_repeat"], seed, episodes))
        return 10.0 * (seed + 1)

    monkeypatch.setattr(dmc_learning, "random_return", fake_random_return)
    bench = AGENTS["dreamerv3_dmc"]
    settings = {"training_command": "python -m benchmarks dreamerv3_dmc --seeds 0"}
    session1 = tmp_path / "session1"
    _fake_run(session1 / "seed0", [(10_000, 100.0), (20_000, 300.0)], "bf16")
    (session1 / "seed0.settings.json").write_text(json.dumps(settings))
    first = report("dreamerv3_dmc", bench, "cartpole-swingup", False, session1, time.time(),
                   settings, tag="bf16")
    assert first.name == "dreamerv3_dmc_cartpole_swingup_bf16.json"
    assert first.with_suffix(".png").is_file()

    # A later session on a fresh machine: seed 0's directory is gone, seed 1 is new.
    session2 = tmp_path / "session2"
    _fake_run(session2 / "seed1", [(10_000, 200.0), (20_000, 500.0)], "bf16")
    second = report("dreamerv3_dmc", bench, "cartpole-swingup", False, session2, time.time(),
                    settings, tag="bf16")
    runs = json.loads(second.read_text())["runs"]
    assert sorted(runs) == ["seed0", "seed1"]
    assert runs["seed0"]["kept_from_previous_report"] is True
    assert runs["seed0"]["settings"] == settings  # its own command survives
    assert runs["seed0"]["precision"] == "bf16"
    assert "kept_from_previous_report" not in runs["seed1"]
    table = json.loads(second.read_text())["mean_at_step"]
    assert table["20000"] == {"mean": 400.0, "seeds": [300.0, 500.0]}
    # The random policy on each seed's own evaluation episodes (the settings' 5 by default).
    baseline = json.loads(second.read_text())["random_policy"]
    assert baseline["seeds"] == {"seed0": 10.0, "seed1": 20.0}
    assert baseline["mean"] == 15.0
    assert played[-2:] == [("dmc/cartpole-swingup", 2, 0, 5), ("dmc/cartpole-swingup", 2, 1, 5)]

    # A run directory present again wins over the committed record.
    _fake_run(session2 / "seed0", [(10_000, 50.0)], "fp32")
    third = report("dreamerv3_dmc", bench, "cartpole-swingup", False, session2, time.time(),
                   settings, tag="bf16")
    runs = json.loads(third.read_text())["runs"]
    assert "kept_from_previous_report" not in runs["seed0"]
    assert [e["mean"] for e in runs["seed0"]["evals"]] == [50.0]


def test_pixel_runs_take_each_agents_frame_stack(tmp_path, monkeypatch):
    """TD-MPC2 sees the last 3 frames (official pixel wrapper); DreamerV3 one frame (RSSM)."""
    calls = {}

    def fake_run_seeds(agent, train, overrides, seeds, **kwargs):
        calls[agent] = dict(train)

    monkeypatch.setattr(dmc_learning, "run_seeds", fake_run_seeds)
    for name in ("tdmpc2_dmc", "dreamerv3_dmc"):
        dmc_learning.train_seeds(AGENTS[name], "cartpole-balance", [0], 100, "cpu", {}, 50, 1,
                                 True, tmp_path / name)
    assert calls["tdmpc2"]["obs_type"] == "image" and calls["tdmpc2"]["frame_stack"] == 3
    assert calls["dreamerv3"]["obs_type"] == "image" and "frame_stack" not in calls["dreamerv3"]
    dmc_learning.train_seeds(AGENTS["tdmpc2_dmc"], "cartpole-balance", [0], 100, "cpu", {}, 50,
                             1, False, tmp_path / "state")
    assert "frame_stack" not in calls["tdmpc2"] and "obs_type" not in calls["tdmpc2"]


def test_report_sets_a_final_evaluation_against_random_play_on_the_same_episodes(
        tmp_path, monkeypatch):
    """``worldflux eval RUN -n N`` leaves ``eval.json``; the report plays random actions on the
    same N resets and says whether every learned episode beat every random one."""
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(dmc_learning, "random_return", lambda train, seed, episodes: 10.0)
    played = []

    def fake_random_returns(train, seed, episodes, eval_seed=None):
        played.append((train["env"], seed, episodes, eval_seed))
        return [100.0 + seed, 300.0, 200.0]

    monkeypatch.setattr(dmc_learning, "random_returns", fake_random_returns)
    work = tmp_path / "runs"
    for seed, returns in ((0, [400.0, 500.0, 600.0]), (1, [250.0, 700.0, 700.0])):
        _fake_run(work / f"seed{seed}", [(1_000, 150.0), (2_000, 450.0)], "bf16")
        (work / f"seed{seed}" / "eval.json").write_text(json.dumps(
            {"mean": sum(returns) / 3, "std": 5.0, "returns": returns, "episodes": 3,
             "seed": 10_000 + seed, "step": 2_000, "checkpoint": "x"}))
    path = report("dreamerv3_dmc", AGENTS["dreamerv3_dmc"], "cartpole-balance", True, work,
                  time.time(), {}, tag="t")
    result = json.loads(path.read_text())
    assert played == [("dmc/cartpole-balance", 0, 3, 10_000),
                      ("dmc/cartpole-balance", 1, 3, 10_001)]
    final0 = result["runs"]["seed0"]["final_eval"]
    assert final0["mean"] == 500.0 and (final0["min"], final0["max"]) == (400.0, 600.0)
    assert final0["random_same_episodes"] == {"mean": 200.0, "min": 100.0, "max": 300.0}
    summary = result["final_evaluation"]
    assert summary["seeds"] == 2 and summary["mean"] == 525.0
    assert summary["random_mean"] == 200.2 and summary["ratio_to_random"] == 2.62
    # Seed 1's worst episode (250) is below seed 0's best random one (300).
    assert summary["every_learned_episode_above_every_random_one"] is False


def test_a_runs_final_evaluations_before_an_extension_stay_in_its_curve(tmp_path):
    """Extending a run cuts its final evaluation from eval.jsonl (the loop keeps it in
    eval_finals.jsonl); the report's curve still has that point, marked."""
    from benchmarks.learning import compact_run

    run = tmp_path / "seed0"
    _fake_run(run, [(4_000, 100.0), (8_000, 200.0), (12_000, 400.0)], "fp32")
    (run / "eval_finals.jsonl").write_text(
        json.dumps({"step": 10_000, "mean": 300.0, "std": 2.0, "returns": [300.0] * 5,
                    "final": True}) + "\n"
        + json.dumps({"step": 8_000, "mean": 999.0, "std": 0.0, "returns": [999.0],
                      "final": True}) + "\n")  # a step the longer run evaluated wins
    evals = compact_run(run)["evals"]
    assert [(e["step"], e["mean"]) for e in evals] == [(4_000, 100.0), (8_000, 200.0),
                                                       (10_000, 300.0), (12_000, 400.0)]
    assert [e.get("final_before_extension", False) for e in evals] == [False, False, True, False]
