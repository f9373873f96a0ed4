"""Fixtures of the quality-gate tests: throwaway families and a tiny real PETS run."""

from __future__ import annotations

import pytest

from worldflux.core import WorldModelRegistry

PETS_RUN_OVERRIDES = {
    "seed_steps": "200", "num_particles": "2", "max_epochs": "5", "model.hidden_size": "32",
    "model.ensemble_size": "2", "planner.population": "20", "planner.elites": "5",
    "planner.iterations": "1", "planner.horizon": "5",
}
"""A PETS agent small enough to train and evaluate on one Pendulum episode in a few seconds."""


@pytest.fixture
def register_family():
    """``register(name, cls)`` adds a family for one test and removes it afterwards."""
    added: list[str] = []

    def register(name: str, cls: type, config_cls: type | None = None) -> type:
        cls.family = name
        WorldModelRegistry.register(name, config_cls, tier="experimental")(cls)
        added.append(name)
        return cls

    yield register
    for name in added:
        WorldModelRegistry._entries.pop(name, None)


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory):
    """A finished tiny PETS run on Pendulum-v1 (one episode, one evaluation episode)."""
    from worldflux.training import TrainConfig, train

    out = tmp_path_factory.mktemp("verify") / "pets-run"
    config = TrainConfig(env="Pendulum-v1", steps=210, seed=0, eval_episodes=1,
                         tensorboard=False, device="cpu")
    train("pets", config, PETS_RUN_OVERRIDES, out, progress=False)
    return out
