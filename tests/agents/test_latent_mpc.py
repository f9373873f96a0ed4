"""MPC agents over the latent families: they train on real transitions and plan in latent space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.agents import build_agent
from worldflux.core.spec import ActionSpec, ObservationSpec

SMALL = {"planner.name": "cem", "planner.population": "40", "planner.elites": "5",
         "planner.iterations": "2", "planner.horizon": "5", "num_particles": "4",
         "max_epochs": "3"}


class _Transitions:
    def __init__(self, obs, action, reward, next_obs):
        self.data = (obs, action, reward, next_obs)

    def all_transitions(self):
        obs, action, reward, next_obs = self.data
        return obs, action, reward, next_obs, np.zeros(len(obs), bool)


def _pendulum(n=400, seed=0):
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = [[], [], [], []]
    for _ in range(n):
        action = rng.uniform(-2, 2, 1).astype(np.float32)
        nxt, reward, *_ = env.step(action)
        for row, value in zip(rows, (obs, action / 2, reward, nxt), strict=True):
            row.append(np.asarray(value, np.float32))
        obs = nxt
    return _Transitions(*(np.stack(r) for r in rows))


@pytest.mark.parametrize("name, family", [("latent-mpc", "latent-mlp"), ("vae-mpc", "latent-vae")])
def test_state_latent_agents_train_and_plan(name, family):
    agent = build_agent(name, ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"),
                        overrides={**SMALL, "model.hidden_size": "32", "max_epochs": "10",
                                   "patience": "10", "model.dynamics_hidden_size": "32"})
    assert agent.world_model.family == family
    out = agent.train_model(_pendulum())
    assert np.isfinite(out["model/holdout_mse"])
    assert out["model/nll_last_epoch"] < out["model/nll_first_epoch"]  # the fit loss fell
    result = agent.plan(np.array([1.0, 0.0, 0.0], np.float32))
    assert result.actions.shape == (5, 1)
    assert {"planner/return_mean", "planner/return_std"} <= set(agent.planner_metrics())


def test_pixel_agent_trains_on_images_and_plans():
    rng = np.random.default_rng(0)
    n = 48
    obs = rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    next_obs = np.roll(obs, 1, axis=-1)
    data = _Transitions(obs, rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                        rng.normal(size=n).astype(np.float32), next_obs)
    agent = build_agent("pixel-mpc", ObservationSpec((3, 64, 64), "uint8"), ActionSpec(2),
                        device=torch.device("cpu"),
                        overrides={**SMALL, "model.conv_depth": "4", "model.latent_size": "8",
                                   "model.dynamics_hidden_size": "32", "batch_size": "16"})
    out = agent.train_model(data)
    assert np.isfinite(out["model/nll_last_epoch"])
    result = agent.plan(obs[0])
    assert result.actions.shape == (5, 2)
    assert np.all(np.abs(result.actions.numpy()) <= 1.0)


def test_autoencoder_first_stage_trains_the_autoencoder_before_the_dynamics():
    common = {**SMALL, "model.hidden_size": "32", "model.dynamics_hidden_size": "32",
              "max_epochs": "2", "patience": "2"}
    data = _pendulum()
    staged = build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                         device=torch.device("cpu"), seed=0,
                         overrides={**common, "autoencoder_epochs": "15"})
    out = staged.train_model(data)
    # The reconstruction error fell over the first stage, to well under the first epoch's.
    assert out["model/ae_recon_mse_last_epoch"] < 0.3 * out["model/ae_recon_mse_first_epoch"]
    plain = build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                        device=torch.device("cpu"), seed=0, overrides=common)
    plain_out = plain.train_model(data)
    assert "model/ae_recon_mse_last_epoch" not in plain_out
    # With the same dynamics epochs, the staged model reconstructs better.
    assert out["model/recon_mse"] < plain_out["model/recon_mse"]
    with pytest.raises(Exception, match="autoencoder_epochs"):
        build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                    device=torch.device("cpu"), overrides={"autoencoder_epochs": "-1"})
