"""Warm start (``train.init_from``): a new run's networks from another run, other settings free."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from worldflux.agents import build_agent
from worldflux.cli.main import app
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer
from worldflux.data.episodes import load_episode
from worldflux.data.tensors import to_torch
from worldflux.training import TrainConfig, latest_checkpoint, train
from worldflux.training.checkpoint import load_checkpoint
from worldflux.training.warm_start import warm_start

TINY = {"model.model_size": "1", "model.enc_dim": "32", "model.mlp_dim": "32",
        "model.latent_dim": "16", "batch_size": "16", "planner.population": "16",
        "planner.iterations": "2", "planner.elites": "4", "num_pi_trajs": "4",
        "seed_steps": "200", "pretrain_updates": "100"}


def _config(steps: int, seed: int = 0, **extra) -> TrainConfig:
    return TrainConfig(env="Pendulum-v1", steps=steps, seed=seed, eval_episodes=1,
                       log_every=100, tensorboard=False, **extra)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A TD-MPC2 run of 800 steps: 200 random, 100 pretraining updates, 600 planned steps
    with an update each (its reward error on new data: about a quarter of a fresh model's)."""
    run = tmp_path_factory.mktemp("warm") / "source"
    train("tdmpc2", _config(800, seed=1), TINY, run, progress=False)
    return run


def _agent(seed: int = 7, **overrides):
    return build_agent("tdmpc2", ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"),
                       seed=seed, overrides={**TINY, **overrides})


def test_networks_come_from_the_newest_checkpoint_and_nothing_else(source):
    agent = _agent(lr="1e-4")
    origin = warm_start(agent, "tdmpc2", str(source))
    newest = latest_checkpoint(source)
    assert origin == {"model": str(newest)}
    saved = load_checkpoint(newest)["state"]["agent"]
    for key, value in saved["model"].items():
        assert torch.equal(agent.model.state_dict()[key], value), key
    # Optimisers, counters and settings are this run's.
    assert agent.updates == 0 and not agent.pretrained and agent.env_steps == 0
    assert agent.optimizer.state_dict()["state"] == {}
    assert {g["lr"] for g in agent.optimizer.param_groups} <= {1e-4, 1e-4 * agent.config.enc_lr_scale}


def _reward_error(agent, buffer) -> float:
    """Mean absolute error of the predicted reward ``R(z_t, a_{t+1})`` on 256 windows of
    ``buffer`` (rows hold the action that led to them and its reward), no update."""
    batch = to_torch(buffer.sample(256, 2), agent.device)
    with torch.no_grad():
        z = agent.model.encode_obs(batch["obs"][:, 0])
        predicted = agent.model.reward(z, batch["actions"][:, 1]).reshape(-1)
    return float((predicted - batch["rewards"][:, 1].reshape(-1)).abs().mean())


def test_a_warm_started_run_starts_from_what_the_source_learned(source, tmp_path):
    """On another seed's data, before any update of its own, the warm-started agent predicts
    rewards far better than one started from scratch; the run records where it started."""
    warm = tmp_path / "warm"
    train("tdmpc2", _config(200, seed=2, init_from=str(source)), TINY, warm, progress=False)
    buffer = ReplayBuffer(10_000, (3,), 1, seed=0)
    for file in sorted((warm / "replay").glob("episode-*.npz")):
        buffer.add_episode(load_episode(file, obs_shape=(3,), action_dim=1))
    started = _agent()
    warm_start(started, "tdmpc2", str(source))
    error_warm, error_fresh = _reward_error(started, buffer), _reward_error(_agent(), buffer)
    assert error_warm < 0.5 * error_fresh, (error_warm, error_fresh)
    config = json.loads((warm / "config.json").read_text())
    assert config["init_from"] == {"model": str(latest_checkpoint(source))}
    assert config["train"]["init_from"] == str(source)
    # A resume continues from the run's own checkpoint and keeps the record.
    train("tdmpc2", _config(400, seed=2, init_from=str(source)), None, warm, progress=False,
          resume=True)
    assert json.loads((warm / "config.json").read_text())["init_from"] == config["init_from"]


