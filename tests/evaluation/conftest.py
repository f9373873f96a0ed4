"""Fixtures of the evaluation tests: a small PETS model fitted on random Pendulum-v1 episodes,
held-out episodes, and a tiny real PETS run directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.evaluation import collect_episodes
from worldflux.models.pets import PETSModel
from worldflux.models.pets.config import PETSConfig

PETS_RUN_OVERRIDES = {
    "seed_steps": "200", "num_particles": "2", "max_epochs": "5", "model.hidden_size": "32",
    "model.ensemble_size": "2", "planner.population": "20", "planner.elites": "5",
    "planner.iterations": "1", "planner.horizon": "5",
}
"""A PETS agent small enough to train and evaluate on one Pendulum episode in a few seconds."""


def transitions(episodes):
    """``(obs, action, reward, next_obs)`` tensors of every step of ``episodes``."""
    pick = lambda key, rows: np.concatenate([e[key][rows] for e in episodes])  # noqa: E731
    arrays = (pick("obs", slice(None, -1)), pick("actions", slice(1, None)),
              pick("rewards", slice(1, None)), pick("obs", slice(1, None)))
    return [torch.as_tensor(a) for a in arrays]


@pytest.fixture(scope="session")
def fitted_pets() -> PETSModel:
    """A 3-member ensemble (2 x 64 units) fitted for 200 Adam steps on 400 random Pendulum
    transitions (about a second)."""
    episodes = collect_episodes("Pendulum-v1", "random", episodes=2, seed=0)
    obs, act, rew, nxt = transitions(episodes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = PETSConfig(ensemble_size=3, hidden_size=64, num_layers=2)
        model = PETSModel(config, ObservationSpec((3,)), ActionSpec(1))
        model.fit_normalizers(obs, act, rew, nxt)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
        for _ in range(200):
            idx = torch.randint(obs.shape[0], (config.ensemble_size, 64))
            out = model.transition_loss(obs[idx], act[idx], rew[idx], nxt[idx])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def heldout():
    """Three random-action Pendulum-v1 episodes (200 steps) from seeds the model never saw."""
    return collect_episodes("Pendulum-v1", "random", episodes=3, seed=20_000)


@pytest.fixture(scope="session")
def pets_run(tmp_path_factory):
    """A finished tiny PETS run on Pendulum-v1 (one episode, one evaluation episode)."""
    from worldflux.training import TrainConfig, train

    out = tmp_path_factory.mktemp("report") / "pets-run"
    config = TrainConfig(env="Pendulum-v1", steps=210, seed=0, eval_episodes=1,
                         tensorboard=False, device="cpu")
    train("pets", config, PETS_RUN_OVERRIDES, out, progress=False)
    return out
