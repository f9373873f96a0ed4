"""Crash-safe resume: a killed run continues from its newest valid checkpoint and records
exactly what the uninterrupted run records; non-finite losses stop a run cleanly."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from worldflux.agents import AgentRegistry
from worldflux.agents.base import Agent, NonFiniteGuard, NonFiniteLossError
from worldflux.core.errors import ConfigError
from worldflux.core.types import LossOutput
from worldflux.training import TrainConfig, latest_checkpoint, list_checkpoints, train

# Fields that measure time, not training: they may differ between two runs.
TIMING_KEYS = {"wall_time", "elapsed", "perf/steps_per_s"}

PETS_TINY = ["model.hidden_size=32", "model.num_layers=2", "planner.population=32",
             "planner.iterations=2", "planner.elites=4", "num_particles=4", "seed_steps=50"]


@dataclass
class SamplerConfig:
    """Test agent config."""


@AgentRegistry.register("test-resume-sampler", SamplerConfig, tier="skeleton")
class SamplerAgent(Agent):
    """Random actions; every update samples the buffer, so its rows and sampler state matter."""

    def act(self, obs, *, explore):
        return self.random_action()

    def update(self, buffer, *, env_step, episode_done):
        batch = buffer.sample_transitions(4)
        noise = float(torch.rand(()))  # the global torch generator must be restored too
        return {"sampled_reward": float(batch.rewards.sum()) + noise,
                "sampled_obs": float(batch.next_obs.sum())}

    def state_dict(self):
        return {"rng": self.rng}

    def load_state_dict(self, state):
        self.rng = state["rng"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _records(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl and eval.jsonl without the timing fields."""
    def strip(rows):
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]
    return strip(_jsonl(run_dir / "metrics.jsonl")), strip(_jsonl(run_dir / "eval.jsonl"))


def _assert_same_run(resumed: Path, reference: Path) -> None:
    metrics, evals = _records(resumed)
    ref_metrics, ref_evals = _records(reference)
    returns = [(m["step"], m["episode/return"]) for m in metrics if "episode/return" in m]
    ref_returns = [(m["step"], m["episode/return"]) for m in ref_metrics if "episode/return" in m]
    assert returns == ref_returns
    assert evals == ref_evals  # every evaluation, the final one included, bit for bit
    assert metrics == ref_metrics
    steps = [m["step"] for m in metrics]
    assert steps == sorted(steps)
    assert len({m["step"] for m in metrics if "episode/return" in m}) == len(returns)
    summary, ref_summary = (json.loads((d / "summary.json").read_text())
                            for d in (resumed, reference))
    assert summary["final_eval"] == ref_summary["final_eval"]
    assert summary["steps"] == ref_summary["steps"]
    assert summary["episodes"] == ref_summary["episodes"]
    files = sorted(p.name for p in (resumed / "replay").iterdir())
    assert files == sorted(p.name for p in (reference / "replay").iterdir())
    for name in files:
        with np.load(resumed / "replay" / name) as a, np.load(reference / "replay" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in b.files)


# -- in-process: fallback over a damaged checkpoint, pending metric means, sampler state --------
def test_damaged_newest_checkpoint_falls_back_and_reproduces_the_run(tmp_path, caplog):
    config = TrainConfig(env="Pendulum-v1", steps=1000, seed=4, eval_every=300,
                         checkpoint_every=200, eval_episodes=1, log_every=300, tensorboard=False)
    train("test-resume-sampler", config, {}, tmp_path / "reference", progress=False)

    run = tmp_path / "run"
    train("test-resume-sampler", config, {}, run, progress=False)
    # As if killed during the final evaluation, with the final checkpoint damaged on disk.
    (run / "summary.json").unlink()
    state = run / "checkpoints" / "step_00001000" / "state.json"
    state.write_text(state.read_text().replace('"env_step": 1000', '"env_step": 1001'))
    with caplog.at_level(logging.WARNING, logger="worldflux"):
        summary = train("test-resume-sampler", None, None, run, progress=False, resume=True)
    assert "step_00001000" in caplog.text and "damaged" in caplog.text
    assert summary["resumed_from"].endswith("step_00000800")
    assert (run / "checkpoints" / "discarded" / "step_00001000").is_dir()
    assert latest_checkpoint(run).name == "step_00001000"  # written again by the resumed run
    _assert_same_run(run, tmp_path / "reference")


