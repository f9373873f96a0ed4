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


def test_window_rows_follow_chains_within_groups():
    from worldflux.agents.mpc import window_rows

    # Two recorded episodes (rows 0-2 and 3-4); row 2 is held out (group 1).
    obs = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    next_obs = torch.tensor([[1.0], [2.0], [3.0], [11.0], [12.0]])
    group = torch.tensor([0, 0, 1, 0, 0])
    rows = window_rows(obs, next_obs, group, 3)
    assert rows.tolist() == [[0, 1, -1], [1, -1, -1], [2, -1, -1], [3, 4, -1], [4, -1, -1]]


def test_chain_split_holds_out_whole_recorded_episodes():
    from worldflux.agents.mpc import chain_split

    # Five recorded episodes of 3, 4, 5, 6 and 7 transitions (values never repeat across them).
    obs, next_obs, episode = [], [], []
    for e, length in enumerate(range(3, 8)):
        values = 100.0 * e + torch.arange(length + 1, dtype=torch.float32)
        obs.append(values[:-1, None])
        next_obs.append(values[1:, None])
        episode += [e] * length
    obs, next_obs, episode = torch.cat(obs), torch.cat(next_obs), torch.tensor(episode)
    for seed in range(5):
        hold, train = chain_split(obs, next_obs, 6, torch.Generator().manual_seed(seed))
        assert sorted(hold.tolist() + train.tolist()) == list(range(25))
        held = set(episode[hold].tolist())
        # Whole episodes only, and no more than needed to reach 6 rows.
        assert all((episode[hold] == e).sum() == (episode == e).sum() for e in held)
        assert hold.numel() >= 6 and hold.numel() - max((episode == e).sum() for e in held) < 6
        assert not held & set(episode[train].tolist())
    # One long chain (no episodes to split by): random transitions instead.
    hold, _ = chain_split(torch.arange(20.0)[:, None], torch.arange(1.0, 21.0)[:, None], 4,
                          torch.Generator().manual_seed(0))
    assert hold.numel() == 4


def test_latent_evaluation_scores_windows_open_loop():
    """Held-out windows are scored like ``latent_window_loss`` trains them: from the first
    latent, fed the model's own predictions; a one-step window is the one-step score."""
    agent = build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                        device=torch.device("cpu"), seed=0,
                        overrides={**SMALL, "model.training": "encoded",
                                   "model.rollout_steps": "2"})
    model = agent.model
    g = torch.Generator().manual_seed(0)
    z, next_z = torch.randn(8, 2, model.latent_size, generator=g), \
        torch.randn(8, 2, model.latent_size, generator=g)
    action, reward = torch.randn(8, 2, 1, generator=g), torch.randn(8, 2, generator=g)
    one = model.latent_evaluation_mse(z[:, 0], action[:, 0], reward[:, 0], next_z[:, 0])
    mask = torch.tensor([[True, False]] * 8)
    torch.testing.assert_close(model.latent_evaluation_mse(z, action, reward, next_z, mask), one)
    # Step 2 by hand: from the predicted (not the recorded) second latent.
    E = model.config.ensemble_size
    with torch.no_grad():
        mean, _ = model._dynamics(z[:, 0].expand(E, -1, -1), action[:, 0].expand(E, -1, -1))
        first = z[:, 0] + model.delta_norm.denormalize(mean)
        mean, _ = model._dynamics(first, action[:, 1].expand(E, -1, -1))
        second = first + model.delta_norm.denormalize(mean)
        scale = model.delta_norm.std + model.delta_norm.eps
        err = ((second - next_z[:, 1]) / scale).pow(2).sum(-1)
        r = model._reward_normalized(first, action[:, 1].expand(E, -1, -1), second)
        err = err + (r - model.reward_norm.normalize(reward[:, 1].reshape(-1, 1)).reshape(1, -1)
                     ).pow(2)
    two = err.mean(1) / (model.latent_size + 1)
    torch.testing.assert_close(model.latent_evaluation_mse(z, action, reward, next_z),
                               (one + two) / 2)


def _open_loop_error(agent, data, horizon: int) -> float:
    """Mean squared error of ``horizon``-step open-loop predictions of the observation from
    every start of the recorded transitions (one chain)."""
    obs, action, _, next_obs = (torch.as_tensor(x) for x in data.data)
    model = agent.model.eval()
    starts = torch.arange(len(obs) - horizon)
    with torch.no_grad():
        state = model.encode(obs[starts])
        for j in range(horizon):
            state = model.transition(state, action[starts + j], deterministic=True)
        predicted = model.decode(state).preds["obs"]
    return float((predicted - next_obs[starts + horizon - 1]).pow(2).mean())


def test_encoded_training_over_windows_fits_open_loop_predictions():
    """``training="encoded"`` with ``rollout_steps=4``: the frozen autoencoder's latents are
    fitted over 4-step windows of the recorded chain (``window_mse_normalized`` reported),
    and the 6-step open-loop prediction on new data is far better than assuming no change."""
    train, test = _pendulum(600, seed=0), _pendulum(300, seed=1)
    agent = build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                        device=torch.device("cpu"), seed=0,
                        overrides={**SMALL, "model.hidden_size": "64",
                                   "model.dynamics_hidden_size": "64", "max_epochs": "40",
                                   "patience": "40", "autoencoder_epochs": "40",
                                   "model.training": "encoded", "model.rollout_steps": "4"})
    out = agent.train_model(train)
    assert out["model/window_mse_normalized"] < 1.0
    obs, _, _, next_obs = test.data
    no_change = float(((next_obs[5:] - obs[:-5]) ** 2).mean())
    error = _open_loop_error(agent, test, 6)
    assert error < 0.3 * no_change, (error, no_change)


def test_frozen_encoder_latents_are_kept_across_rounds_and_only_new_rows_encoded():
    agent = build_agent("latent-mpc", ObservationSpec((3,)), ActionSpec(1),
                        device=torch.device("cpu"), seed=0,
                        overrides={**SMALL, "model.training": "encoded"})
    data = _pendulum(300, seed=0)
    obs, _, _, next_obs = (torch.as_tensor(x) for x in data.data)
    model = agent.model.eval()
    model.fit_normalizers(*(torch.as_tensor(x) for x in data.data))
    encoded_rows = []
    original = model.encode_latent

    def counting(x):
        encoded_rows.append(x.shape[0])
        return original(x)

    model.encode_latent = counting
    with torch.no_grad():
        agent._encode_rows(obs[:200], next_obs[:200])
        z, next_z = agent._encode_rows(obs, next_obs)  # 100 rows appended
    assert encoded_rows == [200, 200, 100, 100]
    torch.testing.assert_close(z, original(obs))
    torch.testing.assert_close(next_z, original(next_obs))
    # A changed encoder (or changed leading rows) encodes everything again.
    with torch.no_grad():
        next(model.encoder.parameters()).add_(0.01)
        agent._encode_rows(obs, next_obs)
        agent._encode_rows(obs.flip(0), next_obs.flip(0))
    assert encoded_rows[4:] == [300, 300, 300, 300]
