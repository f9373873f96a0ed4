"""PETS learns a known system, and its particle returns rank action sequences correctly.

Dynamics: ``x' = x + 0.1 * a`` with reward ``-x'^2`` (the reward of the state reached).
"""

from __future__ import annotations

import pytest
import torch

import worldflux
from worldflux.models.pets import PETSModel

STEP = 0.1


def true_step(x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    next_x = x + STEP * a
    return next_x, -next_x.pow(2).sum(-1)


def _transitions(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    a = torch.rand(n, 1, generator=g) * 2 - 1
    next_x, reward = true_step(x, a)
    return x, a, reward, next_x


@pytest.fixture(scope="module")
def trained() -> PETSModel:
    torch.manual_seed(0)
    model = worldflux.create_world_model("pets", obs_shape=(1,), action_dim=1, device="cpu",
                                         hidden_size=32, num_layers=2, ensemble_size=5)
    obs, action, reward, next_obs = _transitions(512, seed=0)
    model.fit_normalizers(obs, action, reward, next_obs)
    E = model.config.ensemble_size
    g = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(512, (E, 128), generator=g)  # a bootstrap minibatch per member
        out = model.transition_loss(obs[idx], action[idx], reward[idx], next_obs[idx])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    return model


def test_ensemble_learns_known_dynamics(trained):
    obs, action, reward, next_obs = _transitions(256, seed=5)  # held out
    mse = trained.evaluation_mse(obs, action, reward, next_obs)
    assert mse.shape == (5,)
    assert (mse < 0.02).all(), mse  # in normalised units (targets have unit variance)
    with torch.no_grad():
        predicted = trained.transition(trained.encode(obs), action, deterministic=True)
    assert (predicted["obs"] - next_obs).abs().max() < 0.03
    assert (predicted["reward"] - reward).abs().mean() < 0.1


def test_training_reduces_the_loss_from_initialisation():
    torch.manual_seed(0)
    model = worldflux.create_world_model("pets", obs_shape=(1,), action_dim=1, device="cpu",
                                         hidden_size=16, num_layers=1, ensemble_size=2)
    obs, action, reward, next_obs = _transitions(64, seed=2)
    model.fit_normalizers(obs, action, reward, next_obs)
    batch = [t.expand(2, *t.shape) for t in (obs, action, reward, next_obs)]
    before = float(model.transition_loss(*batch).metrics["mse_normalized"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        model.transition_loss(*batch).loss.backward()
        optimizer.step()
    assert float(model.transition_loss(*batch).metrics["mse_normalized"]) < 0.2 * before


def _sequences(horizon: int = 5) -> torch.Tensor:
    """Two sequences from x = 1: steer towards 0 (better) and away from it (worse)."""
    return torch.stack([torch.full((horizon, 1), -1.0), torch.full((horizon, 1), 1.0)])


def _true_returns(x0: float, sequences: torch.Tensor) -> torch.Tensor:
    x = torch.full((sequences.shape[0], 1), x0)
    total = torch.zeros(sequences.shape[0])
    for t in range(sequences.shape[1]):
        x, reward = true_step(x, sequences[:, t])
        total += reward
    return total


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "expectation"])
def test_particle_returns_rank_sequences(trained, propagation):
    obs = torch.tensor([1.0])
    sequences = _sequences()
    returns = trained.particle_returns(obs, sequences, num_particles=10, propagation=propagation,
                                       generator=torch.Generator().manual_seed(0))
    assert returns.shape == (2, 10)
    assert torch.isfinite(returns).all()
    mean = returns.mean(1)
    assert mean[0] > mean[1] + 3.0  # true returns: -2.55 vs -8.55
    torch.testing.assert_close(mean, _true_returns(1.0, sequences), atol=0.3, rtol=0.05)


def test_particle_returns_pad_rows_that_do_not_fill_the_ensemble(trained):
    sequences = torch.rand(3, 4, 1) * 2 - 1
    returns = trained.particle_returns(torch.tensor([0.5]), sequences, num_particles=7,
                                       generator=torch.Generator().manual_seed(0))
    assert returns.shape == (3, 7)  # 21 rows on 5 members
    torch.testing.assert_close(returns.mean(1), _true_returns(0.5, sequences), atol=0.2, rtol=0.05)


def test_particle_returns_are_reproducible_with_a_generator(trained):
    sequences = _sequences(3)
    runs = [trained.particle_returns(torch.tensor([1.0]), sequences, 6, propagation="ts1",
                                     generator=torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_known_reward_function_and_discount(trained):
    sequences = _sequences(4)

    def reward_fn(obs, action, next_obs):
        return torch.ones(obs.shape[0])

    returns = trained.particle_returns(torch.tensor([1.0]), sequences, 5, reward_fn=reward_fn,
                                       discount=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(returns, torch.full((2, 5), 1 + 0.5 + 0.25 + 0.125))


def test_bf16_and_fp32_particle_returns_agree(trained):
    sequences = torch.cat([_sequences(), torch.rand(6, 5, 1) * 2 - 1])
    obs = torch.tensor([1.0])
    fp32 = trained.particle_returns(obs, sequences, 16, dtype=torch.float32,
                                    generator=torch.Generator().manual_seed(0))
    bf16 = trained.particle_returns(obs, sequences, 16, dtype=torch.bfloat16,
                                    generator=torch.Generator().manual_seed(0))
    assert bf16.dtype == torch.float32  # accumulated in float32 whatever the network dtype
    torch.testing.assert_close(bf16.mean(1), fp32.mean(1), atol=0.15, rtol=0.05)
    assert bf16.mean(1)[0] > bf16.mean(1)[1] + 3.0  # still ranks the known pair correctly


def test_transition_uses_each_rows_member_under_ts_inf(trained):
    obs = torch.zeros(5, 1)
    state = trained.encode(obs)
    assert torch.equal(state["member"], torch.arange(5))
    action = torch.ones(5, 1)
    with torch.no_grad():
        torch.manual_seed(0)
        first = trained.transition(state, action)
        torch.manual_seed(0)
        again = trained.transition(state, action)
        deterministic = trained.transition(state, action, deterministic=True)
    assert torch.equal(first["obs"], again["obs"]) and torch.equal(first["member"], state["member"])
    # Mean predictions are all close to the truth, 0.1.
    assert (deterministic["obs"] - STEP).abs().max() < 0.03


def test_pets_rejects_image_observations():
    with pytest.raises(worldflux.core.ConfigError, match="flat vector"):
        worldflux.create_world_model("pets", obs_shape=(3, 8, 8), action_dim=1, device="cpu")


def test_loss_on_a_batch_without_transitions_is_zero():
    model = worldflux.create_world_model("pets", obs_shape=(2,), action_dim=1, device="cpu",
                                         hidden_size=8, num_layers=1)
    batch = {"obs": torch.zeros(2, 2, 2), "actions": torch.zeros(2, 2, 1),
             "rewards": torch.zeros(2, 2), "terminated": torch.zeros(2, 2, dtype=torch.bool),
             "truncated": torch.zeros(2, 2, dtype=torch.bool),
             "is_first": torch.ones(2, 2, dtype=torch.bool)}  # every row starts an episode
    out = model.loss(batch)
    assert float(out.loss.detach()) == 0.0 and out.metrics["transitions"] == 0.0


def test_absolute_dims_predict_next_values_and_are_validated():
    """``absolute_dims``: those entries' targets are next values (not changes), and rollouts
    take the prediction as the next value there."""
    from worldflux.core.errors import ConfigError
    from worldflux.core.spec import ActionSpec, ObservationSpec
    from worldflux.models.pets import PETSModel
    from worldflux.models.pets.config import PETSConfig

    config = PETSConfig(ensemble_size=1, hidden_size=8, num_layers=1, absolute_dims=(1,),
                        stochastic=False)
    model = PETSModel(config, ObservationSpec((3,)), ActionSpec(1))
    obs = torch.tensor([[1.0, 2.0, 3.0]])
    nxt = torch.tensor([[1.5, 7.0, 2.0]])
    target = model.targets(obs, torch.tensor([0.5]), nxt)
    torch.testing.assert_close(target, torch.tensor([[0.5, 7.0, -1.0, 0.5]]))
    raw = torch.tensor([0.5, 7.0, -1.0, 0.5])
    next_obs, _ = model._decode_targets(obs, raw.expand(1, 4), raw.expand(1, 4))
    torch.testing.assert_close(next_obs, nxt)
    with pytest.raises(ConfigError, match="absolute_dims"):
        PETSModel(PETSConfig(absolute_dims=(3,)), ObservationSpec((3,)), ActionSpec(1))