def test_a_run_killed_during_an_evaluation_resumes_at_that_step(tmp_path, monkeypatch):
    """Where an evaluation and a checkpoint are due at the same step, a checkpoint is taken
    before the evaluation as well: a kill during the evaluation costs the evaluation only, and
    the resumed run (evaluation first, then the pending periodic log) records exactly what the
    uninterrupted one does."""
    from worldflux.training import loop

    config = TrainConfig(env="Pendulum-v1", steps=1000, seed=4, eval_every=400,
                         checkpoint_every=200, eval_episodes=1, log_every=200, tensorboard=False)
    train("test-resume-sampler", config, {}, tmp_path / "reference", progress=False)

    evaluate = loop._evaluate

    def killed_while_evaluating_step_800(run, *, final=False):
        if run.state.env_step == 800 and not final:
            raise KeyboardInterrupt
        return evaluate(run, final=final)

    run = tmp_path / "run"
    monkeypatch.setattr(loop, "_evaluate", killed_while_evaluating_step_800)
    with pytest.raises(KeyboardInterrupt):
        train("test-resume-sampler", config, {}, run, progress=False)
    monkeypatch.setattr(loop, "_evaluate", evaluate)
    assert latest_checkpoint(run).name == "step_00000800"
    assert [e["step"] for e in _jsonl(run / "eval.jsonl")] == [400]

    summary = train("test-resume-sampler", None, None, run, progress=False, resume=True)
    assert summary["resumed_from"].endswith("step_00000800")
    assert [e["step"] for e in _jsonl(run / "eval.jsonl")] == [400, 800, 1000]
    _assert_same_run(run, tmp_path / "reference")


def test_an_extended_run_evaluates_as_the_longer_run_would(tmp_path):
    """A run extended from its final step, an evaluation step too, evaluates there once and
    logs there once, as the run asked for the longer budget from the start does."""
    config = TrainConfig(env="Pendulum-v1", steps=1200, seed=4, eval_every=400,
                         checkpoint_every=200, eval_episodes=1, log_every=200, tensorboard=False)
    train("test-resume-sampler", config, {}, tmp_path / "reference", progress=False)
    run = tmp_path / "run"
    shorter = TrainConfig(**{**config.__dict__, "steps": 800})
    train("test-resume-sampler", shorter, {}, run, progress=False)
    summary = train("test-resume-sampler", config, None, run, progress=False, resume=True)
    assert summary["resumed_from"].endswith("step_00000800")
    evals, ref_evals = _records(run)[1], _records(tmp_path / "reference")[1]
    assert [e["step"] for e in evals] == [400, 800, 1200] and evals == ref_evals
    # The same records; at step 800 the periodic log came before the final evaluation.
    key = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731
    metrics, ref_metrics = _records(run)[0], _records(tmp_path / "reference")[0]
    assert sorted(metrics, key=key) == sorted(ref_metrics, key=key)


def test_keep_checkpoints_prunes_without_changing_the_run_and_may_change_on_resume(tmp_path):
    config = TrainConfig(env="Pendulum-v1", steps=1000, seed=4, eval_every=300,
                         checkpoint_every=200, eval_episodes=1, log_every=300, tensorboard=False)
    train("test-resume-sampler", config, {}, tmp_path / "reference", progress=False)
    run = tmp_path / "run"
    kept = TrainConfig(**{**config.__dict__, "keep_checkpoints": 2})
    train("test-resume-sampler", kept, {}, run, progress=False)
    _assert_same_run(run, tmp_path / "reference")
    # The newest 2 periodic checkpoints, and the final one besides them.
    assert [p.name for p in list_checkpoints(run)] == ["step_00000600", "step_00000800",
                                                        "step_00001000"]

    longer = TrainConfig(**{**config.__dict__, "steps": 1400, "keep_checkpoints": 1})
    extended = train("test-resume-sampler", longer, None, run, progress=False, resume=True)
    assert extended["resumed_from"].endswith("step_00001000") and extended["steps"] == 1400
    assert [p.name for p in list_checkpoints(run)] == ["step_00001200", "step_00001400"]
    assert json.loads((run / "config.json").read_text())["train"]["keep_checkpoints"] == 1
    with pytest.raises(ConfigError, match="keep_checkpoints: got -1"):
        TrainConfig(keep_checkpoints=-1).validate()


