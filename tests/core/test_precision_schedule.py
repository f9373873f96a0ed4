"""Mixed precision (one switch) and learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldflux.core.errors import ConfigError
from worldflux.core.precision import MixedPrecision
from worldflux.core.schedule import LRScheduleConfig, build_lr_scheduler, lr_factor


def test_fp16_on_cpu_and_unknown_modes_are_clear_errors():
    with pytest.raises(ConfigError, match="train.precision.*'fp16'.*CUDA"):
        MixedPrecision("fp16", "cpu")
    with pytest.raises(ConfigError, match="train.precision: got 'half'"):
        MixedPrecision("half", "cpu")


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_training_steps_learn_a_regression_in_each_precision(mode):
    torch.manual_seed(0)
    amp = MixedPrecision(mode, "cpu")
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x = torch.randn(512, 4)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])).sin()
    losses = []
    for _ in range(300):
        with amp.autocast():
            pred = net(x)
            if mode == "bf16":
                assert pred.dtype == torch.bfloat16  # the forward really ran in bfloat16
        loss = (pred.float() - y).pow(2).mean()
        opt.zero_grad()
        amp.backward(loss)
        assert amp.step(opt, net.named_parameters())
        losses.append(float(loss.detach()))
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay fp32
    assert losses[-1] < 0.3 * losses[0]


def test_step_skips_non_finite_gradients_through_the_guard():
    from worldflux.agents.base import NonFiniteGuard

    amp = MixedPrecision("bf16", "cpu")
    net = torch.nn.Linear(2, 1)
    before = net.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.ones(1, 2)).sum().backward()
    net.weight.grad[0, 0] = float("nan")
    guard = NonFiniteGuard(limit=5)
    assert not amp.step(opt, net.named_parameters(), guard, "test")
    assert guard.in_a_row == 1 and torch.equal(net.weight, before)


def test_schedule_factors_warmup_then_cosine_and_linear():
    cos = LRScheduleConfig("cosine", warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert lr_factor(cos, 0) == pytest.approx(0.1)
    assert lr_factor(cos, 9) == pytest.approx(1.0)
    assert lr_factor(cos, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_factor(cos, 110) == pytest.approx(0.1)
    assert lr_factor(cos, 500) == pytest.approx(0.1)
    lin = LRScheduleConfig("linear", total_steps=100)
    assert [lr_factor(lin, s) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor(LRScheduleConfig(), 12345) == 1.0


def test_scheduler_drives_the_optimizer_learning_rate():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    sched = build_lr_scheduler(opt, LRScheduleConfig("cosine", warmup_steps=2, total_steps=6))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * lr_factor(sched_cfg, s) for s, sched_cfg in
                zip(range(7), [LRScheduleConfig("cosine", 2, 6)] * 7, strict=True)]
    assert lrs == pytest.approx(expected)
    assert lrs[1] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("bad, match", [
    (LRScheduleConfig("cosine", total_steps=0), "total_steps"),
    (LRScheduleConfig("exp"), "name"),
    (LRScheduleConfig(min_ratio=2.0), "min_ratio"),
    (LRScheduleConfig(warmup_steps=-1), "warmup_steps"),
])
def test_bad_schedules_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        bad.validate()


def _pendulum_agent(**overrides):
    from worldflux.agents import build_agent
    from worldflux.core.spec import ActionSpec, ObservationSpec

    return build_agent("pets", ObservationSpec((3,)), ActionSpec(1), device=torch.device("cpu"),
                       seed=0, overrides={"max_epochs": "4", **overrides})


class _Buffer:
    """Random Pendulum transitions in the shape ``ReplayBuffer.all_transitions`` returns."""

    def __init__(self, n=600, seed=0):
        import gymnasium as gym

        env = gym.make("Pendulum-v1")
        obs, _ = env.reset(seed=seed)
        rows = {k: [] for k in ("obs", "action", "reward", "next")}
        rng = np.random.default_rng(seed)
        for _ in range(n):
            action = rng.uniform(-2, 2, 1).astype(np.float32)
            nxt, reward, *_ = env.step(action)
            for key, value in zip(rows, (obs, action / 2, reward, nxt), strict=True):
                rows[key].append(np.asarray(value, np.float32))
            obs = nxt
        self.data = tuple(np.stack(v) for v in rows.values())

    def all_transitions(self):
        obs, action, reward, nxt = self.data
        return obs, action, reward, nxt, np.zeros(len(obs), bool)


def test_pets_trains_in_bf16_with_a_cosine_schedule_and_resumes_it():
    agent = _pendulum_agent(**{"lr_schedule.name": "cosine", "lr_schedule.warmup_steps": "5",
                               "lr_schedule.total_steps": "200"})
    agent.configure_training(precision="bf16")
    buffer = _Buffer()
    out = agent.train_model(buffer)
    assert out["model/nll_last_epoch"] < out["model/nll_first_epoch"] - 0.5
    steps = agent.optimizer_steps
    assert steps > 5 and agent.scheduler.last_epoch == steps
    assert out["model/lr"] == pytest.approx(1e-3 * lr_factor(agent.config.lr_schedule, steps))
    # the schedule continues exactly after a checkpoint round trip
    clone = _pendulum_agent(**{"lr_schedule.name": "cosine", "lr_schedule.warmup_steps": "5",
                               "lr_schedule.total_steps": "200"})
    clone.load_state_dict(agent.state_dict())
    assert clone.scheduler.last_epoch == steps
    assert clone.optimizer.param_groups[0]["lr"] == pytest.approx(
        agent.optimizer.param_groups[0]["lr"])
    assert math.isfinite(out["model/holdout_mse"])


def test_deterministic_members_train_through_the_agent():
    agent = _pendulum_agent(**{"model.stochastic": "false"})
    out = agent.train_model(_Buffer(n=400))
    assert out["model/nll_last_epoch"] < out["model/nll_first_epoch"]  # the MSE here
    assert math.isfinite(out["model/holdout_mse"])
