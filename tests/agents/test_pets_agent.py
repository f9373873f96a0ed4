"""PETS MPC agent: a real (tiny) training run must learn Pendulum well above random actions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldflux.agents import build_agent
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.training.config import TrainConfig
from worldflux.training.environment import EVAL_SEED_OFFSET, make_env, specs_for
from worldflux.training.evaluate import evaluate, evaluate_run
from worldflux.training.loop import train

SMALL = {"model.hidden_size": "64", "model.num_layers": "2", "planner.name": "cem",
         "planner.population": "100", "planner.iterations": "3", "planner.elites": "10",
         "num_particles": "10", "seed_steps": "200"}


@pytest.mark.slow
def test_pets_learns_pendulum_swing_up_beyond_random(tmp_path):
    """One random episode, one model fit, then MPC: evaluation beats random by a wide margin."""
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=0, eval_episodes=2, tensorboard=False)
    summary = train("pets", config, SMALL, tmp_path / "run", progress=False)
    env = make_env(config, seed=config.seed + EVAL_SEED_OFFSET)
    obs_spec, action_spec = specs_for(env)
    random_agent = build_agent("random", obs_spec, action_spec, device=torch.device("cpu"))
    baseline = evaluate(random_agent, env, 2, config.seed + EVAL_SEED_OFFSET)
    learned = summary["final_eval"]["mean"]
    assert learned > baseline["mean"] + 300, (learned, baseline["mean"])

    # The world model itself predicts held-out transitions well (normalised MSE).
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    holdout = [r["train/model/holdout_mse"] for r in rows if "train/model/holdout_mse" in r]
    assert holdout and holdout[-1] < 0.1

    # The saved run evaluates to the same returns (same seeds, deterministic planner seed).
    again = evaluate_run(tmp_path / "run", 2)
    assert np.allclose(again["returns"], summary["final_eval"]["returns"])


def test_pets_agent_rejects_discrete_actions():
    with pytest.raises(ConfigError, match="continuous"):
        build_agent("pets", ObservationSpec((4,)), ActionSpec(2, "discrete"),
                    device=torch.device("cpu"))


def test_pets_agent_plans_with_every_planner_and_reports_horizon():
    for name in ("random", "cem", "mppi", "icem"):
        agent = build_agent("pets", ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"),
                            overrides={**SMALL, "planner.name": name, "planner.horizon": "7"})
        agent.trained = True
        result = agent.plan(np.zeros(3, np.float32))
        assert result.actions.shape == (7, 1)
        assert result.extras["wf.planner.horizon"] == 7
        assert -1.0 <= float(result.first_action) <= 1.0


def test_pets_agent_plans_with_a_given_reward_function():
    """With a known reward (maximise the first state coordinate), the plan pushes it up."""
    agent = build_agent("pets", ObservationSpec((1,)), ActionSpec(1), device=torch.device("cpu"),
                        overrides={**SMALL, "model.learn_reward": "false", "model.ensemble_size": "2",
                                   "num_particles": "2"})
    with pytest.raises(ConfigError, match="reward function"):
        agent.plan(np.zeros(1, np.float32))
    # Fit the ensemble to x' = x + 0.5 * a so that the plan can be checked.
    x = torch.rand(512, 1) * 2 - 1
    a = torch.rand(512, 1) * 2 - 1
    agent.model.fit_normalizers(x, a, torch.zeros(512), x + 0.5 * a)
    for _ in range(300):
        out = agent.model.transition_loss(x.expand(2, -1, -1), a.expand(2, -1, -1),
                                          torch.zeros(2, 512), (x + 0.5 * a).expand(2, -1, -1))
        agent.optimizer.zero_grad()
        out.loss.backward()
        agent.optimizer.step()
    agent.set_reward_function(lambda obs, action, next_obs: next_obs[:, 0])
    agent.trained = True
    assert float(agent.plan(np.zeros(1, np.float32)).first_action) > 0.5


def test_risk_averse_planning_avoids_the_noisy_action_and_logs_the_return_spread():
    """x' = x + 0.2 a + 1.5 max(a, 0) eps, reward x': pushing right pays 0.2 on average but is
    noisy; the mean prefers a = 1, CVaR / worst case prefer a ~ 0 (no noise)."""
    torch.manual_seed(0)
    n = 2048
    x = torch.rand(n, 1) * 2 - 1
    a = torch.rand(n, 1) * 2 - 1
    nxt = x + 0.2 * a + 1.5 * a.clamp_min(0) * torch.randn(n, 1)
    first = {}
    for measure in ("mean", "cvar", "worst"):
        agent = build_agent("pets", ObservationSpec((1,)), ActionSpec(1),
                            device=torch.device("cpu"),
                            overrides={**SMALL, "model.learn_reward": "false",
                                       "planner.horizon": "1", "num_particles": "40",
                                       "risk.measure": measure, "risk.alpha": "0.1"})
        agent.model.fit_normalizers(x, a, torch.zeros(n), nxt)
        gen = torch.Generator().manual_seed(0)
        for _ in range(400):
            idx = torch.randint(n, (5, 256), generator=gen)
            out = agent.model.transition_loss(x[idx], a[idx], torch.zeros(5, 256), nxt[idx])
            agent.optimizer.zero_grad()
            out.loss.backward()
            agent.optimizer.step()
        agent.set_reward_function(lambda obs, action, next_obs: next_obs[:, 0] - obs[:, 0])
        agent.trained = True
        first[measure] = float(agent.plan(np.zeros(1, np.float32)).first_action)
        metrics = agent.planner_metrics()
        assert {"planner/return_mean", "planner/return_std"} <= set(metrics)
        if measure == "mean":
            assert metrics["planner/return_std"] > 0.5  # the chosen noisy plan has a wide spread
    assert first["mean"] > 0.6
    assert abs(first["cvar"]) < 0.3 and abs(first["worst"]) < 0.3