def test_a_saved_model_gives_the_world_model(source):
    agent = _agent()
    assert warm_start(agent, "tdmpc2", str(source / "model")) == {"model": str(source / "model")}
    final = load_checkpoint(latest_checkpoint(source))["state"]["agent"]["model"]
    for key, value in final.items():
        assert torch.equal(agent.model.state_dict()[key], value), key


def test_sources_that_do_not_fit_are_named_before_any_step(source, tmp_path):
    with pytest.raises(ConfigError, match=r"model.latent_dim|shape\(s\) differ"):
        warm_start(_agent(**{"model.latent_dim": "32"}), "tdmpc2", str(source))
    with pytest.raises(ConfigError, match="is not a run directory"):
        warm_start(_agent(), "tdmpc2", str(tmp_path))
    with pytest.raises(ConfigError, match="/none: no such local directory"):
        warm_start(_agent(), "tdmpc2", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="from a run of agent 'tdmpc2', this run's agent is"):
        warm_start(build_agent("pets", ObservationSpec((3,)), ActionSpec(1),
                               device=torch.device("cpu"), seed=0), "pets", str(source))
    with pytest.raises(ConfigError, match="'tdmpc2' world model, agent 'pets' uses"):
        warm_start(build_agent("pets", ObservationSpec((3,)), ActionSpec(1),
                               device=torch.device("cpu"), seed=0), "pets", str(source / "model"))
    with pytest.raises(ConfigError, match="train.init_from"):
        train("tdmpc2", _config(300, init_from=str(tmp_path)), TINY, tmp_path / "new",
              progress=False)
    assert not (tmp_path / "new").exists()  # refused before the run directory was made
    with pytest.raises(ConfigError, match="has no networks"):
        train("random", _config(300, init_from=str(source)), {}, tmp_path / "r", progress=False)


def test_the_cli_forks_a_run_with_other_settings(source, tmp_path):
    out = tmp_path / "fork"
    result = CliRunner().invoke(app, [
        "train", "tdmpc2", "--config", str(source / "config.json"), "--init-from", str(source),
        "--steps", "220", "--seed", "3", "--set", "lr=1e-4", "--out", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["agent_config"]["lr"] == 1e-4 and config["train"]["seed"] == 3
    assert config["init_from"] == {"model": str(latest_checkpoint(source))}
    result = CliRunner().invoke(app, ["train", "ppo", "--init-from", str(source)])
    assert result.exit_code == 2 and "--init-from: not available for ppo" in result.output


def test_an_actor_critic_agent_brings_its_actor_and_critics(tmp_path):
    """DreamerV3 names its world model, actor, critic, slow critic and return scale."""
    from worldflux.training.checkpoint import save_checkpoint

    def tiny_agent(**extra):
        sizes = {"model.size": "size1m", "model.deter": "32", "model.hidden": "16",
                 "model.units": "16", "model.classes": "4", "model.stoch": "4",
                 "model.blocks": "2"}
        return build_agent("dreamerv3", ObservationSpec((3,)), ActionSpec(2),
                           device=torch.device("cpu"), seed=0, overrides={**sizes, **extra})

    trained = tiny_agent()
    with torch.no_grad():
        for module in trained.networks().values():
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.normal_()  # weights no fresh agent has
    run = tmp_path / "run"
    save_checkpoint(run, 100, {"agent": trained.state_dict()})
    (run / "config.json").write_text(json.dumps({"agent": "dreamerv3"}))
    started = tiny_agent(actor_lr="1e-5")
    origin = warm_start(started, "dreamerv3", str(run))
    assert sorted(origin) == ["actor", "critic", "model", "retnorm", "slow_critic"]
    for name, module in trained.networks().items():
        mine = started.networks()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(mine[key], value), (name, key)
    assert started.actor_opt.param_groups[0]["lr"] == 1e-5 and started.updates == 0
