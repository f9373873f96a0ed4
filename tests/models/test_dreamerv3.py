"""DreamerV3 mechanisms against hand-computed values, and the model's shapes and losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import worldflux
from worldflux.core import ConfigError, State
from worldflux.models.dreamerv3 import SIZE_PRESETS, DreamerV3Config, DreamerV3Model
from worldflux.models.dreamerv3.model import _squared_error
from worldflux.models.dreamerv3.networks import (
    ChannelNorm,
    categorical_kl,
    free_bits,
    sample_one_hot,
    straight_through_sample,
    unimix_logits,
)
from worldflux.nn.twohot import bin_centres, symexp, symlog, two_hot, two_hot_inv

TINY = {"size": "size1m", "deter": 32, "hidden": 16, "units": 16, "classes": 4, "stoch": 4,
        "blocks": 2}


def tiny_model(obs_shape=(4,), action_dim=2, kind="continuous", **overrides) -> DreamerV3Model:
    torch.manual_seed(0)
    extra = {"depth": 2} if len(obs_shape) == 3 else {}
    return worldflux.create_world_model("dreamerv3", obs_shape=obs_shape, action_dim=action_dim,
                                        action_kind=kind, device="cpu",
                                        **{**TINY, **extra, **overrides})


def batch_for(model: DreamerV3Model, B: int = 3, T: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = model.obs_spec.shape
    obs = (torch.randint(0, 256, (B, T, *shape), generator=g, dtype=torch.uint8)
           if len(shape) == 3 else torch.randn(B, T, *shape, generator=g))
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"obs": obs, "actions": torch.rand(B, T, model.action_dim, generator=g) * 2 - 1,
            "rewards": torch.randn(B, T, generator=g), "terminated": torch.zeros(B, T, dtype=bool),
            "truncated": torch.zeros(B, T, dtype=bool), "is_first": is_first}


# -- symlog, symexp, two-hot ---------------------------------------------------------------------
def test_symlog_symexp_hand_values():
    x = torch.tensor([0.0, math.e - 1, -(math.e ** 2 - 1), 1e6])
    assert torch.allclose(symlog(x), torch.tensor([0.0, 1.0, -2.0, math.log1p(1e6)]))
    assert torch.allclose(symexp(torch.tensor([0.0, 1.0, -2.0])),
                          torch.tensor([0.0, math.e - 1, -(math.e ** 2 - 1)]))
    y = torch.linspace(-1000, 1000, 101)
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-5, atol=1e-4)


def test_two_hot_255_bins_hand_values_and_round_trip():
    # paper: 255 bins uniform on [-20, 20] in symlog space (symexp-spaced in reward units)
    centres = bin_centres(255, -20.0, 20.0)
    width = 40.0 / 254
    assert float(centres[127]) == pytest.approx(0.0, abs=1e-6)
    assert float(centres[128] - centres[127]) == pytest.approx(width, rel=1e-5)
    # 0 lands exactly on the middle bin; symexp(width / 2) halfway between bins 127 and 128
    hot = two_hot(torch.tensor([0.0, float(symexp(torch.tensor(width / 2)))]), 255, -20.0, 20.0)
    assert float(hot[0, 127]) == pytest.approx(1.0)
    assert float(hot[1, 127]) == pytest.approx(0.5, abs=1e-4)
    assert float(hot[1, 128]) == pytest.approx(0.5, abs=1e-4)
    assert torch.allclose(hot.sum(-1), torch.ones(2))
    # round trip: the expectation of the two-hot vector over the centres decodes to x
    x = torch.tensor([-300.0, -1.5, 0.0, 0.25, 7.0, 1234.0])
    encoded = two_hot(x, 255, -20.0, 20.0)
    assert torch.allclose(symexp((encoded * centres).sum(-1)), x, rtol=1e-4, atol=1e-4)
    # and through logits: log of the two-hot vector decodes to the same value
    assert torch.allclose(two_hot_inv(torch.log(encoded + 1e-12), -20.0, 20.0), x,
                          rtol=1e-3, atol=1e-3)


# -- categorical latents -------------------------------------------------------------------------
def test_unimix_hand_values():
    logits = torch.log(torch.tensor([0.25, 0.75]))
    mixed = unimix_logits(logits, 0.01).exp()
    # 0.99 * p + 0.01 / 2
    assert torch.allclose(mixed, torch.tensor([0.2525, 0.7475]))
    # a one-hot distribution keeps 0.01 / K on the other classes
    sharp = unimix_logits(torch.tensor([100.0, 0.0, 0.0, 0.0]), 0.01).exp()
    assert torch.allclose(sharp, torch.tensor([0.9925, 0.0025, 0.0025, 0.0025]), atol=1e-6)


def test_straight_through_sample_is_one_hot_with_probability_gradients():
    logits = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    sample = straight_through_sample(logits, torch.Generator().manual_seed(0))
    assert sorted(sample.detach()[0].tolist()) == [0.0, 0.0, 1.0]
    (sample * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    probs = torch.softmax(logits.detach(), -1)[0]
    weights = torch.tensor([1.0, 2.0, 3.0])
    expected = probs * (weights - (probs * weights).sum())  # d/dlogits of sum(w * softmax)
    assert torch.allclose(logits.grad[0], expected, atol=1e-6)


def test_sample_one_hot_matches_the_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.7]).expand(20000, 3)
    counts = sample_one_hot(probs, torch.Generator().manual_seed(1)).mean(0)
    assert torch.allclose(counts, torch.tensor([0.1, 0.2, 0.7]), atol=0.015)


def test_categorical_kl_and_free_bits_hand_values():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))  # two variables [S=2, K=2]
    q = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # second variable: 0
    assert float(categorical_kl(p, q)) == pytest.approx(expected, rel=1e-5)
    kl = torch.tensor([0.3, 2.5], requires_grad=True)
    clipped = free_bits(kl, 1.0)
    assert clipped.tolist() == pytest.approx([1.0, 2.5])
    clipped.sum().backward()
    assert kl.grad.tolist() == [0.0, 1.0]  # no gradient below the free nats


def test_kl_balancing_scales_and_free_bits_in_the_loss():
    model = tiny_model(free_nats=0.0)
    out, _ = model.world_model_loss(batch_for(model))
    # dyn and rep are the same KL value forwards, weighted 0.5 and 0.1 (paper v1)
    assert float(out.components["dyn"].detach() / out.components["rep"].detach()) == pytest.approx(5.0, rel=1e-5)
    model = tiny_model(free_nats=1e6)
    out, _ = model.world_model_loss(batch_for(model))
    assert float(out.components["dyn"].detach()) == pytest.approx(0.5e6)
    assert float(out.components["rep"].detach()) == pytest.approx(0.1e6)


def test_kl_balancing_gradients_reach_prior_and_posterior_separately():
    model = tiny_model(free_nats=0.0)
    out, seq = model.world_model_loss(batch_for(model))
    # dyn = KL(sg(post) || prior) trains the prior only; rep = KL(post || sg(prior)) the
    # posterior only (gradients with respect to the logits the losses read)
    dyn_post, dyn_prior = torch.autograd.grad(out.components["dyn"], [seq["post"], seq["prior"]],
                                              retain_graph=True, allow_unused=True)
    rep_post, rep_prior = torch.autograd.grad(out.components["rep"], [seq["post"], seq["prior"]],
                                              allow_unused=True)
    assert dyn_post is None or float(dyn_post.abs().sum()) == 0.0
    assert rep_prior is None or float(rep_prior.abs().sum()) == 0.0
    assert float(dyn_prior.abs().sum()) > 0 and float(rep_post.abs().sum()) > 0


# -- presets and config ----------------------------------------------------------------------------
def test_presets_follow_the_reference_and_stack_with_other_settings():
    assert SIZE_PRESETS["size12m"] == {"deter": 2048, "hidden": 256, "classes": 16, "depth": 16,
                                       "units": 256}
    sizes = DreamerV3Config(size="size12m", units=128).sizes()
    assert (sizes.deter, sizes.units, sizes.classes) == (2048, 128, 16)
    with pytest.raises(ConfigError, match="size"):
        DreamerV3Config(size="size3m").sizes()
    with pytest.raises(ConfigError, match="blocks"):
        DreamerV3Config(size="size1m", deter=30, blocks=8).validate()


def test_reward_head_starts_at_zero():
    model = tiny_model()
    feat = torch.randn(5, model.feat_dim)
    assert torch.allclose(model.reward(feat), torch.zeros(5), atol=1e-6)


# -- observations ------------------------------------------------------------------------------
def test_vector_model_uses_symlog_targets_and_decodes_in_observation_units():
    model = tiny_model()
    obs = torch.tensor([[100.0, -3.0, 0.0, 1.0]])
    assert torch.allclose(model.obs_target(obs), symlog(obs))
    state = model.encode(obs)
    assert state["stoch"].shape == (1, 4 * 4)
    assert torch.allclose(state["stoch"].reshape(1, 4, 4).sum(-1), torch.ones(1, 4))
    assert set(state["stoch"].detach().reshape(-1).round(decimals=5).tolist()) <= {0.0, 1.0}
    assert model.decode(state).preds["obs"].shape == (1, 4)


def test_pixel_model_loss_and_decode_shapes():
    model = tiny_model(obs_shape=(3, 64, 64))
    out = model.loss(batch_for(model, B=2, T=3))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    preds = model.decode(model.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))).preds
    assert preds["obs"].shape == (2, 3, 64, 64)
    frames = preds["obs"].detach()
    assert float(frames.min()) >= 0 and float(frames.max()) <= 255
    strided = tiny_model(obs_shape=(3, 64, 64), cnn_strided=True)
    assert torch.isfinite(strided.loss(batch_for(strided, B=2, T=3)).loss)


def test_wrong_image_size_is_rejected():
    with pytest.raises(ConfigError, match="64"):
        tiny_model(obs_shape=(3, 32, 48))


def test_is_first_resets_the_state_mid_sequence():
    model = tiny_model()
    batch = batch_for(model, B=1, T=4)
    embed = model.encoder(batch["obs"][0]).unsqueeze(0)
    reset = batch["is_first"].clone()
    reset[0, 2] = True
    torch.manual_seed(0)
    seq = model.observe(embed, batch["actions"], reset)
    torch.manual_seed(1)
    alone = model.observe(embed[:, 2:], batch["actions"][:, 2:], reset[:, 2:])
    # the deterministic state after a reset depends only on what follows it
    assert torch.allclose(seq["deter"][:, 2], alone["deter"][:, 0], atol=1e-6)


def test_world_model_learns_a_sequence_batch():
    model = tiny_model()
    batch = batch_for(model, B=8, T=8)
    batch["rewards"] = batch["obs"][..., 0].clone()  # reward = first observation entry
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    before = model.world_model_loss(batch)[0].metrics
    for _ in range(30):
        out, _ = model.world_model_loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = out.metrics
    assert after["rec_loss"] < 0.5 * before["rec_loss"]
    assert after["reward_loss"] < 0.5 * before["reward_loss"]


# -- review of issue 6: free bits per step, and what each row of a batch trains --------------------
def test_free_bits_clip_the_kl_summed_over_the_latents_not_each_latent():
    # four latents, each KL(p || q) = 0.3 nats: the step's KL is 1.2 > 1, so it is not clipped
    # (clipping each latent at 1 nat would give 4; paper: "free bits" on the summed KL)
    q = torch.tensor([0.5, 0.5])
    # a with KL([a, 1 - a] || [0.5, 0.5]) = a log 2a + (1 - a) log 2(1 - a) = 0.3 (bisection)
    lo, hi = 0.5, 1.0
    for _ in range(60):
        a = (lo + hi) / 2
        kl = a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))
        lo, hi = (a, hi) if kl < 0.3 else (lo, a)
    p = torch.log(torch.tensor([[a, 1 - a]] * 4))
    qs = torch.log(q.expand(4, 2))
    assert float(categorical_kl(p, qs)) == pytest.approx(1.2, rel=1e-6)
    assert float(free_bits(categorical_kl(p, qs), 1.0)) == pytest.approx(1.2, rel=1e-6)
    assert float(free_bits(categorical_kl(p[:3], qs[:3]), 1.0)) == 1.0  # 0.9 -> 1


def test_world_model_loss_terms_per_row_follow_the_reference_alignment():
    """Row ``t`` = (obs_t, the action that led to it, the reward of that transition, whether
    obs_t is terminal). The RSSM step of row ``t`` takes ``actions[t]`` (the reference's
    previous action), and the state after it predicts ``rewards[t]`` and ``1 - terminated[t]``;
    the KL terms are ``max(1, KL)`` of each row's KL summed over the latents."""
    from worldflux.nn.twohot import soft_ce

    model = tiny_model(kind="discrete", action_dim=2)
    batch = batch_for(model, B=2, T=5)
    batch["actions"] = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 5)), 2).float()
    batch["actions"][:, 0] = 0.0
    batch["terminated"][1, 3] = True
    torch.manual_seed(0)
    out, seq = model.world_model_loss(batch)
    feat = model.feat(seq["deter"], seq["stoch"])
    reward = soft_ce(model.reward_logits(feat), batch["rewards"], -20.0, 20.0).mean()
    assert float(out.components["reward"].detach()) == pytest.approx(float(reward.detach()), rel=1e-6)
    cont = torch.nn.functional.binary_cross_entropy_with_logits(
        model.cont_logit(feat), 1.0 - batch["terminated"].float())
    assert float(out.components["cont"].detach()) == pytest.approx(float(cont.detach()), rel=1e-6)
    kl = categorical_kl(seq["post"], seq["prior"])                       # [B, T]
    assert float(out.components["dyn"].detach()) == pytest.approx(
        0.5 * float(torch.clamp(kl, min=1.0).mean().detach()), rel=1e-5)
    assert float(out.components["rep"].detach()) == pytest.approx(
        0.1 * float(torch.clamp(kl, min=1.0).mean().detach()), rel=1e-5)
    # deter of row t = core(deter of row t-1, stoch of row t-1, actions[t])
    with torch.no_grad():
        for t in range(1, 5):
            step = model.core(seq["deter"][:, t - 1], seq["stoch"][:, t - 1], batch["actions"][:, t])
            assert torch.allclose(step, seq["deter"][:, t], atol=1e-6)
        # row 0 starts from the learned initial state with a zero action
        deter0, stoch0 = model.initial(2)
        first = model.core(deter0, stoch0, torch.zeros(2, 2))
        assert torch.allclose(first, seq["deter"][:, 0], atol=1e-6)


