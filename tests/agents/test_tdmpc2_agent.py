"""TD-MPC2 agent: MPPI weighting and action selection, the planning value, the seed/pretraining
schedule, exact resume, and a tiny real learning run on Pendulum-v1."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.tdmpc2_pendulum import EVAL_EPISODES, MARGIN, RECIPE, random_return
from worldflux.agents import build_agent
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer
from worldflux.nn.twohot import two_hot
from worldflux.training import TrainConfig, train
from worldflux.training.checkpoint import load_checkpoint, save_checkpoint

TINY = {"model.model_size": "1", "model.enc_dim": "32", "model.mlp_dim": "32",
        "model.latent_dim": "16", "batch_size": "8", "planner.population": "16",
        "planner.iterations": "2", "planner.elites": "4", "num_pi_trajs": "4",
        "seed_steps": "50", "pretrain_updates": "3"}


def tiny_agent(obs_dim: int = 3, action_dim: int = 1, seed: int = 0, **overrides):
    return build_agent("tdmpc2", ObservationSpec((obs_dim,)), ActionSpec(action_dim),
                       device=torch.device("cpu"), seed=seed,
                       overrides={**TINY, **{k: str(v) for k, v in overrides.items()}})


def filled_buffer(steps: int = 120, obs_dim: int = 3, action_dim: int = 1, seed: int = 0,
                  episode: int = 40) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(1000, obs_shape=(obs_dim,), action_dim=action_dim, seed=seed)
    for t in range(steps):
        first = t % episode == 0
        action = np.zeros(action_dim, np.float32) if first else rng.uniform(-1, 1, action_dim)
        buffer.add(rng.normal(size=obs_dim).astype(np.float32), action.astype(np.float32),
                   0.0 if first else float(rng.normal()), False, False, is_first=first)
    return buffer


def _constant(head_bias: torch.Tensor, weight: torch.Tensor, values, num_bins=101) -> None:
    logits = torch.log(two_hot(torch.as_tensor(values, dtype=torch.float32), num_bins,
                               -10.0, 10.0)).clamp(min=-50)
    weight.data.zero_()
    head_bias.data.copy_(logits.reshape(head_bias.shape))


# -- MPPI ------------------------------------------------------------------------------------------
def test_mppi_weights_elites_by_exponentiated_value():
    agent = tiny_agent()
    samples = torch.tensor([[[0.1]], [[0.5]], [[-0.2]], [[0.9]]])  # [N=4, H=1, A=1]
    values = torch.tensor([0.0, -1.0, -2.0, -10.0])
    agent.planner.config.elites = 3
    weights, elites, std = agent.final_elites(samples, values)
    raw = torch.tensor([1.0, math.exp(-0.5), math.exp(-1.0)])  # exp(0.5 * (v - max))
    expected = raw / raw.sum()
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(elites[:, 0, 0], torch.tensor([0.1, 0.5, -0.2]))
    mean = float((expected * torch.tensor([0.1, 0.5, -0.2])).sum())
    var = float((expected * (torch.tensor([0.1, 0.5, -0.2]) - mean) ** 2).sum())
    assert float(std) == pytest.approx(max(math.sqrt(var), 0.05), rel=1e-5)
    # NaN values are never elites; the std is clamped to [min_std, max_std].
    values = torch.tensor([float("nan"), 1.0, 1.0, 1.0])
    samples = torch.full((4, 1, 1), 0.3)
    weights, elites, std = agent.final_elites(samples, values)
    torch.testing.assert_close(weights, torch.full((3,), 1 / 3))
    assert float(std) == pytest.approx(0.05)


def test_planning_uses_the_policy_prior_and_the_official_action_selection():
    agent = tiny_agent(action_dim=2, **{"planner.population": 64, "planner.iterations": 4,
                                        "planner.elites": 8, "num_pi_trajs": 5})
    agent.env_steps = 10**6
    target = torch.tensor([0.3, -0.6])
    calls = []

    def known_value(z, actions):  # peak at the first action == target
        calls.append(actions.clone())
        return -(actions[:, 0] - target).pow(2).sum(-1) * 50

    agent.estimate_value = known_value
    obs = torch.zeros(1, 3)
    prior = agent.policy_prior(agent.model.encode_obs(obs))
    assert prior.shape == (5, 3, 2) and prior.abs().max() <= 1
    action = agent.plan(obs, explore=False)
    assert len(calls) == 4 and all(c.shape == (69, 3, 2) for c in calls)  # 64 + 5 prior
    # The prior trajectories (re-drawn per decision) lead every iteration's population.
    assert all(torch.equal(c[:5], calls[0][:5]) for c in calls)
    # The planner's mean (kept for the warm start) is the MPPI mean the agent recomputes.
    weights, elites, std = agent.final_elites(calls[-1], known_value(None, calls[-1]))
    torch.testing.assert_close(agent.planner._previous, (weights[:, None, None] * elites).sum(0))
    # Evaluation executes the first action of one of the final elites, without noise.
    assert any(torch.equal(action, e[0]) for e in elites)
    assert (action - target).abs().max() < 0.3
    # Training adds std[0] * N(0, 1) noise to it.
    noisy = [agent.plan(obs, explore=True) for _ in range(5)]
    assert not any(any(torch.equal(a, e[0]) for e in elites) for a in noisy)
    agent.config.action_selection = "mean"
    assert torch.equal(agent.plan(obs, explore=False), agent.planner._previous[0])


def test_planning_value_is_the_discounted_reward_sum_plus_the_bootstrapped_q():
    agent = tiny_agent()
    model = agent.model
    model.discount.fill_(0.9)
    _constant(model.reward_head[-1].bias, model.reward_head[-1].weight, 1.0)
    _constant(model.qs.b2, model.qs.w2, [5.0] * model.sizes.num_q)
    z = model.encode_obs(torch.randn(6, 3))
    actions = torch.rand(6, 3, 1) * 2 - 1
    with torch.no_grad():
        value = agent.estimate_value(z, actions)
    expected = 1 + 0.9 + 0.81 + 0.9**3 * 5  # sum_t gamma^t r + gamma^H Q
    torch.testing.assert_close(value, torch.full((6,), expected), rtol=1e-4, atol=1e-4)

    episodic = tiny_agent(**{"model.episodic": "true"})
    model = episodic.model
    model.discount.fill_(0.9)
    _constant(model.reward_head[-1].bias, model.reward_head[-1].weight, 1.0)
    _constant(model.qs.b2, model.qs.w2, [5.0] * model.sizes.num_q)
    model.termination_head[-1].weight.data.zero_()
    model.termination_head[-1].bias.data.fill_(10.0)  # every next latent is terminal
    with torch.no_grad():
        value = episodic.estimate_value(model.encode_obs(torch.randn(6, 3)), actions)
    torch.testing.assert_close(value, torch.full((6,), 1.0), rtol=1e-4, atol=1e-4)


# -- schedule ----------------------------------------------------------------------------------------
def test_seed_steps_come_from_the_measured_episode_length():
    agent = tiny_agent(seed_steps=0)
    assert agent.seed_steps is None  # unknown until the first episode ends
    buffer = filled_buffer()
    for step in range(1, 200):
        assert agent.update(buffer, env_step=step, episode_done=step == 199) == {}
    assert agent.episode_length == 199
    assert agent.seed_steps == 1000  # max(1000, 5 * 199)
    assert float(agent.model.discount) == pytest.approx(0.975, abs=1e-3)  # L / 5 = 39.8
    agent.set_episode_length(500)
    assert agent.seed_steps == 2500 and float(agent.model.discount) == pytest.approx(0.99)


def test_pretraining_then_one_update_per_step():
    agent = tiny_agent(steps_per_update=2)
    buffer = filled_buffer()
    obs = np.zeros(3, np.float32)
    agent.env_steps = 10
    first = [agent.act(obs, explore=True) for _ in range(3)]
    assert all(a.shape == (1,) and -1 <= a[0] <= 1 for a in first)
    assert len({float(a[0]) for a in first}) == 3  # uniform random during the seed phase
    assert agent.update(buffer, env_step=49, episode_done=False) == {}
    metrics = agent.update(buffer, env_step=50, episode_done=False)
    assert agent.updates == 3 and agent.pretrained  # pretrain_updates at the end of seeding
    assert {"model/consistency_loss", "model/reward_loss", "model/value_loss",
            "policy/pi_loss", "policy/pi_scale"} <= set(metrics)
    assert agent.update(buffer, env_step=51, episode_done=False) == {}
    assert agent.update(buffer, env_step=52, episode_done=False) and agent.updates == 4
    assert not agent.model.training  # back in eval mode after an update


def test_policy_only_acting_samples_when_exploring_and_uses_the_mean_in_evaluation():
    agent = tiny_agent(plan_with_planner=False)
    agent.env_steps = 10**6
    obs = np.ones(3, np.float32)
    greedy = [agent.act(obs, explore=False) for _ in range(2)]
    np.testing.assert_array_equal(greedy[0], greedy[1])
    with torch.no_grad():
        _, info = agent.model.pi(agent.model.encode_obs(torch.ones(1, 3)))
    np.testing.assert_allclose(greedy[0], info["mean"][0].numpy(), rtol=1e-6)
    assert not np.array_equal(agent.act(obs, explore=True), agent.act(obs, explore=True))


def test_updates_change_the_model_policy_and_targets_in_their_own_optimisers():
    agent = tiny_agent(pretrain_updates=1)
    buffer = filled_buffer()
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    agent.update(buffer, env_step=50, episode_done=False)
    after = agent.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("policy.") for k in changed)
    assert any(k.startswith("encoder.") for k in changed)
    assert "qs.target_w2" in changed  # Polyak step towards the updated online heads
    torch.testing.assert_close(after["qs.target_w2"], 0.01 * after["qs.w2"], rtol=1e-5,
                               atol=1e-8)  # the target output layer started at zero too
    groups = agent.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(3e-4 * 0.3) and groups[1]["lr"] == pytest.approx(3e-4)
    assert agent.pi_optimizer.param_groups[0]["eps"] == 1e-5
    assert agent.amp.max_grad_norm == 20.0


def test_pixel_observations_train_and_plan():
    agent = build_agent("tdmpc2", ObservationSpec((3, 64, 64), "uint8"), ActionSpec(2),
                        device=torch.device("cpu"), seed=0,
                        overrides={**TINY, "model.model_size": "5", "model.latent_dim": "512",
                                   "model.num_q": "2", "batch_size": "4"})
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(100, obs_shape=(3, 64, 64), action_dim=2, seed=0)
    for t in range(30):
        buffer.add(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8),
                   rng.uniform(-1, 1, 2).astype(np.float32), float(t), False, False,
                   is_first=t == 0)
    metrics = agent.train_step(buffer)
    assert all(math.isfinite(v) for v in metrics.values())
    agent.env_steps = 10**6
    action = agent.act(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8), explore=True)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


@pytest.mark.parametrize("shift", [True, False])
def test_acting_frames_get_the_random_shift_as_in_the_official_encoder(shift):
    # Official: the pixel encoder starts with ShiftAug, which has no train / eval switch.
    agent = build_agent("tdmpc2", ObservationSpec((3, 64, 64), "uint8"), ActionSpec(2),
                        device=torch.device("cpu"), seed=0,
                        overrides={**TINY, "model.model_size": "5", "model.latent_dim": "512",
                                   "model.num_q": "2", "shift_when_acting": str(shift).lower()})
    assert type(agent.config)().shift_when_acting  # the official behaviour is the default
    shifted = []
    module = agent.model.encoder.shift
    forward = module.forward
    module.forward = lambda x, generator=None: shifted.append(x.shape) or forward(x, generator)
    agent.env_steps = 10**6
    frame = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    for explore in (True, False):
        agent.act(frame, explore=explore)
    assert shifted == ([(1, 3, 64, 64)] * 2 if shift else [])


# -- exact resume ------------------------------------------------------------------------------------
def _trajectory(agent, buffer, steps):
    out = []
    obs = np.linspace(-1, 1, 3).astype(np.float32)
    for step in steps:
        torch.manual_seed(step)  # dropout draws from the global generator, restored by the loop
        out.append(agent.act(obs, explore=True))
        out.append(agent.update(buffer, env_step=step, episode_done=step % 40 == 0))
    return out


def test_agent_state_round_trips_through_a_checkpoint_exactly(tmp_path):
    agent = tiny_agent()
    buffer = filled_buffer()
    _trajectory(agent, buffer, range(45, 56))  # seed phase, pretraining, per-step updates
    save_checkpoint(tmp_path, 55, {"agent": agent.state_dict(),
                                   "buffer": buffer.sampler_state()})
    reference = _trajectory(agent, buffer, range(56, 61))

    resumed = tiny_agent(seed=123)  # another seed: everything must come from the checkpoint
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000055")["state"]
    resumed.load_state_dict(state["agent"])
    buffer.load_sampler_state(state["buffer"])
    again = _trajectory(resumed, buffer, range(56, 61))
    for a, b in zip(reference, again, strict=True):
        if isinstance(a, dict):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)
    for key, value in agent.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.updates == agent.updates and resumed.pretrained


# -- real runs ---------------------------------------------------------------------------------------


def _records(run) -> list[list[dict]]:
    """metrics.jsonl and eval.jsonl of ``run`` without the fields that measure time."""
    drop = {"wall_time", "elapsed", "perf/steps_per_s"}
    return [[{k: v for k, v in json.loads(line).items() if k not in drop}
             for line in (run / name).read_text().splitlines()]
            for name in ("metrics.jsonl", "eval.jsonl")]


def test_a_resumed_run_records_exactly_what_the_uninterrupted_run_records(tmp_path):
    small = {**TINY, "seed_steps": "100", "pretrain_updates": "20"}

    def config(steps):
        return TrainConfig(env="Pendulum-v1", steps=steps, seed=3, checkpoint_every=200,
                           eval_episodes=1, log_every=50, tensorboard=False)

    train("tdmpc2", config(300), small, tmp_path / "reference", progress=False)
    # A shorter run ends mid-episode; extended, it continues from its episode-end checkpoint
    # (models, optimisers, targets, Q scale, planner warm start and generators all restored).
    train("tdmpc2", config(250), small, tmp_path / "run", progress=False)
    summary = train("tdmpc2", config(300), None, tmp_path / "run", progress=False, resume=True)
    assert summary["resumed_from"].endswith("step_00000200")

    metrics, evals = _records(tmp_path / "run")
    assert [metrics, evals] == _records(tmp_path / "reference")
    assert [e["step"] for e in evals] == [300]
    assert any("train/model/value_loss" in m and m["step"] > 200 for m in metrics)


def test_a_run_killed_during_the_pretraining_burst_resumes_within_it(tmp_path, monkeypatch):
    """The burst of updates at the end of the seed phase (minutes to an hour on a CPU from
    pixels) is checkpointed every ``checkpoint_every`` updates; a kill costs the updates since
    the newest one, and the resumed run records exactly what the uninterrupted one does."""
    from worldflux.agents.tdmpc2 import TDMPC2Agent
    from worldflux.training import latest_checkpoint

    small = {**TINY, "seed_steps": "200", "pretrain_updates": "250"}
    config = TrainConfig(env="Pendulum-v1", steps=400, seed=5, checkpoint_every=100,
                         eval_every=200, eval_episodes=1, log_every=50, tensorboard=False)
    train("tdmpc2", config, small, tmp_path / "reference", progress=False)

    train_step, calls = TDMPC2Agent.train_step, []

    def killed_at_update_230(self, buffer):
        calls.append(1)
        if len(calls) == 230:
            raise KeyboardInterrupt
        return train_step(self, buffer)

    run = tmp_path / "run"
    monkeypatch.setattr(TDMPC2Agent, "train_step", killed_at_update_230)
    with pytest.raises(KeyboardInterrupt):
        train("tdmpc2", config, small, run, progress=False)
    monkeypatch.setattr(TDMPC2Agent, "train_step", train_step)
    newest = latest_checkpoint(run)
    assert newest.name == "step_00000200"  # the seed phase's end, within the burst
    burst = load_checkpoint(newest)["state"]["agent"]["burst"]
    assert (burst["total"], burst["done"]) == (250, 200)
    assert not (run / "eval.jsonl").exists() or not (run / "eval.jsonl").read_text()

    summary = train("tdmpc2", None, None, run, progress=False, resume=True)
    assert summary["resumed_from"].endswith("step_00000200")

    metrics, evals = _records(run)
    assert [metrics, evals] == _records(tmp_path / "reference")
    assert [e["step"] for e in evals] == [200, 400]
    # The burst's mean losses are logged once, over all 250 updates.
    assert sum("train/model/consistency_loss" in m for m in metrics if m["step"] == 200) == 1
    final = load_checkpoint(latest_checkpoint(run))["state"]["agent"]["model"]
    reference = load_checkpoint(latest_checkpoint(tmp_path / "reference"))["state"]["agent"]
    for key, value in reference["model"].items():
        assert torch.equal(value, final[key]), key


@pytest.mark.slow
def test_tdmpc2_learns_pendulum_beyond_random(tmp_path):
    """1M-preset layout at reduced width (128), batch 32: 200 random steps, 200 pretraining
    updates, then 1800 steps with one update each; the greedy planner then swings up.

    The budget is what makes this hold for any seed, not only the one tested: with 1000 steps
    3 of seeds 1-7 stayed within 300 of random (margins 32-266); with 2000 steps every seed
    measured, 0-7, cleared random by more than 600 (``python -m benchmarks tdmpc2_pendulum``,
    which trains this recipe for many seeds)."""
    config = TrainConfig(env="Pendulum-v1", steps=2000, seed=0, eval_episodes=EVAL_EPISODES,
                         log_every=100, tensorboard=False)
    summary = train("tdmpc2", config, RECIPE, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    losses = [r for r in rows if "train/model/reward_loss" in r]
    assert losses[-1]["train/model/reward_loss"] < 0.6 * losses[0]["train/model/reward_loss"]
    assert (losses[-1]["train/model/consistency_loss"]
            < 0.6 * losses[0]["train/model/consistency_loss"])
    baseline = random_return(config.seed, EVAL_EPISODES)
    learned = summary["final_eval"]["mean"]
    assert learned > baseline + MARGIN, (learned, baseline)