def test_resume_checks_the_saved_settings(tmp_path):
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=1, checkpoint_every=200,
                         eval_episodes=1, tensorboard=False)
    run = tmp_path / "run"
    first = train("random", config, {}, run, progress=False)
    first_eval = _jsonl(run / "eval.jsonl")[-1]
    with pytest.raises(ConfigError, match="config.json is missing"):
        train("random", None, None, tmp_path / "empty", progress=False, resume=True)
    with pytest.raises(ConfigError, match=r"train\.seed: saved 1, given 2"):
        train("random", TrainConfig(env="Pendulum-v1", steps=400, seed=2, checkpoint_every=200,
                                    eval_episodes=1, tensorboard=False), None, run,
              progress=False, resume=True)
    with pytest.raises(ConfigError, match=r"train\.steps: saved 400, given 200"):
        train("random", TrainConfig(env="Pendulum-v1", steps=200, seed=1, checkpoint_every=200,
                                    eval_episodes=1, tensorboard=False), None, run,
              progress=False, resume=True)
    with pytest.raises(ConfigError, match="run of agent 'random'"):
        train("pets", None, None, run, progress=False, resume=True)
    # A finished run: nothing to do, the saved summary comes back.
    assert train("random", None, None, run, progress=False, resume=True) == first

    # More steps extend the run from its final checkpoint (taken at an episode end).
    extended = train("random", TrainConfig(env="Pendulum-v1", steps=600, seed=1,
                                           checkpoint_every=200, eval_episodes=1,
                                           tensorboard=False),
                     None, run, progress=False, resume=True)
    assert extended["steps"] == 600 and extended["episodes"] == 3
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 600
    assert [e["step"] for e in _jsonl(run / "eval.jsonl")] == [600]
    episodes = [m["step"] for m in _jsonl(run / "metrics.jsonl") if "episode/return" in m]
    assert episodes == [200, 400, 600]
    # The shorter run's final evaluation, cut from eval.jsonl, is kept beside it.
    assert first_eval["step"] == 400
    assert _jsonl(run / "eval_finals.jsonl") == [{**first_eval, "final": True}]
    # An extension killed before its first checkpoint cuts the same line again: kept once.
    (run / "checkpoints" / "step_00000600").rename(tmp_path / "aside")
    (run / "eval.jsonl").write_text(json.dumps(first_eval) + "\n")
    (run / "summary.json").write_text(json.dumps(first))
    train("random", TrainConfig(env="Pendulum-v1", steps=600, seed=1, checkpoint_every=200,
                                eval_episodes=1, tensorboard=False),
          None, run, progress=False, resume=True)
    assert _jsonl(run / "eval_finals.jsonl") == [{**first_eval, "final": True}]


def test_resume_names_settings_the_saved_config_lacks(tmp_path, caplog):
    """A setting added to worldflux after a run started takes its value silently otherwise."""
    config = TrainConfig(env="Pendulum-v1", steps=200, seed=1, checkpoint_every=200,
                         eval_episodes=1, tensorboard=False)
    run = tmp_path / "run"
    train("random", config, {}, run, progress=False)
    saved = json.loads((run / "config.json").read_text())
    del saved["train"]["eval_every"]  # as if written before the setting existed
    (run / "config.json").write_text(json.dumps(saved))
    # A value other than the default is no conflict: the saved side is only the default filled
    # in on reading. The run takes the value given and records it.
    longer = TrainConfig(**{**config.__dict__, "steps": 400, "eval_every": 400})
    with caplog.at_level(logging.WARNING, logger="worldflux"):
        train("random", longer, None, run, progress=False, resume=True)
    assert "has no value for settings added to worldflux" in caplog.text
    assert "train.eval_every=400" in caplog.text
    assert json.loads((run / "config.json").read_text())["train"]["eval_every"] == 400


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=2, eval_episodes=1,
                         tensorboard=False)
    train("random", config, {}, tmp_path / "reference", progress=False)
    run = tmp_path / "run"
    train("random", config, {}, run, progress=False)
    for path in list_checkpoints(run):  # as if killed before the final checkpoint
        for file in path.iterdir():
            file.unlink()
        path.rmdir()
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 1000, "partial": ')  # a torn last line
    train("random", None, None, run, progress=False, resume=True)
    _assert_same_run(run, tmp_path / "reference")


# -- real processes, killed with SIGKILL -------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "worldflux", "train", *args, "--no-progress"]


def _env() -> dict[str, str]:
    # One thread: light on shared machines, and the same reduction order in every process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _kill_after_second_checkpoint(command: list[str], run_dir: Path, timeout: float) -> None:
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while len(list_checkpoints(run_dir)) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no second checkpoint in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert not (run_dir / "summary.json").exists()


