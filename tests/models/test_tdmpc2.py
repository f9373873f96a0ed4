"""TD-MPC2 family: each mechanism against hand-computed values (two-hot regression, SimNorm,
the two-of-five target minimum, the discount heuristic, the tanh-Gaussian log-density, Polyak
averaging, the row mapping of replay windows), presets, pixels and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import worldflux
from worldflux.core import ConfigError, from_pretrained
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.data import ReplayBuffer, to_torch
from worldflux.models.tdmpc2 import (
    MODEL_SIZES,
    TDMPC2Config,
    TDMPC2Model,
    discount_from_episode_length,
    tdmpc2_sequences,
)
from worldflux.models.tdmpc2.networks import QEnsemble, ShiftAug, mish
from worldflux.nn.twohot import soft_ce, symexp, symlog, two_hot, two_hot_inv

TINY = {"model_size": 1, "enc_dim": 32, "mlp_dim": 32, "latent_dim": 16, "num_q": 5}


def tiny_model(obs_dim: int = 3, action_dim: int = 1, **overrides) -> TDMPC2Model:
    torch.manual_seed(0)
    config = TDMPC2Config(**{**TINY, **overrides})
    return TDMPC2Model(config, ObservationSpec((obs_dim,)), ActionSpec(action_dim))


# -- discrete regression ---------------------------------------------------------------------------
def test_symlog_and_symexp_hand_values():
    x = torch.tensor([0.0, math.e - 1, -(math.e - 1), math.e**2 - 1])
    torch.testing.assert_close(symlog(x), torch.tensor([0.0, 1.0, -1.0, 2.0]))
    torch.testing.assert_close(symexp(torch.tensor([0.0, 1.0, -1.0, 2.0])), x)
    wide = torch.tensor([-1e4, -3.5, -1e-3, 0.0, 2e-3, 7.0, 5e5])
    torch.testing.assert_close(symexp(symlog(wide)), wide, rtol=1e-5, atol=1e-6)


def test_two_hot_between_bins_on_a_bin_and_outside_the_range():
    # 5 bins at -2, -1, 0, 1, 2 (symlog space): symlog(x) = 0.25 sits a quarter past bin 2.
    x = torch.tensor([symexp(torch.tensor(0.25)).item(), math.e - 1, 1e6, -1e6, 0.0])
    encoded = two_hot(x, 5, -2.0, 2.0)
    expected = torch.tensor([[0, 0, 0.75, 0.25, 0],
                             [0, 0, 0, 1.0, 0],      # symlog = 1: exactly on bin 3
                             [0, 0, 0, 0, 1.0],      # beyond vmax: the top bin
                             [1.0, 0, 0, 0, 0],      # below vmin: the bottom bin
                             [0, 0, 1.0, 0, 0]])
    torch.testing.assert_close(encoded, expected)
    torch.testing.assert_close(encoded.sum(-1), torch.ones(5))


def test_two_hot_round_trip_with_the_official_101_bins():
    x = torch.tensor([0.0, 0.3, -5.7, 123.4, -0.01, 999.0, 1e5, -1e6])
    logits = torch.log(two_hot(x, 101, -10.0, 10.0))  # softmax(log p) == p
    decoded = two_hot_inv(logits, -10.0, 10.0)
    top = symexp(torch.tensor(10.0))  # values beyond the range decode to the clipped end
    expected = torch.where(x.abs() > top, torch.sign(x) * top, x)
    torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-5)
    assert float(top) == pytest.approx(math.exp(10) - 1, rel=1e-6)


def test_soft_cross_entropy_hand_values():
    # Uniform logits: every target costs log(num_bins).
    torch.testing.assert_close(soft_ce(torch.zeros(3, 5), torch.tensor([0.0, 1.0, -50.0]),
                                       -2.0, 2.0), torch.full((3,), math.log(5)))
    # Logits putting p = (0.5, 0.5) on bins 2, 3; target 3/4 of the way to bin 3.
    logits = torch.log(torch.tensor([[1e-9, 1e-9, 0.5, 0.5, 1e-9]]))
    target = symexp(torch.tensor([0.75]))
    expected = -(0.25 * math.log(0.5) + 0.75 * math.log(0.5))
    torch.testing.assert_close(soft_ce(logits, target, -2.0, 2.0),
                               torch.tensor([expected]), rtol=1e-5, atol=1e-6)


# -- latent, discount, presets ---------------------------------------------------------------------
def test_encoder_and_dynamics_outputs_sum_to_one_per_simplex_group_of_8():
    model = tiny_model(obs_dim=5, action_dim=2)
    z = model.encode_obs(torch.randn(7, 5) * 3)
    z_next = model.next(z, torch.rand(7, 2) * 2 - 1)
    for latent in (z, z_next):
        groups = latent.reshape(7, 2, 8)
        torch.testing.assert_close(groups.sum(-1), torch.ones(7, 2))
        assert (latent > 0).all()
    torch.testing.assert_close(model.initial_state(2)["z"], torch.full((2, 16), 1 / 8))


def test_discount_from_the_episode_length():
    assert discount_from_episode_length(500) == pytest.approx(0.99)      # (100 - 1) / 100
    assert discount_from_episode_length(1000) == pytest.approx(0.995)    # 199/200 = cap
    assert discount_from_episode_length(200) == pytest.approx(0.975)     # 39 / 40
    assert discount_from_episode_length(10_000) == pytest.approx(0.995)  # clipped above
    assert discount_from_episode_length(20) == pytest.approx(0.95)       # 3/4, clipped below
    model = tiny_model()
    assert float(model.discount) == pytest.approx(0.99)  # unknown length: 500 steps
    assert model.set_episode_length(1000) == pytest.approx(0.995)
    assert float(model.discount) == pytest.approx(0.995)
    with pytest.raises(ConfigError, match="episode_length"):
        discount_from_episode_length(0)


def test_presets_have_the_parameter_counts_their_names_say():
    """Single-task proprioceptive model (walker: 24 observations, 6 actions)."""
    counts = {}
    with torch.device("meta"):
        for size in MODEL_SIZES:
            model = TDMPC2Model(TDMPC2Config(model_size=size), ObservationSpec((24,)),
                                ActionSpec(6))
            counts[size] = model.num_parameters()
    for size, count in counts.items():
        assert 0.85 * size * 1e6 < count < 1.25 * size * 1e6, (size, count)
    assert counts[5] == 4_960_618
    model = tiny_model()
    assert model.sizes.num_q == 5 and model.qs.w0.shape == (5, 17, 32)
    assert TDMPC2Config(model_size=1).sizes().num_q == 2
    assert TDMPC2Config(model_size=317, latent_dim=1024).sizes().latent_dim == 1024
    with pytest.raises(ConfigError, match="model_size: got 7"):
        TDMPC2Config(model_size=7).sizes()


def test_layers_follow_the_official_architecture():
    model = tiny_model(obs_dim=3, action_dim=2)
    first, second, out = model.reward_head
    assert isinstance(first.ln, torch.nn.LayerNorm) and first.dropout is None
    assert torch.count_nonzero(out.weight) == 0  # zero-initialised output layers
    assert torch.count_nonzero(model.qs.w2) == 0 and torch.count_nonzero(model.qs.b2) == 0
    assert float(model.qs.w0.detach().std()) == pytest.approx(0.02, rel=0.2)  # trunc_normal(0.02)
    assert model.qs.dropout == 0.01
    x = torch.randn(4, 2)
    torch.testing.assert_close(mish(x), torch.nn.functional.mish(x))
    # Dropout acts on the first Q layer in training mode only, never on the target.
    model.qs.w2.data.normal_()
    inputs = torch.randn(64, 18)
    model.train()
    assert not torch.equal(model.qs(inputs), model.qs(inputs))
    assert torch.equal(model.qs(inputs, params="target"), model.qs(inputs, params="target"))
    model.eval()
    assert torch.equal(model.qs(inputs), model.qs(inputs))


# -- Q ensemble: two-of-five minimum and Polyak averaging -----------------------------------------
def _constant_heads(model: TDMPC2Model, values: list[float], *, target: bool) -> None:
    """Make Q-function i output exactly ``values[i]`` whatever its input."""
    logits = torch.log(two_hot(torch.tensor(values), model.config.num_bins, model.config.vmin,
                               model.config.vmax)).clamp(min=-50)
    prefix = "target_" if target else ""
    getattr(model.qs, f"{prefix}w2").data.zero_()
    getattr(model.qs, f"{prefix}b2").data.copy_(logits[:, None, :])


def test_td_target_is_the_minimum_of_two_random_target_heads_of_five():
    model = tiny_model()
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    _constant_heads(model, values, target=True)
    _constant_heads(model, [-100.0] * 5, target=False)  # the online heads are not used
    model.discount.fill_(0.9)
    z = model.encode_obs(torch.randn(4, 3))
    reward = torch.tensor([0.5, -1.0, 2.0, 0.0])
    terminated = torch.tensor([0.0, 0.0, 0.0, 1.0])
    for seed in range(8):
        # The draw: pi(z') consumes the generator first, then randperm(5)[:2] picks the heads.
        replay = torch.Generator().manual_seed(seed)
        torch.randn((4, 1), generator=replay)
        heads = torch.randperm(5, generator=replay)[:2]
        lowest = min(values[int(heads[0])], values[int(heads[1])])
        td = model.td_target(z, reward, terminated, generator=torch.Generator().manual_seed(seed))
        expected = reward + 0.9 * (1 - terminated) * lowest
        torch.testing.assert_close(td, expected, rtol=1e-4, atol=1e-4)
        q = model.Q(z, torch.zeros(4, 1), "min", target=True,
                    generator=torch.Generator().manual_seed(seed))
        drawn = torch.randperm(5, generator=torch.Generator().manual_seed(seed))[:2]
        torch.testing.assert_close(q, torch.full((4,), min(values[int(i)] for i in drawn)),
                                   rtol=1e-4, atol=1e-4)
    # Over many draws: P(min = 1) = 4/10, P(2) = 3/10, P(3) = 2/10, P(4) = 1/10, never 5.
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        mins = [round(float(model.Q(z[:1], torch.zeros(1, 1), "min", target=True, generator=g)))
                for _ in range(2000)]
    counts = np.bincount(mins, minlength=6)[1:] / len(mins)
    np.testing.assert_allclose(counts, [0.4, 0.3, 0.2, 0.1, 0.0], atol=0.04)
    # "avg" is the mean of the two drawn heads; "all" returns every head's logits.
    avg = model.Q(z, torch.zeros(4, 1), "avg", target=True,
                  generator=torch.Generator().manual_seed(0))
    drawn = torch.randperm(5, generator=torch.Generator().manual_seed(0))[:2]
    expected = sum(values[int(i)] for i in drawn) / 2
    torch.testing.assert_close(avg, torch.full((4,), expected), rtol=1e-4, atol=1e-4)
    assert model.Q(z, torch.zeros(4, 1), "all").shape == (5, 4, 101)


def test_polyak_update_of_the_target_q_functions():
    ensemble = QEnsemble(5, 6, 8, 11, 0.01)
    before = {n: getattr(ensemble, f"target_{n}").clone() for n in QEnsemble.NAMES}
    with torch.no_grad():
        for n in QEnsemble.NAMES:
            getattr(ensemble, n).add_(torch.randn_like(getattr(ensemble, n)))
    online = {n: getattr(ensemble, n).detach().clone() for n in QEnsemble.NAMES}
    ensemble.soft_update(0.01)
    for n in QEnsemble.NAMES:
        torch.testing.assert_close(getattr(ensemble, f"target_{n}"),
                                   0.99 * before[n] + 0.01 * online[n])
    assert not any(n.startswith("target_") for n, _ in ensemble.named_parameters())


# -- policy ----------------------------------------------------------------------------------------
def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_policy_log_prob_matches_a_numerical_density_of_the_squashed_gaussian():
    model = tiny_model(obs_dim=3, action_dim=2)
    with torch.no_grad():  # pre-tanh means (0.3, -0.5), stds exp(-10 + 6 (tanh(r) + 1))
        model.policy[-1].weight.zero_()
        model.policy[-1].bias.copy_(torch.tensor([0.3, -0.5, 0.6, 0.9]))
    with torch.no_grad():
        z = model.encode_obs(torch.randn(6, 3))
        action, info = model.pi(z, generator=torch.Generator().manual_seed(0))
    expected_std = torch.exp(-10 + 6 * (torch.tanh(torch.tensor([0.6, 0.9])) + 1))
    torch.testing.assert_close(info["log_std"].exp(), expected_std.expand(6, 2))
    mu = torch.atanh(info["mean"]).double()
    std = info["log_std"].exp().double()
    h = 1e-5
    for row in range(6):
        numeric = 0.0
        for dim in range(2):
            y = float(action[row, dim])
            assert abs(y) < 0.999

            def cdf(v, row=row, dim=dim):
                return _normal_cdf((math.atanh(v) - float(mu[row, dim])) / float(std[row, dim]))
            numeric += math.log((cdf(y + h) - cdf(y - h)) / (2 * h))
        assert float(info["log_prob"][row]) == pytest.approx(numeric, abs=2e-3)
    # The official entropy term is scaled by the action dimension: about -A * log N(u).
    pre = torch.atanh(action.double())
    gaussian = torch.distributions.Normal(mu, std).log_prob(pre).sum(-1)
    torch.testing.assert_close(info["scaled_entropy"].double(), -2 * gaussian, rtol=1e-3,
                               atol=1e-3)
    assert ((info["log_std"] >= -10) & (info["log_std"] <= 2)).all()
    mean_action, _ = model.pi(z, deterministic=True)
    torch.testing.assert_close(mean_action, info["mean"])


def test_policy_loss_updates_the_running_q_scale_from_the_percentile_range():
    model = tiny_model()
    spread = torch.linspace(0, 100, 64)  # Q spread 5th-95th percentile = 90
    _constant_heads(model, [0.0] * 5, target=False)
    zs = model.encode_obs(torch.randn(64, 3)).unsqueeze(0)
    model.update_q_scale(spread)
    assert float(model.q_scale) == pytest.approx(0.99 * 1 + 0.01 * 90, rel=1e-4)
    model.update_q_scale(torch.zeros(64))  # range below 1 is floored at 1
    assert float(model.q_scale) == pytest.approx(0.99 * 1.89 + 0.01 * 1, rel=1e-4)
    out = model.policy_loss(zs, update_scale=False)
    assert math.isfinite(float(out.loss.detach())) and float(model.q_scale) == pytest.approx(1.8811,
                                                                                     rel=1e-4)


# -- batches: the worldflux row convention mapped to TD-MPC2's (o_t, a_t, r_t, o_{t+1}) -----------
def test_replay_windows_map_to_tdmpc2_sequences():
    buffer = ReplayBuffer(100, obs_shape=(2,), action_dim=1, seed=0)
    length = 9
    for t in range(length + 1):  # row t: obs t, the action 0.1 t that led to it, reward 10 t
        buffer.add(np.full(2, t, np.float32), np.full(1, 0.1 * t, np.float32), 10.0 * t,
                   t == length, False, is_first=t == 0)
    seq = tdmpc2_sequences(to_torch(buffer.sample(32, 4)))
    assert seq["obs"].shape == (4, 32, 2) and seq["action"].shape == (3, 32, 1)
    start = seq["obs"][0, :, 0]
    for k in range(3):
        torch.testing.assert_close(seq["obs"][k, :, 0], start + k)          # o_k
        torch.testing.assert_close(seq["action"][k, :, 0], 0.1 * (start + k + 1))  # a_k: o_k->o_k+1
        torch.testing.assert_close(seq["reward"][k], 10.0 * (start + k + 1))       # r_k
        torch.testing.assert_close(seq["terminated"][k], (start + k + 1 == length).float())
    torch.testing.assert_close(seq["valid"], torch.ones(3, 32))
    # A window crossing into a new episode at row 2: steps from t = 1 on are masked out.
    batch = {"obs": torch.zeros(1, 4, 2), "actions": torch.zeros(1, 4, 1),
             "rewards": torch.zeros(1, 4), "terminated": torch.zeros(1, 4, dtype=torch.bool),
             "truncated": torch.zeros(1, 4, dtype=torch.bool),
             "is_first": torch.tensor([[True, False, True, False]])}
    torch.testing.assert_close(tdmpc2_sequences(batch)["valid"][:, 0], torch.tensor([1.0, 0, 0]))


def test_loss_components_and_weights_on_a_batch():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(8, 4, 3, generator=g), "actions": torch.rand(8, 4, 1) * 2 - 1,
             "rewards": torch.rand(8, 4, generator=g), "terminated": torch.zeros(8, 4).bool(),
             "truncated": torch.zeros(8, 4).bool(), "is_first": torch.zeros(8, 4).bool()}
    out = model.loss(batch)
    assert set(out.components) == {"consistency", "reward", "value", "policy"}
    assert out.metrics["consistency_loss"] * 20 == pytest.approx(
        float(out.components["consistency"].detach()), rel=1e-5)
    # Zero-initialised heads predict the uniform distribution: CE = log(101) for every target,
    # weighted by rho^t = 1, 0.5, 0.25 and averaged over H = 3 (and the 5 heads).
    weighted = math.log(101) * (1 + 0.5 + 0.25) / 3
    assert out.metrics["reward_loss"] == pytest.approx(weighted, rel=1e-5)
    assert out.metrics["value_loss"] == pytest.approx(weighted, rel=1e-5)
    episodic = tiny_model(episodic=True)
    batch["terminated"][:, -1] = True
    out = episodic.loss(batch)
    assert "termination" in out.components
    assert set(episodic.io_contract().predictions) == {"reward", "value", "continue"}
    preds = episodic.decode(episodic.encode(batch["obs"][:, 0])).preds
    assert ((preds["continue"] > 0) & (preds["continue"] < 1)).all()


# -- pixels, config errors, factory and save/load ---------------------------------------------------
def test_pixel_encoder_shapes_shift_augmentation_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = worldflux.create_world_model("tdmpc2", obs_shape=(3, 64, 64), action_dim=2,
                                         device="cpu", mlp_dim=32, num_q=2)
    obs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    z = model.encode(obs)["z"]
    assert z.shape == (2, 512)
    torch.testing.assert_close(z.reshape(2, 64, 8).sum(-1), torch.ones(2, 64))
    shifted = model.encode_obs(obs, augment=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(shifted, z)
    # The shift is a crop of the replicate-padded image: with offset (pad, pad) it is the identity.
    image = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(1, 2, 64, 64)
    out = ShiftAug(3)(image.expand(50, -1, -1, -1), torch.Generator().manual_seed(1))
    centred = [i for i in range(50) if torch.equal(out[i], image[0])]
    assert centred, "some of 50 random offsets should be (3, 3)"
    padded = torch.nn.functional.pad(image, (3,) * 4, mode="replicate")[0]
    for i in range(50):
        matches = [(r, c) for r in range(7) for c in range(7)
                   if torch.equal(out[i], padded[:, r:r + 64, c:c + 64])]
        assert matches, "every output is a 64x64 crop of the padded image"
    # The encoder shifts the stored uint8 frames: the same crops as on float images.
    frames = torch.randint(0, 256, (50, 2, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(ShiftAug(3)(frames, torch.Generator().manual_seed(2)).float(),
                               ShiftAug(3)(frames.float(), torch.Generator().manual_seed(2)),
                               rtol=0, atol=0)
    as_float = obs.float()
    before = as_float.clone()
    torch.testing.assert_close(model.encode(as_float)["z"], z)
    assert torch.equal(as_float, before), "the encoder scales a copy, not the caller's tensor"
    batch = {"obs": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8),
             "actions": torch.zeros(2, 3, 2), "rewards": torch.zeros(2, 3),
             "terminated": torch.zeros(2, 3).bool(), "truncated": torch.zeros(2, 3).bool(),
             "is_first": torch.zeros(2, 3).bool()}
    assert torch.isfinite(model.loss(batch).loss)
    model.eval()
    model.save_pretrained(str(tmp_path))
    loaded = from_pretrained(str(tmp_path), device="cpu")
    torch.testing.assert_close(loaded.encode(obs)["z"], z, rtol=0, atol=0)


def test_pixel_channels_follow_the_latent_unless_given():
    """num_channels unset = latent_dim // 16: 32 at 5M (official), 8 at the 1M preset."""
    from worldflux.models.tdmpc2.config import TDMPC2Config

    assert TDMPC2Config().pixel_channels() == 32
    assert TDMPC2Config(model_size=1).pixel_channels() == 8
    assert TDMPC2Config(model_size=1, num_channels=4, latent_dim=64).pixel_channels() == 4
    model = worldflux.create_world_model("tdmpc2", obs_shape=(3, 64, 64), action_dim=1,
                                         device="cpu", model_size=1)
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 8, 8]
    assert model.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))["z"].shape == (2, 128)


def test_invalid_settings_name_the_field():
    with pytest.raises(ConfigError, match=r"latent_dim: got 128 \(num_channels 32\), expected"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3, 64, 64), action_dim=1,
                                     model_size=1, num_channels=32)
    with pytest.raises(ConfigError, match="latent_dim: got 100, expected num_channels"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3, 64, 64), action_dim=1,
                                     latent_dim=100, simnorm_dim=4)
    with pytest.raises(ConfigError, match=r"\[C, 64, 64\]"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3, 32, 32), action_dim=1)
    with pytest.raises(ConfigError, match="continuous"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3,), action_dim=2,
                                     action_kind="discrete")
    with pytest.raises(ConfigError, match="num_q: got 1"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3,), action_dim=1, num_q=1)
    with pytest.raises(ConfigError, match="multiple of simnorm_dim"):
        worldflux.create_world_model("tdmpc2", obs_shape=(3,), action_dim=1, latent_dim=20)
    assert "tdmpc2" in {m["name"] for m in worldflux.list_models()}


def test_smoke_task_learns_pendulum_rewards_through_the_latent():
    result = TDMPC2Model.smoke_task(seed=0)
    assert result.passed, result.description
    assert result.metric >= 0.8