# -- the contract's consumers: fidelity evaluation and generic planners ----------------------------
def test_open_loop_fidelity_runs_on_the_model():
    import numpy as np

    from worldflux.evaluation.fidelity import open_loop_fidelity

    model = tiny_model()
    rng = np.random.default_rng(0)
    episodes = [{"obs": rng.normal(size=(13, 4)).astype(np.float32),
                 "actions": rng.uniform(-1, 1, (13, 2)).astype(np.float32),
                 "rewards": np.zeros(13, np.float32), "terminated": np.zeros(13, bool),
                 "truncated": np.zeros(13, bool), "is_first": np.eye(1, 13, dtype=bool)[0]}
                for _ in range(2)]
    result = open_loop_fidelity(model, episodes, horizon=5, num_samples=3, starts_per_episode=2)
    assert len(result.mae) == 5 and np.isfinite(result.mae).all()
    assert (np.asarray(result.spread) > 0).any()  # rollouts sample the categorical prior


def test_a_generic_planner_optimises_the_model_reward():
    from worldflux.planners import PlannerConfig, make_planner

    model = tiny_model(action_dim=1)
    state = model.encode(torch.zeros(1, 4))
    planner = make_planner(PlannerConfig(name="cem", horizon=4, population=64, iterations=3,
                                         elites=8), 1, low=-1.0, high=1.0,
                           generator=torch.Generator().manual_seed(0))

    def objective(actions):  # the planner sees only this closure over the model's rollouts
        start = State.stack([state] * actions.shape[0], dim=0).map(lambda t: t[:, 0])
        with torch.no_grad():
            torch.manual_seed(0)
            return model.rollout(start, actions).states["deter"][..., 0].sum(1)

    result = planner.plan(objective)
    assert result.first_action.shape == (1,)
    random_values = objective(torch.rand(64, 4, 1) * 2 - 1)
    assert float(result.value) >= float(random_values.mean())