def _run(command: list[str]) -> None:
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("agent, args", [
    ("random", ["--steps", "20000", "--eval-every", "3000", "--eval-episodes", "2",
                "--set", "train.checkpoint_every=2000", "--set", "train.log_every=1000"]),
    ("pets", ["--steps", "800", "--eval-every", "400", "--eval-episodes", "1",
              "--set", "train.checkpoint_every=200", "--set", "train.log_every=100",
              "--set", "train.tensorboard=false",
              *[item for setting in PETS_TINY for item in ("--set", setting)]]),
], ids=["random", "pets"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, agent, args):
    common = [agent, "--env", "Pendulum-v1", "--seed", "7", *args]
    _run(_cli(*common, "--out", str(tmp_path / "reference")))

    run = tmp_path / "run"
    _kill_after_second_checkpoint(_cli(*common, "--out", str(run)), run, timeout=60)
    killed_at = latest_checkpoint(run)
    assert killed_at is not None
    _run(_cli("--resume", str(run)))

    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == str(killed_at)
    _assert_same_run(run, tmp_path / "reference")


# -- non-finite losses -------------------------------------------------------------------------
def test_guard_skips_then_stops_naming_the_bad_term(caplog):
    guard = NonFiniteGuard(limit=3)
    good = LossOutput(torch.tensor(1.0), {"nll": torch.tensor(1.0)})
    bad = LossOutput(torch.tensor(float("nan")),
                     {"nll": torch.tensor(float("nan")), "bound": torch.tensor(0.5)})
    assert guard.loss_ok(good, "x")
    with caplog.at_level(logging.WARNING, logger="worldflux"):
        assert not guard.loss_ok(bad, "x") and not guard.loss_ok(bad, "x")
    assert "nll=nan" in caplog.text and "bound" not in caplog.text
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.ones(2)
    assert guard.gradients_ok([("weight", weight)], "x") and guard.in_a_row == 0
    weight.grad = torch.tensor([1.0, float("inf")])
    assert not guard.gradients_ok([("weight", weight)], "x")
    assert not guard.loss_ok(bad, "x")
    with pytest.raises(NonFiniteLossError, match=r"3 optimiser steps in a row.*nll=nan"):
        guard.loss_ok(bad, "x")
    assert guard.skipped == 5


def test_pets_stops_after_max_nonfinite_steps_keeping_the_last_good_checkpoint(
        tmp_path, monkeypatch):
    from worldflux.models.pets import PETSModel

    real_loss = PETSModel.transition_loss
    calls = {"n": 0}

    def flaky_loss(self, *args, **kwargs):
        out = real_loss(self, *args, **kwargs)
        calls["n"] += 1
        if not self.training_rounds_ok:  # set below: NaN from the second training round on
            nan = torch.tensor(float("nan"))
            return LossOutput(out.loss * nan, {**out.components, "nll": nan}, out.metrics)
        return out

    monkeypatch.setattr(PETSModel, "transition_loss", flaky_loss)
    monkeypatch.setattr(PETSModel, "training_rounds_ok", True, raising=False)

    from worldflux.agents.mpc import PETSAgent

    real_train = PETSAgent.train_model

    def train_model(self, buffer):
        self.model.training_rounds_ok = self.train_rounds == 0
        return real_train(self, buffer)

    monkeypatch.setattr(PETSAgent, "train_model", train_model)
    overrides = dict(item.split("=") for item in PETS_TINY)
    config = TrainConfig(env="Pendulum-v1", steps=600, seed=0, checkpoint_every=200,
                         eval_episodes=1, tensorboard=False, max_nonfinite_steps=5)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"pets: 5 optimiser steps.*nll=nan") as info:
        train("pets", config, overrides, run, progress=False)
    assert "stopped at step 400" in str(info.value) and "step_00000200" in str(info.value)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000200"]
    assert latest_checkpoint(run).name == "step_00000200"
    assert not (run / "summary.json").exists()


def test_a_run_directory_in_use_refuses_a_second_trainer(tmp_path):
    """A second process resuming a run that is still training would cut its logs and replay
    back to the last checkpoint under it: the run directory's lock refuses it, names the
    holder, and leaves every file as it was; once released, the resume goes ahead."""
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=1, checkpoint_every=200,
                         eval_episodes=1, tensorboard=False)
    run = tmp_path / "run"
    train("random", config, {}, run, progress=False)
    before = {p.name: p.read_bytes() for p in run.glob("*.jsonl")}
    holder = subprocess.Popen(  # holds run/.lock as a live training process would
        [sys.executable, "-c", "import sys, time\n"
         "from worldflux.training.loop import lock_run_dir\n"
         "lock = lock_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        longer = TrainConfig(env="Pendulum-v1", steps=600, seed=1, checkpoint_every=200,
                             eval_episodes=1, tensorboard=False)
        with pytest.raises(ConfigError, match=rf"being trained by another process \(pid "
                                              rf"{holder.pid}"):
            train("random", longer, None, run, progress=False, resume=True)
        assert {p.name: p.read_bytes() for p in run.glob("*.jsonl")} == before
    finally:
        holder.kill()
        holder.wait()
    extended = train("random", longer, None, run, progress=False, resume=True)
    assert extended["steps"] == 600
