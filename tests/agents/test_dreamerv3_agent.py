"""DreamerV3 agent: lambda-returns, return normalisation, slow critic, gradient isolation,
checkpoints, and short real training runs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from worldflux.agents import build_agent
from worldflux.agents.dreamerv3 import ReturnNormalizer, lambda_returns
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer
from worldflux.data.tensors import to_torch

TINY = {"model.size": "size1m", "model.deter": "32", "model.hidden": "16", "model.units": "16",
        "model.classes": "4", "model.stoch": "4", "model.blocks": "2", "batch_size": "4",
        "batch_length": "8", "imag_horizon": "5"}


def tiny_agent(kind: str = "continuous", obs_dim: int = 3, action_dim: int = 2, **extra):
    overrides = {**TINY, **{k: str(v) for k, v in extra.items()}}
    spec = ActionSpec(action_dim, kind)
    return build_agent("dreamerv3", ObservationSpec((obs_dim,)), spec,
                       device=torch.device("cpu"), seed=0, overrides=overrides)


def random_buffer(agent, episodes: int = 6, length: int = 12, seed: int = 0,
                  reward_fn=None) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    obs_dim, spec = agent.obs_spec.shape[0], agent.action_spec
    buffer = ReplayBuffer(episodes * (length + 1), obs_shape=(obs_dim,), action_dim=spec.dim,
                          seed=seed)
    for _ in range(episodes):
        obs = rng.normal(size=obs_dim).astype(np.float32)
        buffer.add(obs, np.zeros(spec.dim, np.float32), 0.0, False, False, is_first=True)
        for _ in range(length):
            if spec.kind == "discrete":
                action = np.eye(spec.dim, dtype=np.float32)[rng.integers(spec.dim)]
            else:
                action = rng.uniform(-1, 1, spec.dim).astype(np.float32)
            obs = (0.9 * obs + 0.1 * rng.normal(size=obs_dim)).astype(np.float32)
            reward = float(reward_fn(action)) if reward_fn else float(obs[0])
            buffer.add(obs, action, reward, False, False, is_first=False)
    return buffer


# -- mechanisms against hand-computed values -------------------------------------------------------
def test_lambda_returns_hand_values():
    rewards = torch.tensor([[1.0], [2.0]])            # r_1, r_2
    values = torch.tensor([[0.0], [10.0], [20.0]])    # v_0, v_1, v_2
    discounts = torch.tensor([[0.5], [0.5]])
    ret = lambda_returns(rewards, values, discounts, lam=0.5)
    # R_1 = 2 + 0.5 * (0.5 * 20 + 0.5 * 20) = 12; R_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5
    assert ret[:, 0].tolist() == pytest.approx([6.5, 12.0])
    # lambda = 1: discounted Monte-Carlo returns bootstrapped at the end
    mc = lambda_returns(rewards, values, discounts, lam=1.0)
    assert mc[:, 0].tolist() == pytest.approx([1 + 0.5 * (2 + 0.5 * 20), 2 + 0.5 * 20])


def test_return_normaliser_percentiles_ema_and_floor():
    x = torch.arange(101, dtype=torch.float32)       # P5 = 5, P95 = 95
    norm = ReturnNormalizer(decay=0.99, low=5, high=95, floor=1.0)
    norm.update(x)
    assert float(norm.low) == pytest.approx(0.05)
    assert float(norm.high) == pytest.approx(0.95)
    assert float(norm.scale()) == 1.0                 # range 0.9 is floored at 1
    norm.update(x)
    assert float(norm.low) == pytest.approx(0.99 * 0.05 + 0.05)
    assert float(norm.high) == pytest.approx(0.99 * 0.95 + 0.95)
    exact = ReturnNormalizer(decay=0.0)
    exact.update(x)
    assert float(exact.scale()) == pytest.approx(90.0)


def test_slow_critic_moves_by_two_percent_per_update():
    agent = tiny_agent()
    with torch.no_grad():
        for slow, fast in zip(agent.slow_critic.parameters(), agent.critic.parameters(),
                              strict=True):
            slow.fill_(0.0)
            fast.fill_(1.0)
    agent.update_slow_critic()
    assert all(torch.allclose(p, torch.full_like(p, 0.02)) for p in agent.slow_critic.parameters())


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_actor_and_critic_losses_leave_world_model_gradients_at_zero(kind):
    agent = tiny_agent(kind)
    batch = to_torch(random_buffer(agent).sample(4, 8))
    _, seq = agent.model.world_model_loss(batch)
    starts = {"deter": seq["deter"].detach().flatten(0, 1),
              "stoch": seq["stoch"].detach().flatten(0, 1), "cont": torch.ones(32)}
    agent.model.zero_grad(set_to_none=True)
    actor_loss, critic_loss, _ = agent.actor_critic_losses(starts)
    (actor_loss + critic_loss).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0
               for p in agent.model.parameters())
    assert all(p.requires_grad for p in agent.model.parameters())  # restored after the losses
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in agent.actor.parameters())
    # the actor loss alone leaves the critic untouched (its values are read, not trained)
    agent.critic.zero_grad(set_to_none=True)
    agent.actor.zero_grad(set_to_none=True)
    actor_loss, _, _ = agent.actor_critic_losses(starts)
    actor_loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    if kind == "continuous":  # backprop through the dynamics reaches the actor
        assert agent.actor_grad == "backprop"
    else:
        assert agent.actor_grad == "reinforce"


def test_return_normaliser_moves_only_in_training_steps():
    agent = tiny_agent("discrete")
    buffer = random_buffer(agent)
    before = agent.retnorm.state_dict()
    agent.reset()
    for _ in range(5):
        agent.act(np.zeros(3, np.float32), explore=False)
    assert all(torch.equal(before[k], v) for k, v in agent.retnorm.state_dict().items())
    slow = [p.clone() for p in agent.slow_critic.parameters()]
    agent.train_step(to_torch(buffer.sample(4, 8)))
    assert float(agent.retnorm.high) != 0.0
    assert any(not torch.equal(a, b) for a, b in zip(slow, agent.slow_critic.parameters(),
                                                     strict=True))


# -- schedule, sequences, checkpoints ----------------------------------------------------------------
def test_train_ratio_sets_updates_per_env_step():
    agent = tiny_agent("discrete", prefill=0, train_ratio=16)  # 16 / (4 * 8) = 0.5 per step
    buffer = random_buffer(agent, episodes=3, length=5)         # episodes of 6 rows < 8
    counts = [bool(agent.update(buffer, env_step=s, episode_done=False)) for s in range(1, 5)]
    assert counts == [False, True, False, True]
    assert agent.updates == 2


def test_replay_windows_cross_episode_ends_like_the_reference():
    agent = tiny_agent("discrete")
    buffer = random_buffer(agent, episodes=20, length=5)        # episodes of 6 rows < 8
    batch = buffer.sample_stream(200, 8)
    assert batch["obs"].shape == (200, 8, 3)
    first = batch["is_first"]
    # every window longer than an episode restarts inside it, on a first row (zero action)
    assert first[:, 1:].any(1).all()
    assert (batch["actions"][first] == 0).all()
    # rows between restarts continue one episode: consecutive observations follow the AR(1)
    # data (|obs - 0.9 prev| stays small) except across a restart
    obs = batch["obs"]
    jump = np.abs(obs[:, 1:, 0] - 0.9 * obs[:, :-1, 0])
    assert jump[~first[:, 1:]].max() < 0.6
    assert agent.sample(buffer)["obs"].shape[1] == 8            # full-length windows
    inside = tiny_agent("discrete", replay_across_episodes=False)
    assert inside.sample(buffer)["obs"].shape[1] == 4            # halved until it fits


def test_state_dict_round_trip_continues_identically():
    agent = tiny_agent("discrete")
    buffer = random_buffer(agent)
    agent.train_step(to_torch(buffer.sample(4, 8)))
    # a deep copy: optimisers load their state tensors without copying them
    state = copy.deepcopy(agent.state_dict())
    other = tiny_agent("discrete")
    other.load_state_dict(state)
    batch = to_torch(buffer.sample(4, 8))
    torch.manual_seed(3)
    a = agent.train_step(batch)
    torch.manual_seed(3)
    b = other.train_step(batch)
    assert a == b
    for x, y in zip(agent.actor.parameters(), other.actor.parameters(), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(agent.retnorm.high, other.retnorm.high)


# -- real learning -------------------------------------------------------------------------------------
def test_imagination_learns_to_prefer_the_rewarded_action():
    """A two-armed bandit in disguise: the reward of each step is 1 after action 0, else 0.
    The world model learns it from random data; the actor, trained in imagination only, must
    come to prefer action 0."""
    agent = tiny_agent("discrete", obs_dim=2, model_lr=3e-3, actor_lr=3e-3, critic_lr=3e-3,
                       batch_size=8, imag_horizon=5)
    buffer = random_buffer(agent, episodes=8, length=10, reward_fn=lambda a: a[0] == 1.0)
    torch.manual_seed(0)
    first = None
    for _ in range(200):  # the world model first (the two-hot reward head starts at zero)
        out, _ = agent.model.world_model_loss(to_torch(buffer.sample(8, 8)))
        first = first or out.metrics
        agent.model_opt.zero_grad()
        out.loss.backward()
        agent.model_opt.step()
    for _ in range(60):
        metrics = agent.train_step(to_torch(buffer.sample(8, 8)))
    batch = to_torch(buffer.sample(8, 8))
    with torch.no_grad():
        _, seq = agent.model.world_model_loss(batch)
        probs = torch.softmax(agent.actor(agent.model.feat(seq["deter"], seq["stoch"]))["logits"],
                              -1)
    assert metrics["model/reward_loss"] < 0.25 * first["reward_loss"]
    assert float(probs[..., 0].mean()) > 0.8


# -- through the training loop ---------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_training_loop_runs_checkpoints_and_resumes(tmp_path, env_id):
    """Discrete (CartPole) and continuous (Pendulum) actions through ``train``; CartPole's short
    episodes give episode-end checkpoints, from which the run is extended."""
    from worldflux.training.config import TrainConfig
    from worldflux.training.loop import train

    overrides = {**TINY, "prefill": "60", "train_ratio": "8"}
    config = TrainConfig(env=env_id, steps=100, seed=0, eval_every=0, eval_episodes=1,
                         checkpoint_every=40, log_every=20, tensorboard=False)
    out = tmp_path / "run"
    summary = train("dreamerv3", config, overrides, str(out), progress=False)
    assert summary["steps"] == 100
    assert (out / "model" / "model.safetensors").is_file()
    rows = [line for line in (out / "metrics.jsonl").read_text().splitlines()
            if "train/model/rec_loss" in line]
    assert rows, "no training metrics were logged"
    if env_id == "CartPole-v1":
        extended = TrainConfig(**{**config.__dict__, "steps": 140})
        again = train("dreamerv3", extended, overrides, str(out), progress=False, resume=True)
        assert again["steps"] == 140 and again["resumed_from"] is not None


# -- review of issue 6: the actor-critic terms against hand-computed values -------------------------
def test_imagination_weights_discount_by_the_continue_flags():
    from worldflux.agents.dreamerv3 import imagination_weights

    # states 0..3 of two trajectories: the first ends at state 2 (continue 0), the second
    # starts on a terminal row (start continue 0)
    cont = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    discounts, weights = imagination_weights(cont, gamma=0.5)
    assert discounts[:, 0].tolist() == [0.5, 0.0, 0.5]          # gamma * cont[1:]
    # cumprod(gamma * cont) / gamma: 1, gamma, 0 (the end), 0 (after it)
    assert weights[:, 0].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert weights[:, 1].tolist() == [0.0, 0.0, 0.0, 0.0]
    # the paper's discount: gamma = 1 - 1/333
    _, w = imagination_weights(torch.ones(3, 1), gamma=1 - 1 / 333)
    assert w[:, 0].tolist() == pytest.approx([1.0, 1 - 1 / 333, (1 - 1 / 333) ** 2])


@pytest.mark.parametrize("mode, expected", [("mode", 1.0), ("probability", 0.75)])
def test_imagined_continue_mode_or_probability(monkeypatch, mode, expected):
    """The continue head discounts imagined states by its mode (paper v1) or its probability
    (current reference): with p(continue) = 0.75 everywhere, the flags are 1 or 0.75."""
    import worldflux.agents.dreamerv3 as dv3

    agent = tiny_agent("discrete", imagined_continue=mode)
    last = agent.model.cont_head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.log(0.75 / 0.25))
    seen = {}
    real = dv3.imagination_weights

    def spy(cont, gamma):
        seen["cont"] = cont.detach().clone()
        return real(cont, gamma)

    monkeypatch.setattr(dv3, "imagination_weights", spy)
    batch = to_torch(random_buffer(agent).sample(4, 8))
    _, seq = agent.model.world_model_loss(batch)
    starts = {"deter": seq["deter"].detach().flatten(0, 1),
              "stoch": seq["stoch"].detach().flatten(0, 1), "cont": torch.ones(32)}
    agent.actor_critic_losses(starts)
    cont = seen["cont"]
    assert cont.shape == (6, 32)  # states 0..H of 32 starts, H = 5
    assert torch.all(cont[0] == 1.0)  # the starts' own flags
    assert torch.allclose(cont[1:], torch.full((5, 32), expected))


def test_actor_loss_reinforce_hand_values_and_stop_gradient():
    from worldflux.agents.dreamerv3 import actor_loss

    log_prob = torch.tensor([[-0.5], [-1.0]], requires_grad=True)
    entropy = torch.tensor([[0.6], [0.7]], requires_grad=True)
    ret = torch.tensor([[10.0], [4.0]], requires_grad=True)
    base = torch.tensor([[6.0], [4.0]])
    weight = torch.tensor([[1.0], [0.5]])
    # advantages (R - v) / max(1, S) with S = 2: 2 and 0
    loss = actor_loss(log_prob, entropy, ret, base, torch.tensor(2.0), weight, 3e-4, True)
    expected = -(1.0 * (-0.5 * 2 + 3e-4 * 0.6) + 0.5 * (-1.0 * 0 + 3e-4 * 0.7)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # REINFORCE: d/dlog_prob = -weight * advantage / (H * N); no gradient into the returns
    assert log_prob.grad[:, 0].tolist() == pytest.approx([-1.0, 0.0])
    assert entropy.grad[:, 0].tolist() == pytest.approx([-3e-4 / 2, -0.5 * 3e-4 / 2])
    assert ret.grad is None


def test_actor_loss_backprop_differentiates_the_normalised_advantage():
    from worldflux.agents.dreamerv3 import actor_loss

    ret = torch.tensor([[10.0], [4.0]], requires_grad=True)
    zeros = torch.zeros(2, 1)
    loss = actor_loss(zeros, zeros, ret, torch.tensor([[6.0], [4.0]]), torch.tensor(4.0),
                      torch.tensor([[1.0], [0.5]]), 3e-4, False)
    assert float(loss.detach()) == pytest.approx(-(1.0 * 1.0 + 0.5 * 0.0) / 2)
    loss.backward()
    assert ret.grad[:, 0].tolist() == pytest.approx([-1.0 / 4 / 2, -0.5 / 4 / 2])


def test_critic_loss_two_hot_targets_slow_regulariser_and_weights():
    from worldflux.agents.dreamerv3 import critic_loss
    from worldflux.nn.twohot import two_hot

    bins, width = 255, 40.0 / 254
    # the returns sit on bins 127 (0) and 127 + 10 (symexp(10 w)); the slow critic on bin 127
    on_bin = float(torch.expm1(torch.tensor(10 * width)))
    target = torch.tensor([[0.0], [on_bin]])
    slow = torch.zeros(2, 1)
    logits = torch.zeros(2, 1, bins, requires_grad=True)     # uniform: CE = log 255
    weight = torch.tensor([[1.0], [0.25]])
    loss = critic_loss(logits, target, slow, weight, slow_reg=1.0, bin_range=20.0)
    assert float(loss.detach()) == pytest.approx((2 * math.log(255) * 1.0 + 2 * math.log(255) * 0.25) / 2,
                                        rel=1e-5)
    loss.backward()
    # d/dlogits = weight / (H * N) * (2 * softmax - two_hot(target) - two_hot(slow))
    expected = 0.25 / 2 * (2 / 255 - two_hot(torch.tensor(on_bin), bins, -20.0, 20.0)
                           - two_hot(torch.tensor(0.0), bins, -20.0, 20.0))
    assert torch.allclose(logits.grad[1, 0], expected, atol=1e-6)


def test_acting_resets_at_episode_starts_and_feeds_the_previous_action():
    """Reference ``policy``: ``obs_step(prev_latent, prev_action, embed, is_first)``; an episode
    starts from the learned initial state with a zero action, later steps feed the action
    taken last; training samples the actor (1% unimix), evaluation takes its mode."""
    agent = tiny_agent("discrete", prefill=0)
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=3).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        start = agent.model.core(*agent.model.initial(1), torch.zeros(1, 2))
        agent.reset()
        first = int(agent.act(obs[0], explore=True))
        deter, stoch = (x.clone() for x in agent._acting)
        assert torch.allclose(deter, start, atol=1e-6)
        agent.act(obs[1], explore=True)
        expected = agent.model.core(deter, stoch, torch.eye(2)[first][None])
        assert torch.allclose(agent._acting[0], expected, atol=1e-6)
        agent.reset()
        agent.act(obs[0], explore=False)
        assert torch.allclose(agent._acting[0], start, atol=1e-6)
        # a policy of probabilities (0.3, 0.7) before mixing: samples vs mode
        agent.actor.out.weight.zero_()
        agent.actor.out.bias.copy_(torch.log(torch.tensor([0.3, 0.7])))
        torch.manual_seed(0)
        sampled = [int(agent.act(obs[1], explore=True)) for _ in range(400)]
        greedy = {int(agent.act(obs[1], explore=False)) for _ in range(20)}
    assert np.mean(sampled) == pytest.approx(0.99 * 0.7 + 0.005, abs=0.06)
    assert greedy == {1}


def test_discrete_actor_mixes_in_one_percent_uniform():
    agent = tiny_agent("discrete", action_dim=4)
    with torch.no_grad():
        agent.actor.out.weight.zero_()
        agent.actor.out.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
        probs = torch.softmax(agent.actor(torch.zeros(1, agent.model.feat_dim))["logits"], -1)
    # 0.99 * one-hot + 0.01 / 4 (paper: unimix 1% on the actor too)
    assert probs[0].tolist() == pytest.approx([0.9925, 0.0025, 0.0025, 0.0025], abs=1e-6)
