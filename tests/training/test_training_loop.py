"""The online loop: row convention, termination vs truncation, metrics, run directory rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from worldflux.agents import AgentRegistry
from worldflux.agents.base import Agent
from worldflux.core.errors import ConfigError, ContractError
from worldflux.core.spec import ActionSpec
from worldflux.training import TrainConfig, evaluate, train
from worldflux.training.environment import env_action, make_env


@dataclass
class RecorderConfig:
    """Test agent config."""

    greedy_action: float = 0.0
    """Action taken when ``explore=False`` (continuous spaces)."""


@AgentRegistry.register("test-recorder", RecorderConfig, tier="skeleton")
class RecorderAgent(Agent):
    """Random when exploring, constant when greedy; records every ``update`` call."""

    instances: list[RecorderAgent] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, bool]] = []
        self.buffer = None
        RecorderAgent.instances.append(self)

    def act(self, obs, *, explore):
        if explore or self.action_spec.kind == "discrete":
            return self.random_action()
        return np.full(self.action_spec.dim, self.config.greedy_action, dtype=np.float32)

    def update(self, buffer, *, env_step, episode_done):
        self.buffer = buffer
        self.updates.append((env_step, episode_done))
        return {"calls": float(len(self.updates))}

    def planner_metrics(self):
        return {"value": 1.5}

    def state_dict(self):
        return {"rng": self.rng}

    def load_state_dict(self, state):
        self.rng = state["rng"]


def _episodes(agent):
    return [episode for _, episode in agent.buffer.episodes()]


def test_discrete_env_rows_follow_the_convention(tmp_path):
    config = TrainConfig(env="CartPole-v1", steps=150, seed=1, eval_episodes=1, log_every=50,
                         tensorboard=False)
    summary = train("test-recorder", config, {}, tmp_path / "run", progress=False)
    agent = RecorderAgent.instances[-1]
    assert [step for step, _ in agent.updates] == list(range(1, 151))
    assert sum(done for _, done in agent.updates) == summary["episodes"] >= 2

    episodes = _episodes(agent)
    assert sum(len(e["rewards"]) - 1 for e in episodes) == 150  # rows = transitions + firsts
    for episode in episodes:
        assert episode["is_first"][0] and not episode["is_first"][1:].any()
        assert not episode["actions"][0].any() and episode["rewards"][0] == 0
        assert np.all(episode["actions"][1:].sum(-1) == 1)  # one-hot, width 2
        assert episode["actions"].shape[1] == 2
        assert not episode["truncated"].any()  # random CartPole falls long before 500 steps
    finished = episodes[: summary["episodes"]]
    assert all(e["terminated"][-1] and not e["terminated"][:-1].any() for e in finished)

    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    returns = [x["episode/return"] for x in lines if "episode/return" in x]
    assert len(returns) == summary["episodes"] and all(r > 0 for r in returns)
    logged = [x for x in lines if "train/calls" in x]
    assert [x["step"] for x in logged] == [50, 100, 150]
    assert logged[0]["train/calls"] == pytest.approx(25.5)  # mean of 1..50
    assert logged[0]["planner/value"] == 1.5 and logged[0]["perf/steps_per_s"] > 0


def test_time_limit_is_truncation_not_termination(tmp_path):
    config = TrainConfig(env="Pendulum-v1", steps=200, eval_episodes=1, tensorboard=False)
    summary = train("test-recorder", config, {"greedy_action": "0.5"}, tmp_path / "run",
                    progress=False)
    agent = RecorderAgent.instances[-1]
    (episode,) = _episodes(agent)
    assert len(episode["rewards"]) == 201
    assert episode["truncated"][-1] and not episode["truncated"][:-1].any()
    assert not episode["terminated"].any()
    assert np.all(np.abs(episode["actions"]) <= 1.0)
    assert summary["episodes"] == 1 and agent.config.greedy_action == 0.5
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_config["agent"] == "test-recorder"
    assert run_config["agent_config"] == {"greedy_action": 0.5}
    assert run_config["train"]["steps"] == 200 and run_config["worldflux_version"]


def test_evaluations_wait_for_episode_ends(tmp_path):
    config = TrainConfig(env="Pendulum-v1", steps=450, eval_every=150, checkpoint_every=150,
                         eval_episodes=1, tensorboard=False)
    train("test-recorder", config, {}, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "eval.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [200, 400, 450]
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_00000200", "step_00000400", "step_00000450"]


def test_run_directory_with_a_run_is_refused(tmp_path):
    config = TrainConfig(steps=10, eval_episodes=1, tensorboard=False)
    train("test-recorder", config, {}, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train("test-recorder", config, {}, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="config.json is missing"):
        train("test-recorder", config, {}, tmp_path / "none", progress=False, resume=True)


def test_invalid_settings_fail_before_creating_the_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="train.eval_episodes"):
        train("test-recorder", TrainConfig(eval_episodes=0), {}, tmp_path / "a")
    with pytest.raises(ConfigError, match="'nope'"):
        train("test-recorder", TrainConfig(steps=5), {"nope": "1"}, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_evaluate_is_repeatable_for_a_seed():
    env = make_env(TrainConfig(env="Pendulum-v1"), seed=0)
    agent = RecorderAgent(RecorderConfig(greedy_action=-0.3), *_pendulum_specs(), device=None)
    first = evaluate(agent, env, 2, seed=5)
    second = evaluate(agent, env, 2, seed=5)
    other = evaluate(agent, env, 2, seed=6)
    env.close()
    assert first["returns"] == second["returns"] and first["returns"] != other["returns"]
    assert first["lengths"] == [200, 200]
    assert first["mean"] == pytest.approx(np.mean(first["returns"]))
    assert first["std"] == pytest.approx(np.std(first["returns"]))


def _pendulum_specs():
    from worldflux.core.spec import ObservationSpec

    return ObservationSpec((3,)), ActionSpec(1)


def test_env_action_converts_and_checks_agent_actions():
    discrete = ActionSpec(3, "discrete")
    index, row = env_action(np.asarray(2), discrete)
    assert index == 2 and row.tolist() == [0, 0, 1]
    index, row = env_action(np.array([0.1, 0.7, 0.2]), discrete)
    assert index == 1 and row.tolist() == [0, 1, 0]
    with pytest.raises(ContractError, match="index 3"):
        env_action(3, discrete)
    continuous = ActionSpec(2)
    action, row = env_action(np.array([2.0, -0.5]), continuous)
    assert action.tolist() == [1.0, -0.5] and row.dtype == np.float32
    with pytest.raises(ContractError, match=r"expected \[2\]"):
        env_action(np.zeros(3), continuous)
    with pytest.raises(ContractError, match="non-finite"):
        env_action(np.array([np.nan, 0.0]), continuous)


def test_disk_replay_storage_holds_the_same_rows_as_memory(tmp_path):
    rows = {}
    for storage in ("memory", "disk"):
        config = TrainConfig(env="Pendulum-v1", steps=450, seed=3, eval_episodes=1,
                             tensorboard=False, replay_storage=storage)
        train("test-recorder", config, {}, tmp_path / storage, progress=False)
        buffer = RecorderAgent.instances[-1].buffer
        if storage == "disk":  # closed at the end of the run; its files read back
            from worldflux.data import ReplayBuffer

            buffer = ReplayBuffer.open(tmp_path / "disk" / "replay_storage")
        rows[storage] = buffer.all_transitions()
    assert sorted(p.suffix for p in (tmp_path / "disk" / "replay_storage").iterdir()
                  if p.suffix == ".npy")  # the rows lived in memory-mapped files of the run
    assert not (tmp_path / "memory" / "replay_storage").exists()
    for a, b in zip(rows["memory"], rows["disk"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(rows["disk"].rewards) == 450  # one transition per step, 3 episodes


def test_unknown_replay_storage_and_precision_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="train.replay_storage: got 'ram'"):
        train("test-recorder", TrainConfig(replay_storage="ram"), {}, tmp_path / "a")
    with pytest.raises(ConfigError, match="train.precision: got 'fp8'"):
        train("test-recorder", TrainConfig(precision="fp8"), {}, tmp_path / "b")


def test_videos_and_wandb_are_wired_into_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=0, eval_every=200, eval_episodes=1,
                         tensorboard=False, video_every=400, wandb=True, wandb_project="wf-loop")
    run_dir = tmp_path / "run"
    train("test-recorder", config, {}, run_dir, progress=False)
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert videos == ["eval_step00000400.gif"]  # only at the final evaluation; no world model
    from PIL import Image

    with Image.open(run_dir / "videos" / videos[0]) as gif:
        assert gif.n_frames > 10
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    video = [r for r in records if "video/return" in r]
    assert len(video) == 1 and video[0]["step"] == 400 and video[0]["video/length"] == 200
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert list((run_dir / "wandb").rglob(f"run-{run_id}.wandb"))


def test_evaluation_reports_success_and_collisions_of_goal_reaching_envs():
    from worldflux.envs.nav3d import scripted_action

    class Scripted(RecorderAgent):
        def act(self, obs, *, explore):
            return scripted_action(np.asarray(obs)[None])[0].astype(np.float32)

    env = make_env(TrainConfig(env="worldflux/Nav3D-v0"), seed=0)
    agent = Scripted(RecorderConfig(), *_specs(env), device=None)
    out = evaluate(agent, env, 3, seed=0)
    assert out["success_rate"] == 1.0 and out["collision_rate"] == 0.0
    assert max(out["lengths"]) < 200  # success ends the episode


def test_env_reward_source_attaches_the_env_reward_or_says_why_not():
    import torch

    from worldflux.agents import build_agent
    from worldflux.training.environment import attach_env_reward

    for env_id, ok in (("worldflux/Nav3D-v0", True), ("Pendulum-v1", False)):
        env = make_env(TrainConfig(env=env_id), seed=0)
        agent = build_agent("pets", *_specs(env), device=torch.device("cpu"),
                            overrides={"reward_source": "env", "model.hidden_size": "16"})
        if ok:
            attach_env_reward(agent, env)
            assert agent.reward_fn is not None
        else:
            with pytest.raises(ConfigError, match="reward_source: got 'env'.*Pendulum"):
                attach_env_reward(agent, env)


def _specs(env):
    from worldflux.training.environment import specs_for

    return specs_for(env)
