"""Raw-observation dynamics families: ``mlp``, ``ensemble-mlp``, ``gaussian`` (and ``pets``).

Dynamics of the fitted data: ``x' = x + 0.1 a`` with reward ``-x'^2``; the heteroscedastic task
adds noise of std 0.3 to ``x'`` for ``x > 0`` and none for ``x < 0``.
"""

from __future__ import annotations

import pytest
import torch

import worldflux
from worldflux.models.pets import (
    DeterministicEnsembleModel,
    GaussianMLPModel,
    MLPDynamicsModel,
    PETSModel,
)

STEP = 0.1
VARIANTS = {"mlp": (MLPDynamicsModel, 1, False),
            "ensemble-mlp": (DeterministicEnsembleModel, 5, False),
            "gaussian": (GaussianMLPModel, 1, True), "pets": (PETSModel, 5, True)}


def _transitions(n: int, seed: int, low: float = -1.0, high: float = 1.0, noisy: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * (high - low) + low
    a = torch.rand(n, 1, generator=g) * 2 - 1
    next_x = x + STEP * a
    if noisy:
        next_x = next_x + 0.3 * (x > 0).float() * torch.randn(n, 1, generator=g)
    return x, a, -next_x.pow(2).sum(-1), next_x


def _build(family: str, **overrides):
    torch.manual_seed(0)
    return worldflux.create_world_model(family, obs_shape=(1,), action_dim=1, device="cpu",
                                        hidden_size=32, num_layers=2, **overrides)


def _fit(model, data, steps: int, lr: float = 3e-3, seed: int = 1):
    obs, action, reward, next_obs = data
    model.fit_normalizers(obs, action, reward, next_obs)
    E, n = model.config.ensemble_size, obs.shape[0]
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(n, (E, 128), generator=g)  # a bootstrap minibatch per member
        out = model.transition_loss(obs[idx], action[idx], reward[idx], next_obs[idx])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def ensemble() -> DeterministicEnsembleModel:
    return _fit(_build("ensemble-mlp"), _transitions(512, seed=0), steps=300)


@pytest.fixture(scope="module")
def mlp() -> MLPDynamicsModel:
    return _fit(_build("mlp"), _transitions(512, seed=0), steps=300)


@pytest.mark.parametrize("family", list(VARIANTS))
def test_families_are_registered_with_their_defaults(family):
    cls, members, stochastic = VARIANTS[family]
    model = worldflux.create_world_model(family, obs_shape=(3,), action_dim=1, device="cpu")
    assert type(model) is cls and model.family == family
    assert model.config.ensemble_size == members and model.config.stochastic is stochastic
    assert model.net.ensemble_size == members
    out_width = 4 * (2 if stochastic else 1)  # [delta (3), reward] with or without log-variances
    assert model.net.layers[-1].weight.shape[-1] == out_width
    assert hasattr(model, "min_logvar") is stochastic
    assert worldflux.create_world_model("ensemble", obs_shape=(3,), action_dim=1).family == "pets"


def test_deterministic_loss_is_mse_with_per_member_metrics():
    model = _build("ensemble-mlp", ensemble_size=3)
    obs, action, reward, next_obs = _transitions(64, seed=3)
    model.fit_normalizers(obs, action, reward, next_obs)
    batch = [t.expand(3, *t.shape) for t in (obs, action, reward, next_obs)]
    out = model.transition_loss(*batch)
    with torch.no_grad():
        mean = model.net(model.input_norm.normalize(torch.cat(batch[:2], -1)))
    target = model.target_norm.normalize(model.targets(obs, reward, next_obs))
    expected = (mean - target).pow(2).mean((1, 2))
    torch.testing.assert_close(out.loss.detach(), expected.sum())
    assert set(out.components) == {"mse"}
    assert "nll" not in out.metrics and not any(k.startswith("nll_member") for k in out.metrics)
    assert out.metrics["loss"] == pytest.approx(float(expected.sum()), rel=1e-5)
    for i in range(3):
        assert out.metrics[f"mse_member_{i}"] == pytest.approx(float(expected[i]), rel=1e-5)
    assert out.metrics["mse_normalized"] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_stochastic_loss_reports_nll_and_mse_per_member():
    model = _build("pets", ensemble_size=2)
    obs, action, reward, next_obs = _transitions(64, seed=3)
    model.fit_normalizers(obs, action, reward, next_obs)
    out = model.transition_loss(*[t.expand(2, *t.shape) for t in (obs, action, reward, next_obs)])
    expected = {"nll_member_0", "nll_member_1", "mse_member_0", "mse_member_1", "nll"}
    assert expected <= set(out.metrics)
    assert set(out.components) == {"nll", "logvar_bound"}


@pytest.mark.parametrize("family", ["mlp", "ensemble-mlp"])
def test_deterministic_variants_have_no_aleatoric_noise(family):
    model = _build(family)
    obs, action = torch.randn(6, 1), torch.rand(6, 1) * 2 - 1
    unc = model.predict_uncertainty(obs, action)
    assert set(unc) == {"mean", "aleatoric", "epistemic"}
    assert all(v.shape == (6, 1) for v in unc.values())
    assert torch.equal(unc["aleatoric"], torch.zeros(6, 1))
    assert (unc["epistemic"] > 0).all() if family == "ensemble-mlp" else \
        torch.equal(unc["epistemic"], torch.zeros(6, 1))
    _, logvar = model.predict_normalized(torch.cat([obs, action], -1).expand(
        model.config.ensemble_size, -1, -1))
    assert torch.exp(logvar).eq(0).all()
    state = model.encode(obs)
    with torch.no_grad():
        first = model.transition(state, action)["obs"]
        again = model.transition(state, action)["obs"]
    assert torch.equal(first, again)  # no noise drawn
    returns = model.particle_returns(obs[0], torch.rand(4, 3, 1) * 2 - 1, 10)
    members = model.config.ensemble_size
    # Particle k runs on member k % E without noise: particles k and k + E agree exactly.
    assert torch.equal(returns[:, :members], returns[:, members:2 * members])
    samples = model.imagine(obs[:2], torch.rand(2, 3, 1), 2 * members)
    assert torch.equal(samples[:members], samples[members:])


def test_stochastic_variants_sample_aleatoric_noise():
    model = _build("gaussian")
    obs, action = torch.randn(4, 1), torch.rand(4, 5, 1)
    samples = model.imagine(obs, action, 3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(samples[0], samples[1])
    unc = model.predict_uncertainty(obs, action[:, 0])
    assert (unc["aleatoric"] > 0).all() and torch.equal(unc["epistemic"], torch.zeros(4, 1))
    repeat = model.imagine(obs, action, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, repeat)


def test_imagine_shapes_and_sample_zero_of_one_deterministic_member_equals_rollout(mlp):
    obs, actions = torch.randn(3, 1), torch.rand(3, 6, 1) * 2 - 1
    samples = mlp.imagine(obs, actions, 4)
    assert samples.shape == (4, 3, 7, 1)
    assert torch.equal(samples[:, :, 0], obs.expand(4, 3, 1))
    with torch.no_grad():
        trajectory = mlp.rollout(mlp.encode(obs), actions)
    torch.testing.assert_close(samples[0, :, 1:], trajectory.states["obs"], rtol=0, atol=1e-6)
    # And the trained model predicts the real open-loop trajectory.
    truth = obs[:, None] + STEP * actions.cumsum(1)
    assert (samples[0, :, 1:] - truth).abs().max() < 0.05


def test_imagine_sample_k_follows_member_k_mod_e(ensemble):
    obs, actions = torch.randn(2, 1) * 0.5, torch.rand(2, 4, 1) * 2 - 1
    samples = ensemble.imagine(obs, actions, 7)
    assert samples.shape == (7, 2, 5, 1)
    for k in (0, 3, 6):
        state = ensemble.encode(obs).replace(member=torch.full((2,), k % 5))
        with torch.no_grad():
            states = ensemble.rollout(state, actions).states["obs"]
        torch.testing.assert_close(samples[k, :, 1:], states, rtol=0, atol=1e-5)


def test_epistemic_variance_grows_away_from_the_training_data(ensemble):
    action = torch.zeros(64, 1)
    inside = ensemble.predict_uncertainty(torch.linspace(-0.9, 0.9, 64)[:, None], action)
    outside = ensemble.predict_uncertainty(torch.linspace(3.0, 5.0, 64)[:, None], action)
    assert float(outside["epistemic"].mean()) > 10 * float(inside["epistemic"].mean())
    assert float(inside["epistemic"].mean()) < 1e-3
    # The mean is still the known change 0.1 * a = 0 on the data.
    assert inside["mean"].abs().max() < 0.03


def test_gaussian_learns_where_the_noise_is():
    model = _fit(_build("gaussian"), _transitions(1024, seed=4, noisy=True), steps=400)
    action = torch.zeros(32, 1)
    quiet = model.predict_uncertainty(-0.2 - 0.7 * torch.rand(32, 1), action)["aleatoric"]
    noisy = model.predict_uncertainty(0.2 + 0.7 * torch.rand(32, 1), action)["aleatoric"]
    assert float(noisy.mean().sqrt()) == pytest.approx(0.3, rel=0.35)
    assert float(noisy.mean()) > 20 * float(quiet.mean())


@pytest.mark.parametrize("family", ["mlp", "ensemble-mlp", "gaussian"])
def test_smoke_task_learns_pendulum(family):
    cls = VARIANTS[family][0]
    assert cls.smoke_config().ensemble_size == min(VARIANTS[family][1], 3)
    result = cls.smoke_task(0)
    assert result.passed, result.description
    assert result.metric < 0.2
