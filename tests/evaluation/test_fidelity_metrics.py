"""Open-loop fidelity: result layout, a fitted PETS model, an oracle, and constructed rollouts
whose errors, spreads and rank correlations are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from worldflux.core.errors import ContractError, DataError
from worldflux.core.spec import ActionSpec, ObservationSpec
from worldflux.evaluation import (
    FidelityResult,
    deterministic,
    imagine_rollouts,
    open_loop_fidelity,
    plot_fidelity,
    spearman,
    write_fidelity_json,
)
from worldflux.evaluation.fidelity import PER_HORIZON_KEYS, supports_deterministic
from worldflux.models.pets import PETSModel
from worldflux.models.pets.config import PETSConfig
from worldflux.training.video import imagined_rollout


class Oracle:
    """Test double whose ``imagine`` returns the real future of the start it is given (and
    checks that it was given that start's real actions)."""

    def __init__(self, episodes):
        self.episodes = episodes
        self.index = {ep["obs"][t].tobytes(): (i, t)
                      for i, ep in enumerate(episodes) for t in range(len(ep["obs"]))}

    def imagine(self, obs, actions, num_samples, *, generator=None):
        T = actions.shape[1]
        rows = []
        for b, row in enumerate(obs.numpy()):
            i, t = self.index[row.astype(np.float32).tobytes()]
            episode = self.episodes[i]
            np.testing.assert_array_equal(actions[b].numpy(), episode["actions"][t + 1:t + T + 1])
            rows.append(episode["obs"][t:t + T + 1])
        real = torch.as_tensor(np.stack(rows))
        return real.unsqueeze(0).expand(num_samples, *real.shape).clone()


LINE_STEPS = 50
SPREADS = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
ERRORS = np.array([2.0, 1.0, 4.0, 3.0, 5.0])  # per-step error growth of start b


def line_episode():
    """Synthetic episode ``obs[t] = [t, -2t]`` for ``t = 0..50`` with zero actions."""
    t = np.arange(LINE_STEPS + 1, dtype=np.float32)
    rows = len(t)
    return {"obs": np.stack([t, -2 * t], 1), "actions": np.zeros((rows, 1), np.float32),
            "rewards": np.zeros(rows, np.float32), "terminated": np.zeros(rows, bool),
            "truncated": np.zeros(rows, bool), "is_first": np.arange(rows) == 0}


class Constructed:
    """Two samples per start ``b``: the real future shifted by ``ERRORS[b] * h`` in every
    dimension, plus and minus ``SPREADS[b]``: sample mean error ``ERRORS[b] * h``, population
    std ``SPREADS[b]``."""

    def imagine(self, obs, actions, num_samples, *, generator=None):
        assert num_samples == 2
        T = actions.shape[1]
        h = torch.arange(T + 1, dtype=torch.float32)
        start = obs[:, :1]  # t0 of every row [B, 1]
        real = torch.stack([start + h, -2 * (start + h)], -1)  # [B, T + 1, 2]
        center = real + torch.as_tensor(ERRORS, dtype=torch.float32)[:, None, None] * h[:, None]
        spread = torch.as_tensor(SPREADS, dtype=torch.float32)[:, None, None]
        return torch.stack([center + spread, center - spread])


def test_constructed_rollouts_give_known_errors_spreads_and_rank_correlation():
    H = 10
    result = open_loop_fidelity(Constructed(), [line_episode()], horizon=H, num_samples=2,
                                starts_per_episode=5)
    assert result.num_starts == 5 and result.num_episodes == 1 and result.num_samples == 2
    h = np.arange(1, H + 1)
    np.testing.assert_allclose(result.mae, ERRORS.mean() * h, rtol=1e-6)
    np.testing.assert_allclose(result.rmse, np.sqrt((ERRORS ** 2).mean()) * h, rtol=1e-6)
    np.testing.assert_allclose(result.spread, np.full(H, SPREADS.mean()), rtol=1e-6)
    # ||error|| = E_b h sqrt(2), ||real_h - real_0|| = h sqrt(5): the median ratio is
    # median(E) sqrt(2 / 5) at every horizon; pooled: mean(E) sqrt(2 / 5).
    np.testing.assert_allclose(result.relative_error, np.median(ERRORS) * math.sqrt(0.4),
                               rtol=1e-6)
    np.testing.assert_allclose(result.relative_error_pooled, ERRORS.mean() * math.sqrt(0.4),
                               rtol=1e-6)
    s0 = np.arange(LINE_STEPS + 1).std()  # the data's std: s0 in dim 0, 2 s0 in dim 1
    np.testing.assert_allclose(result.scale, [s0, 2 * s0], rtol=1e-6)
    np.testing.assert_allclose(result.normalized_rmse,
                               np.sqrt((ERRORS ** 2).mean() * (1 + 0.25) / 2) * h / s0, rtol=1e-6)
    np.testing.assert_allclose(result.normalized_spread, SPREADS.mean() * 0.75 / s0, rtol=1e-6)
    # Per horizon the starts rank as SPREADS vs ERRORS: d = [-1, 1, -1, 1, 0], so
    # rho = 1 - 6 * 4 / (5 * (25 - 1)) = 0.8.
    np.testing.assert_allclose(result.spearman_per_h, 0.8, rtol=1e-9)
    assert result.spearman == pytest.approx(spearman(result.pair_spread, result.pair_error))
    assert result.pair_error.shape == result.pair_spread.shape == (5, H)
    assert result.horizon_under(0.1) == 0 and result.horizon_under(10.0) == H
    # Samples c +- S: the 5-95% range is c +- 0.9 S (linear interpolation), the truth lies at
    # c - E h: inside for starts with E h <= 0.9 S, i.e. 2 of 5 at h = 1 and none later.
    np.testing.assert_allclose(result.coverage_90, [0.4] + [0.0] * (H - 1), rtol=1e-9)
    # CRPS of the two samples c +- S at c - e (e = E h): E|X - y| = max(S, e), E|X - X'| / 2 =
    # S / 2, in units of the scale (s0 and 2 s0: a mean factor 0.75 / s0 over the two dims).
    expected = (np.maximum(SPREADS[:, None], ERRORS[:, None] * h[None])
                - SPREADS[:, None] / 2).mean(0) * 0.75 / s0
    np.testing.assert_allclose(result.crps, expected, rtol=1e-6)


def test_oracle_has_zero_error_at_every_horizon(heldout):
    result = open_loop_fidelity(Oracle(heldout), heldout, horizon=50, num_samples=3,
                                starts_per_episode=4)
    assert result.num_starts == 12 and result.num_episodes == 3
    for key in ("mae", "mse", "rmse", "normalized_rmse", "relative_error",
                "relative_error_pooled", "spread", "normalized_spread"):
        np.testing.assert_array_equal(getattr(result, key), np.zeros(50), err_msg=key)
    assert result.horizon_under(0.1) == 50
    np.testing.assert_array_equal(result.coverage_90, np.ones(50))  # the truth is every sample
    assert math.isnan(result.spearman)  # no spread, no error: nothing to rank
    assert result.to_dict()["spearman"] is None


def test_fitted_pets_error_grows_with_horizon_and_spread_tracks_it(fitted_pets, heldout):
    result = open_loop_fidelity(fitted_pets, heldout, horizon=50, starts_per_episode=6)
    assert result.num_samples == 3  # the ensemble size
    assert result.num_starts == 18
    h = np.arange(50)
    assert spearman(h, result.rmse) > 0.9 and result.rmse[-1] > 5 * result.rmse[0]
    assert spearman(h, result.normalized_spread) > 0.9
    assert result.normalized_rmse[0] < 0.1  # one step: well under a data std
    assert result.spearman > 0.5
    assert 1 <= result.horizon_under(0.5) < 50
    # An untrained ensemble is far worse one step ahead.
    torch.manual_seed(1)
    untrained = PETSModel(PETSConfig(ensemble_size=3, hidden_size=64, num_layers=2),
                          ObservationSpec((3,)), ActionSpec(1))
    baseline = open_loop_fidelity(untrained, heldout, horizon=5, starts_per_episode=6)
    assert result.mse[0] < 0.2 * baseline.mse[0]


def test_result_json_keys_shapes_and_round_trip(fitted_pets, heldout, tmp_path):
    result = open_loop_fidelity(fitted_pets, heldout, horizon=20, num_samples=4,
                                starts_per_episode=3)
    data = result.to_dict()
    assert {"horizon", "num_samples", "num_starts", "num_episodes", "deterministic",
            "spearman", "scale", "summary", *PER_HORIZON_KEYS} <= set(data)
    assert "pair_error" not in data
    assert all(len(data[key]) == 20 for key in PER_HORIZON_KEYS)
    assert data["horizon"] == 20 and data["num_samples"] == 4 and data["num_starts"] == 9
    assert len(data["scale"]) == 3
    assert data["summary"]["horizon_under_10pct"] == result.horizon_under(0.1)
    assert set(data["summary"]) >= {"spearman", "relative_error_h1", "relative_error_h20"}

    path = write_fidelity_json({"pets": result}, tmp_path / "fidelity.json",
                               include_pairs=True, extra={"seed": 7})
    loaded = json.loads(path.read_text())
    assert loaded["seed"] == 7 and list(loaded["results"]) == ["pets"]
    back = FidelityResult.from_dict(loaded["results"]["pets"])
    for key in PER_HORIZON_KEYS:
        np.testing.assert_allclose(getattr(back, key), getattr(result, key), err_msg=key)
    np.testing.assert_allclose(back.pair_error, result.pair_error)
    assert back.spearman == pytest.approx(result.spearman)
    with pytest.raises(DataError, match="horizon"):
        FidelityResult.from_dict({k: v for k, v in data.items() if k != "horizon"})


def test_pets_rollouts_follow_the_contract(fitted_pets, heldout, monkeypatch):
    obs = torch.as_tensor(np.stack([e["obs"][0] for e in heldout]))
    actions = torch.as_tensor(np.stack([e["actions"][1:11] for e in heldout]))
    generator = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    samples = imagine_rollouts(fitted_pets, obs, actions, 6, generator=generator(0))
    assert samples.shape == (6, 3, 11, 3)
    torch.testing.assert_close(samples[:, :, 0], obs.expand(6, 3, 3))
    torch.testing.assert_close(samples, imagine_rollouts(fitted_pets, obs, actions, 6,
                                                         generator=generator(0)))
    assert not torch.equal(samples, imagine_rollouts(fitted_pets, obs, actions, 6,
                                                     generator=generator(1)))
    # Deterministic: every sample is the ensemble mean, as the training videos imagine it.
    assert supports_deterministic(fitted_pets)
    mean = imagine_rollouts(deterministic(fitted_pets), obs, actions, 4)
    assert torch.equal(mean[0], mean[3])
    np.testing.assert_allclose(mean[0, 1].numpy(),
                               imagined_rollout(fitted_pets, heldout[1]["obs"][:11],
                                                heldout[1]["actions"][1:11]), rtol=1e-5,
                               atol=1e-6)
    # Sample k runs on ensemble member k % E (rows are k-major: row k * B + b).
    seen = []
    original = fitted_pets.transition

    def spy(state, action, **kwargs):
        seen.append(state["member"].clone())
        return original(state, action, **kwargs)

    monkeypatch.setattr(fitted_pets, "transition", spy)
    fallback = imagine_rollouts(fitted_pets, obs, actions, 5, use_imagine=False)
    expected = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 1, 1, 1])
    assert len(seen) == 10 and fallback.shape == (5, 3, 11, 3)
    assert torch.equal(seen[0], expected) and torch.equal(seen[-1], expected)  # TS-inf


