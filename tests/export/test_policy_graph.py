"""The PyTorch reference of the exported MPC decision computes what the agent's planner computes.

Given the very draws the agent's generators make, :class:`PETSPolicyGraph` must return the
agent's action, warm start and value (every planner and propagation it supports).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldflux.core.errors import ConfigError
from worldflux.export import policy_graph, sample_policy_noise
from worldflux.export.runtime import colored_noise as np_colored_noise
from worldflux.planners.noise import colored_noise


def _clone(generator: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(generator.get_state())


def agent_draws(agent, graph, has_elites: bool) -> dict[str, torch.Tensor]:
    """The noise the agent's planner and objective will draw next, laid out as graph inputs."""
    lay, cfg = graph.layout, graph.planner
    It, H, A, E, T = lay.iterations, lay.horizon, lay.action_dim, lay.ensemble_size, lay.target_dim
    planner_gen, model_gen = _clone(agent.planner.generator), _clone(agent.generator)
    feeds = {"sample_noise": torch.zeros(It, lay.max_population, H, A),
             "particle_noise": torch.zeros(It, H, E, lay.max_columns, T),
             "member_noise": torch.ones(It, H, E * lay.max_columns)}
    if lay.planner == "icem":
        feeds["tail_noise"] = torch.zeros(lay.keep, A)
        if has_elites:
            feeds["tail_noise"] = torch.randn((lay.keep, 1, A), generator=planner_gen)[:, 0]
    for i in range(It):
        P = lay.populations[i]
        if lay.planner == "icem":
            feeds["sample_noise"][i, :P] = colored_noise(cfg.noise_beta, (P, H, A),
                                                         generator=planner_gen)
        else:
            feeds["sample_noise"][i, :P] = torch.randn((P, H, A), generator=planner_gen)
        rows = lay.sequences[i] - (lay.keep if i == 0 and not has_elites else 0)
        M = -(-rows * lay.num_particles // E)
        for t in range(H):
            if lay.propagation == "ts1":
                perm = torch.randperm(E * M, generator=model_gen)
                # argsort of these uniforms is exactly ``perm``.
                feeds["member_noise"][i, t, perm] = torch.arange(E * M) / (E * M)
            if lay.stochastic:
                feeds["particle_noise"][i, t, :, :M] = torch.randn((E, M, T), generator=model_gen)
    if lay.propagation != "ts1":
        del feeds["member_noise"]
    if not lay.stochastic:
        del feeds["particle_noise"]
    return feeds


CASES = [("cem", "ts_inf", {}), ("cem", "ts1", {"discount": "0.9"}),
         ("cem", "ts_inf", {"planner.bounded_std": "false"}),
         ("icem", "expectation", {"planner.bounded_std": "false"}),
         ("cem", "ts_inf", {"risk.measure": "cvar", "risk.alpha": "0.3"}),
         ("mppi", "ts1", {"risk.measure": "entropic", "risk.beta": "0.05"}),
         ("cem", "expectation", {"risk.measure": "mean_std", "risk.lam": "0.5"}),
         ("icem", "ts_inf", {"risk.measure": "worst"}),
         ("cem", "ts1", {"model.stochastic": "false"}),
         ("icem", "ts_inf", {"model.stochastic": "false", "risk.measure": "var"}),
         ("mppi", "expectation", {}), ("mppi", "ts_inf", {"planner.return_best": "true"}),
         ("icem", "ts_inf", {}), ("icem", "ts1", {"planner.icem_execute": "mean"})]


@pytest.mark.parametrize(("planner", "propagation", "extra"), CASES,
                         ids=[f"{p}-{q}{'-' + next(iter(e)) if e else ''}" for p, q, e in CASES])
def test_reference_reproduces_the_agents_own_decisions(make_agent, planner, propagation, extra):
    # Deterministic members are planned through at their initial weights.
    agent = make_agent({"planner.name": planner, "propagation": propagation, **extra},
                       fit="model.stochastic" not in extra)
    graph = policy_graph(agent)
    assert graph.layout.propagation == propagation and graph.planner.name == planner
    rng = np.random.default_rng(1)
    agent.reset()
    for decision in range(3):  # the first decision and two warm-started ones
        obs = rng.normal(size=3).astype(np.float32)
        has_elites = planner == "icem" and decision > 0
        feeds = {"obs": torch.as_tensor(obs), "init_mean": agent.planner.initial_mean(),
                 **agent_draws(agent, graph, has_elites)}
        if planner == "icem":
            elites = agent.planner._elites
            feeds["prev_elites"] = elites if has_elites else torch.zeros(graph.layout.keep, 5, 1)
            feeds["prev_elites_valid"] = torch.tensor(1.0 if has_elites else 0.0)
        if has_elites or planner != "icem":
            with torch.no_grad():
                out = dict(zip(graph.output_names,
                               graph(*(feeds[n] for n in graph.input_names)), strict=True))
        result = agent.plan(obs)
        if not (has_elites or planner != "icem"):
            continue  # iCEM's first decision scores fewer rows: its noise layout differs
        torch.testing.assert_close(out["action"], result.first_action, atol=1e-5, rtol=0)
        assert float(out["plan_value"]) == pytest.approx(result.value, abs=1e-4)
        torch.testing.assert_close(out["next_mean"], agent.planner.initial_mean(), atol=1e-5,
                                   rtol=0)
        if planner == "icem":
            torch.testing.assert_close(out["next_elites"], agent.planner._elites, atol=1e-5,
                                       rtol=0)


def test_icem_first_decision_ignores_invalid_elites(agent):
    graph = policy_graph(agent, {"planner.name": "icem"})
    feeds = {"obs": torch.tensor([0.5, 0.3, -1.0]), "init_mean": graph.centre(),
             **{k: torch.as_tensor(v) for k, v in
                sample_policy_noise(graph.layout.to_dict(), np.random.default_rng(0)).items()},
             "prev_elites": torch.zeros(graph.layout.keep, 5, 1),
             "prev_elites_valid": torch.tensor(0.0)}
    with torch.no_grad():
        first = graph(*(feeds[n] for n in graph.input_names))
        feeds["prev_elites"] = torch.full_like(feeds["prev_elites"], 1e6)  # would be clipped in
        second = graph(*(feeds[n] for n in graph.input_names))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_policy_graph_rejects_what_it_cannot_express(agent):
    with pytest.raises(ConfigError, match="planner.name: got 'random'"):
        policy_graph(agent, {"planner.name": "random"})
    with pytest.raises(ConfigError, match="model.hidden_size: cannot be changed at export"):
        policy_graph(agent, {"model.hidden_size": "8"})
    with pytest.raises(ConfigError, match="planner.populaton"):
        policy_graph(agent, {"planner.populaton": "8"})
    with pytest.raises(ConfigError, match="elites"):
        policy_graph(agent, {"planner.elites": "100"})


def test_numpy_colored_noise_has_unit_variance_and_is_smooth():
    rng = np.random.default_rng(0)
    for beta in (0.0, 2.0):
        x = np_colored_noise(beta, (4000, 16, 2), rng)
        assert x.shape == (4000, 16, 2) and x.dtype == np.float32
        assert float(x.var()) == pytest.approx(1.0, abs=0.05)
        lag1 = float((x[:, 1:] * x[:, :-1]).mean())
        torch_x = colored_noise(beta, (4000, 16, 2), generator=torch.Generator().manual_seed(0))
        torch_lag1 = float((torch_x[:, 1:] * torch_x[:, :-1]).mean())
        assert lag1 == pytest.approx(torch_lag1, abs=0.05)
        assert (lag1 > 0.5) if beta else math.isclose(lag1, 0.0, abs_tol=0.05)
