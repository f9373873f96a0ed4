"""Shared fixtures of the export tests: a small PETS agent fitted briefly on random Pendulum data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.agents import build_agent
from worldflux.training.config import TrainConfig
from worldflux.training.environment import make_env, specs_for

SMALL = {"model.hidden_size": "32", "model.num_layers": "2", "model.ensemble_size": "3",
         "planner.name": "cem", "planner.population": "24", "planner.iterations": "2",
         "planner.elites": "5", "planner.horizon": "5", "num_particles": "4",
         "planning_dtype": "float32", "max_epochs": "10", "seed_steps": "0"}


class _Transitions:
    """The part of a replay buffer that ``PETSAgent.train_model`` reads."""

    def __init__(self, obs, action, reward, next_obs):
        self.data = (obs, action, reward, next_obs, np.zeros(len(obs), bool))

    def all_transitions(self):
        return self.data


def random_pendulum_transitions(steps: int = 400, seed: int = 0) -> _Transitions:
    env = make_env(TrainConfig(env="Pendulum-v1"), seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, reward, next_obs))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    o, a, r, n = (np.asarray(x, np.float32) for x in zip(*rows, strict=True))
    return _Transitions(o, a, r, n)


def fitted_agent(overrides: dict[str, str] | None = None, fit: bool = True):
    """A PETS agent for Pendulum whose ensemble was fitted on 400 random transitions (with
    ``fit=False``: left at its initial weights, but marked trained)."""
    env = make_env(TrainConfig(env="Pendulum-v1"), seed=0)
    obs_spec, action_spec = specs_for(env)
    env.close()
    agent = build_agent("pets", obs_spec, action_spec, device=torch.device("cpu"), seed=0,
                        overrides={**SMALL, **(overrides or {})})
    if fit:
        agent.train_model(random_pendulum_transitions())
    agent.trained = True
    return agent


@pytest.fixture(scope="package")
def make_agent():
    """:func:`fitted_agent`: ``make_agent({"planner.name": "icem"})`` builds and fits one."""
    return fitted_agent


@pytest.fixture(scope="package")
def agent():
    """Fitted PETS agent (CEM, TS-inf); tests must not change its settings."""
    return fitted_agent()