@pytest.mark.skipif(not hasattr(PETSModel, "imagine")
                    or "stochastic" not in PETSConfig.__dataclass_fields__,
                    reason="PETSModel.imagine / PETSConfig.stochastic not available")
def test_family_imagine_agrees_with_the_contract_fallback(heldout):
    """Without aleatoric noise, sample k of both paths is member k % E's rollout."""
    torch.manual_seed(0)
    model = PETSModel(PETSConfig(ensemble_size=3, hidden_size=16, num_layers=2,
                                 stochastic=False), ObservationSpec((3,)), ActionSpec(1))
    obs = torch.as_tensor(np.stack([e["obs"][5] for e in heldout]))
    actions = torch.as_tensor(np.stack([e["actions"][6:14] for e in heldout]))
    family = imagine_rollouts(model, obs, actions, 5)
    fallback = imagine_rollouts(model, obs, actions, 5, use_imagine=False)
    torch.testing.assert_close(family, fallback)
    assert not torch.allclose(family[0], family[1])  # members differ
    torch.testing.assert_close(family[0], family[3])  # same member (0 = 3 % 3)


def test_deterministic_rollouts_have_no_spread(fitted_pets, heldout):
    result = open_loop_fidelity(deterministic(fitted_pets), heldout, horizon=10,
                                starts_per_episode=2)
    np.testing.assert_array_equal(result.spread, np.zeros(10))
    np.testing.assert_array_equal(result.coverage_90, np.zeros(10))  # a point misses the truth
    assert math.isnan(result.spearman) and result.to_dict()["spearman"] is None
    assert np.all(result.rmse > 0)