# -- faster kernels compute the same values (issue 6 speed work) ----------------------------------
def test_onednn_linear_matches_f_linear_in_values_and_gradients():
    from worldflux.models.dreamerv3.networks import _onednn_available, linear

    if not _onednn_available():
        pytest.skip("no oneDNN linear kernel in this torch build")
    torch.manual_seed(0)
    for bias in (True, False):
        x = torch.randn(3, 100, 40, requires_grad=True)     # 300 rows: the oneDNN path
        w = torch.randn(24, 40, requires_grad=True)
        b = torch.randn(24, requires_grad=True) if bias else None
        inputs = [x, w] + ([b] if bias else [])
        g = torch.randn(3, 100, 24)
        fast = linear(x, w, b)
        ref = F.linear(x, w, b)
        assert fast.shape == ref.shape
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
        for got, want in zip(torch.autograd.grad((fast * g).sum(), inputs),
                             torch.autograd.grad((ref * g).sum(), inputs), strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps F.linear's behaviour
        assert linear(torch.randn(300, 40), torch.randn(24, 40)).dtype == torch.bfloat16


@pytest.mark.parametrize("rows", [16, 256])
def test_rssm_core_fast_path_matches_the_batched_matmul_path(rows):
    from worldflux.models.dreamerv3.networks import RSSMCore

    torch.manual_seed(0)
    core = RSSMCore(deter=64, stoch_flat=12, action_dim=2, hidden=16, blocks=4, dyn_layers=1)
    for p in core.parameters():
        p.data.normal_(0.0, 0.3)
    deter = torch.randn(rows, 64, requires_grad=True)
    stoch, action = torch.randn(rows, 12), torch.randn(rows, 2)
    out, grads = {}, {}
    for fast in (True, False):
        core.fast = fast
        y = core(deter, stoch, action)
        grads[fast] = torch.autograd.grad(y.square().sum(), [deter, *core.parameters()])
        with torch.no_grad():  # the in-place gate math
            out[fast] = core(deter, stoch, action)
        torch.testing.assert_close(out[fast], y.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[True], out[False], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_two_hot_cross_entropy_equals_the_sum_of_soft_ce_terms_with_its_gradient():
    from worldflux.nn.twohot import soft_ce, two_hot_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(50, 255, requires_grad=True)
    t1 = torch.randn(50) * 30
    t2 = torch.cat([torch.randn(49), torch.tensor([1e9])])   # one beyond the last bin
    fused = two_hot_cross_entropy(logits, (t1, t2), (1.0, 0.5), -20.0, 20.0)
    ref = soft_ce(logits, t1, -20.0, 20.0) + 0.5 * soft_ce(logits, t2, -20.0, 20.0)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn(50)
    (g_fused,) = torch.autograd.grad((fused * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g_fused, g_ref, atol=1e-6, rtol=1e-5)


def test_small_softmax_helpers_match_torch():
    from worldflux.models.dreamerv3.networks import log_softmax, softmax

    x = torch.randn(7, 32, 4) * 5
    torch.testing.assert_close(softmax(x), F.softmax(x, -1))
    torch.testing.assert_close(log_softmax(x), F.log_softmax(x, -1))
    y = torch.randn(5, 255)
    torch.testing.assert_close(softmax(y), F.softmax(y, -1))


def test_retain_freed_memory_is_idempotent():
    from worldflux.core.memory import retain_freed_memory

    first = retain_freed_memory()
    assert isinstance(first, bool)
    assert retain_freed_memory() is first


def test_channel_norm_is_a_float32_layer_norm_over_channels_in_the_input_dtype():
    torch.manual_seed(0)
    norm = ChannelNorm(3)
    with torch.no_grad():
        norm.norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        norm.norm.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    y = norm(x)
    # By hand: each pixel's 3 channels standardised (eps 1e-3), then scaled and shifted.
    mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=False)
    expected = ((x - mean) / torch.sqrt(var + 1e-3) * norm.norm.weight.view(1, 3, 1, 1)
                + norm.norm.bias.view(1, 3, 1, 1))
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (expected_grad,) = torch.autograd.grad(expected, x, g)
    torch.testing.assert_close(grad, expected_grad)

    xb = x.detach().bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = norm(xb)
    assert yb.dtype == torch.bfloat16 and yb.shape == x.shape
    torch.testing.assert_close(yb.float(), expected.detach(), atol=0.05, rtol=0.02)
    yb.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16

    # The squared error takes a bf16 prediction as it is: float32 sum, bf16 gradient.
    pred, target = torch.randn(2, 3, 70).bfloat16().requires_grad_(True), torch.randn(2, 3, 70)
    err = _squared_error(pred, target)
    assert err.dtype == torch.float32
    torch.testing.assert_close(err, (pred.detach().float() - target).square().sum(-1))
    err.sum().backward()
    assert pred.grad.dtype == torch.bfloat16
    torch.testing.assert_close(pred.grad.float(), 2 * (pred.detach().float() - target),
                               atol=0.02, rtol=0.01)
