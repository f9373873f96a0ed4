"""CUDA-graph replay of the TD-MPC2 update and MPPI decision.

The capture tests need a CUDA device and are skipped without one (CI has none; they run on the
lent GPU machines); the input checks and the sync-free helpers run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldflux.agents import build_agent
from worldflux.core.cuda_graph import CUDAGraphStep
from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer
from worldflux.models.tdmpc2.model import _percentile
from worldflux.planners import PlannerConfig, make_planner

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_percentile_matches_torch_quantile():
    for n in (1, 2, 7, 256):
        q = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3
        ordered = q.sort().values
        for p in (0.05, 0.5, 0.95):
            assert float(_percentile(ordered, p)) == pytest.approx(float(torch.quantile(q, p)),
                                                                   abs=1e-6)


def test_graph_step_rejects_host_tensors_and_changed_shapes():
    step = CUDAGraphStep(lambda x: {"y": x})
    with pytest.raises(ConfigError, match="input 'x'.*CUDA tensor"):
        step(x=torch.zeros(3))


def test_mppi_optimise_is_the_plan_of_the_planner():
    """``plan`` is ``optimise`` from the warm-started mean plus bookkeeping: same draws, same
    solution."""
    target = torch.tensor([[0.5], [-0.3], [0.1]])

    def objective(seq):
        return -(seq - target).pow(2).sum((1, 2))

    config = PlannerConfig(name="mppi", horizon=3, population=200, iterations=5, elites=20,
                           init_std=1.0, temperature=5.0)
    a = make_planner(config, 1, generator=torch.Generator().manual_seed(3))
    b = make_planner(config, 1, generator=torch.Generator().manual_seed(3))
    result = a.plan(objective)
    out = b.optimise(objective, None, b.initial_mean(), b.generator)
    torch.testing.assert_close(result.actions, out["mean"])
    assert result.value == pytest.approx(float(out["best_value"]))
    assert (result.actions - target).abs().max() < 0.1


@cuda
def test_graph_replay_trains_like_eager():
    """A captured forward/backward/Adam step gives the same parameters as the eager loop."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    x = torch.randn(64, 8, device=device)
    y = x @ torch.randn(8, 1, device=device)

    def make():
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Mish(),
                                  torch.nn.Linear(32, 1)).to(device)
        return net, torch.optim.Adam(net.parameters(), lr=1e-2, capturable=True)

    eager, eager_opt = make()
    graphed, graphed_opt = make()

    def step(inputs, targets):
        graphed_opt.zero_grad(set_to_none=True)
        loss = (graphed(inputs) - targets).pow(2).mean()
        loss.backward()
        graphed_opt.step()
        return {"loss": loss.detach()}

    runner = CUDAGraphStep(step, warmup=2,
                           before_capture=lambda: graphed_opt.zero_grad(set_to_none=True))
    losses = []
    for i in range(8):
        inputs, targets = x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]
        losses.append(float(runner(inputs=inputs, targets=targets)["loss"]))
        eager_opt.zero_grad()
        (eager(inputs) - targets).pow(2).mean().backward()
        eager_opt.step()
    assert runner.captured
    for p, q in zip(eager.parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="input 'inputs'.*fixed shapes"):
        runner(inputs=x, targets=y)