def test_bad_inputs_are_refused_clearly(fitted_pets, heldout):
    short = {k: v[:11] for k, v in heldout[0].items()}
    with pytest.raises(DataError, match="longest has 10 steps.*horizon=50"):
        open_loop_fidelity(fitted_pets, [short], horizon=50)
    with pytest.raises(DataError, match="empty"):
        open_loop_fidelity(fitted_pets, [], horizon=5)

    class WrongShape:
        def imagine(self, obs, actions, num_samples, *, generator=None):
            return torch.zeros(num_samples, obs.shape[0], actions.shape[1], 3)

    with pytest.raises(ContractError, match=r"expected \(2, 3, 6, 3\)"):
        open_loop_fidelity(WrongShape(), heldout, horizon=5, num_samples=2, starts_per_episode=1)


def test_plot_fidelity_writes_a_png_with_every_model(fitted_pets, heldout, tmp_path):
    from PIL import Image

    results = {"sampled": open_loop_fidelity(fitted_pets, heldout, horizon=20,
                                             starts_per_episode=2),
               "oracle": open_loop_fidelity(Oracle(heldout), heldout, horizon=20,
                                            starts_per_episode=2)}
    path = plot_fidelity(results, tmp_path / "fidelity.png", title="Pendulum-v1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size[0] > 2 * image.size[1]  # three panels side by side
