"""Smoke tasks: the synthetic linear-Gaussian data, the generic task and the PETS override."""

from __future__ import annotations

import pytest
import torch
from quality_models import TinyLinearModel

from worldflux.core import ActionSpec, IOContract, ObservationSpec
from worldflux.models.pets import PETSModel
from worldflux.quality import LinearGaussianSystem, SmokeResult, generic_smoke_task
from worldflux.quality.smoke import relative_decrease


class FrozenModel(TinyLinearModel):
    """Its loss does not depend on the parameters (gradients are zero): it never learns."""

    def loss(self, batch):
        out = super().loss(batch)
        return type(out)(out.loss.detach() + 0 * sum(p.sum() for p in self.parameters()))


@pytest.mark.parametrize("obs_spec, action_spec", [
    (ObservationSpec((5,)), ActionSpec(2)),
    (ObservationSpec((2, 3)), ActionSpec(1, low=-2.0, high=2.0)),
    (ObservationSpec((3, 8, 8), "uint8"), ActionSpec(4, "discrete")),
], ids=["flat", "float-2d", "image-discrete"])
def test_linear_gaussian_batches_follow_the_contract(obs_spec, action_spec):
    contract = IOContract(obs_spec, action_spec)
    batch = LinearGaussianSystem(contract, seed=3).batch(6, 9)
    checked = contract.validate_batch(batch)  # raises on any key, shape or dtype problem
    assert checked["obs"].shape == (6, 9, *obs_spec.shape)
    assert checked["obs"].dtype == (torch.uint8 if obs_spec.dtype == "uint8" else torch.float32)
    assert batch["is_first"][:, 0].all() and not batch["is_first"][:, 1:].any()
    assert torch.equal(batch["actions"][:, 0], torch.zeros(6, action_spec.dim))
    assert float(batch["rewards"][:, 0].abs().max()) == 0.0
    actions = batch["actions"][:, 1:]
    if action_spec.kind == "discrete":
        assert torch.equal(actions.sum(-1), torch.ones(6, 8))
    else:
        assert float(actions.min()) >= action_spec.low and float(actions.max()) <= action_spec.high
        assert float(actions.max() - actions.min()) > 0.5 * (action_spec.high - action_spec.low)
    again = LinearGaussianSystem(contract, seed=3).batch(6, 9)
    other = LinearGaussianSystem(contract, seed=4).batch(6, 9)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert not torch.equal(batch["obs"], other["obs"])


def test_flat_system_is_linear_with_the_documented_noise():
    system = LinearGaussianSystem(IOContract(ObservationSpec((4,)), ActionSpec(2)), seed=0)
    batch = system.batch(256, 6)
    z, nxt = batch["obs"][:, :-1].reshape(-1, 4), batch["obs"][:, 1:].reshape(-1, 4)
    a = batch["actions"][:, 1:].reshape(-1, 2)
    x = torch.cat([z, a], -1)
    solution = torch.linalg.lstsq(x, nxt).solution
    residual = (x @ solution - nxt).pow(2).mean()
    assert float(residual) == pytest.approx(0.05 ** 2, rel=0.15)  # only the process noise is left
    assert torch.allclose(solution[:4].T, system.M, atol=0.02)
    reward = batch["rewards"][:, 1:].reshape(-1)
    assert torch.allclose(reward, nxt @ system.c + a @ system.e, atol=1e-5)


def test_relative_decrease_handles_negative_losses():
    assert relative_decrease(2.0, 1.0) == pytest.approx(0.5)
    assert relative_decrease(-1.0, -3.0) == pytest.approx(2.0)
    assert relative_decrease(1.0, 1.5) == pytest.approx(-0.5)
    assert relative_decrease(float("nan"), 1.0) != relative_decrease(float("nan"), 1.0)


def test_generic_smoke_task_passes_when_the_loss_falls_and_fails_when_frozen(register_family):
    register_family("test-smoke-linear", TinyLinearModel)
    register_family("test-smoke-frozen", FrozenModel)
    rng = torch.get_rng_state()
    learned = TinyLinearModel.smoke_task(0, True)  # the default hook: generic_smoke_task
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    assert isinstance(learned, SmokeResult)
    assert learned.passed and learned.metric >= learned.threshold == pytest.approx(0.3)
    assert "linear-Gaussian" in learned.description
    assert generic_smoke_task(TinyLinearModel, 0, True).metric == learned.metric  # reproducible
    frozen = FrozenModel.smoke_task(0, True)
    assert not frozen.passed and frozen.metric == pytest.approx(0.0, abs=1e-6)


def test_pets_smoke_task_fits_pendulum_dynamics():
    first = PETSModel.smoke_task(1, True)
    assert first.passed and first.threshold == pytest.approx(0.2)
    assert first.metric < 0.05  # far better than the 20% of the no-change baseline required
    assert "Pendulum-v1" in first.description
    assert PETSModel.smoke_task(1, True).metric == pytest.approx(first.metric)
    assert PETSModel.smoke_specs() == (ObservationSpec((3,)), ActionSpec(1))


def test_dreamerv3_smoke_task_trains_the_smallest_preset():
    """``worldflux verify dreamerv3``: the generic task on size1m (seconds, not minutes)."""
    from worldflux.models.dreamerv3.model import DreamerV3Model

    result = DreamerV3Model.smoke_task(0, True)
    assert result.passed and result.metric > 0.5, result