def _reward_buffer(obs_dim: int = 4, steps: int = 2000, seed: int = 0) -> ReplayBuffer:
    """Random walks whose reward is ``obs[0] * action`` (a model must learn it)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(steps, obs_shape=(obs_dim,), action_dim=1, seed=seed)
    obs = rng.normal(size=obs_dim).astype(np.float32)
    previous = obs
    for t in range(steps):
        first = t % 100 == 0
        action = np.zeros(1, np.float32) if first else rng.uniform(-1, 1, 1).astype(np.float32)
        reward = 0.0 if first else float(previous[0] * action[0])
        buffer.add(obs, action, reward, False, False, is_first=first)
        previous = obs
        obs = (0.9 * obs + 0.3 * rng.normal(size=obs_dim)).astype(np.float32)
    return buffer


@cuda
@pytest.mark.parametrize("graphs", [True, False])
def test_tdmpc2_agent_learns_and_plans_on_cuda(graphs):
    """The graphed update lowers the reward loss as the eager one does, and graphed decisions
    pick the rewarded action (reward ``obs[0] * a``: sign of ``obs[0]``)."""
    device = torch.device("cuda")
    agent = build_agent("tdmpc2", ObservationSpec((4,)), ActionSpec(1), device=device, seed=0,
                        overrides={"model.model_size": "1", "cuda_graphs": str(graphs).lower(),
                                   "batch_size": "64"})
    agent.set_episode_length(100)
    assert agent._graphs is graphs
    buffer = _reward_buffer()
    first = agent.train_step(buffer)
    for _ in range(300):
        last = agent.train_step(buffer)
    assert last["model/reward_loss"] < 0.5 * first["model/reward_loss"]
    assert np.isfinite(last["policy/pi_loss"]) and agent.nonfinite.in_a_row == 0
    agent.env_steps = 10**9
    agent.reset()
    right = 0
    for i in range(20):
        obs = np.zeros(4, np.float32)
        obs[0] = 1.5 if i % 2 else -1.5
        action = agent.act(obs, explore=False)
        assert action.shape == (1,) and -1 <= action[0] <= 1
        right += int(np.sign(action[0]) == np.sign(obs[0]))
    assert right >= 16, right
    if graphs:
        assert agent._update_graph.captured and agent._decide_graph.captured
        assert float(agent._has_previous) == 1.0
        agent.reset()
        assert float(agent._has_previous) == 0.0


def test_graphs_stay_on_in_single_process_fp32_training(monkeypatch):
    """The training loop always passes a DistContext (one process: TD-MPC2 is not
    distributed); only mixed precision turns the graphs off, and the optimisers then lose the
    graph's found_inf flag."""
    import worldflux.agents.tdmpc2 as module
    from worldflux.core.distributed import DistContext

    monkeypatch.setattr(module, "graphs_available", lambda device: True)
    agent = build_agent("tdmpc2", ObservationSpec((3,)), ActionSpec(1),
                        device=torch.device("cpu"), overrides={"model.model_size": "1"})
    assert agent._graphs and agent.optimizer.defaults["fused"]
    agent.configure_training(precision="fp32", dist=DistContext())
    assert agent._graphs and agent._update_graph is not None
    agent.configure_training(precision="bf16", dist=DistContext())
    assert not agent._graphs and agent._update_graph is None
    assert not hasattr(agent.optimizer, "found_inf")


@cuda
def test_a_graphed_agent_resumes_from_its_state():
    """Loading a state re-captures around the new optimiser tensors: the resumed agent's
    updates move its parameters and its planner starts from the saved warm start."""
    device = torch.device("cuda")
    overrides = {"model.model_size": "1", "batch_size": "64"}
    agent = build_agent("tdmpc2", ObservationSpec((4,)), ActionSpec(1), device=device, seed=0,
                        overrides=overrides)
    agent.set_episode_length(100)
    buffer = _reward_buffer()
    for _ in range(6):
        agent.train_step(buffer)
    agent.env_steps = 10**9
    agent.act(np.ones(4, np.float32), explore=True)
    state = agent.state_dict()
    resumed = build_agent("tdmpc2", ObservationSpec((4,)), ActionSpec(1), device=device,
                          seed=1, overrides=overrides)
    resumed.set_episode_length(100)
    for _ in range(6):  # captured before the load, as in a run that resumes mid-way
        resumed.train_step(buffer)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed._previous, agent._previous)
    before = [p.detach().clone() for p in resumed.model.parameters()]
    steps = [resumed.optimizer.state[p]["step"].item() for p in resumed.model.encoder.parameters()]
    for _ in range(5):
        metrics = resumed.train_step(buffer)
    assert np.isfinite(metrics["model/model_loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, resumed.model.parameters(),
                                                     strict=True))
    after = [resumed.optimizer.state[p]["step"].item() for p in resumed.model.encoder.parameters()]
    assert after == [s + 5 for s in steps]
