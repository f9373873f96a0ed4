"""Latent helpers: SimNorm, straight-through categorical, unimix, Gaussian, soft log-variance bounds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from worldflux.nn import (
    Gaussian,
    SimNorm,
    gaussian_nll,
    soft_bound_logvar,
    straight_through_categorical,
    unimix_logits,
)


def test_simnorm_sums_to_one_per_group():
    x = torch.randn(4, 5, 24) * 10
    y = SimNorm(group_size=8)(x)
    assert y.shape == x.shape
    groups = y.reshape(4, 5, 3, 8)
    torch.testing.assert_close(groups.sum(-1), torch.ones(4, 5, 3))
    assert (y >= 0).all()
    # Groups are independent: changing one group leaves the others untouched.
    x2 = x.clone()
    x2[..., :8] += 5.0
    torch.testing.assert_close(SimNorm(8)(x2)[..., 8:], y[..., 8:])


def test_simnorm_rejects_indivisible_width():
    with pytest.raises(ValueError, match="feature size 10, expected a multiple of 8"):
        SimNorm(8)(torch.zeros(2, 10))


def test_straight_through_categorical_is_one_hot_with_gradients():
    logits = torch.randn(6, 3, 5, requires_grad=True)
    sample = straight_through_categorical(logits, unimix=0.01,
                                          generator=torch.Generator().manual_seed(0))
    assert sample.shape == (6, 3, 5)
    detached = sample.detach()
    assert set(detached.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(detached.sum(-1), torch.ones(6, 3))
    (sample * torch.randn(6, 3, 5)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_straight_through_samples_follow_the_probabilities():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    sample = straight_through_categorical(logits, unimix=0.0,
                                          generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sample.detach().mean(0), torch.tensor([0.7, 0.2, 0.1]),
                               atol=0.015, rtol=0)


def test_unimix_probability_floor():
    unimix, K = 0.1, 4
    logits = torch.tensor([[50.0, -50.0, -50.0, -50.0]])
    probs = torch.softmax(unimix_logits(logits, unimix), -1)
    torch.testing.assert_close(probs[0, 1:], torch.full((3,), unimix / K))
    torch.testing.assert_close(probs[0, 0], torch.tensor(1 - unimix + unimix / K))
    assert (torch.softmax(unimix_logits(torch.randn(100, K) * 30, unimix), -1)
            >= unimix / K - 1e-6).all()
    assert unimix_logits(logits, 0.0) is logits


def test_gaussian_log_prob_and_kl_match_torch():
    g = torch.Generator().manual_seed(0)
    mean_a, mean_b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    std_a = torch.rand(5, 3, generator=g) + 0.2
    std_b = torch.rand(5, 3, generator=g) + 0.2
    value = torch.randn(5, 3, generator=g)
    a, b = Gaussian(mean_a, std_a), Gaussian(mean_b, std_b)
    ta = D.Independent(D.Normal(mean_a, std_a), 1)
    tb = D.Independent(D.Normal(mean_b, std_b), 1)
    torch.testing.assert_close(a.log_prob(value), ta.log_prob(value))
    torch.testing.assert_close(a.kl(b), D.kl_divergence(ta, tb))
    torch.testing.assert_close(a.kl(a), torch.zeros(5), atol=1e-6, rtol=0)


def test_gaussian_from_logvar_and_rsample():
    mean, logvar = torch.full((20000, 2), 1.5), torch.full((20000, 2), math.log(4.0))
    dist = Gaussian.from_mean_logvar(mean, logvar)
    torch.testing.assert_close(dist.std, torch.full((20000, 2), 2.0))
    sample = dist.rsample(torch.Generator().manual_seed(0))
    assert abs(float(sample.mean()) - 1.5) < 0.05 and abs(float(sample.std()) - 2.0) < 0.05
    mean.requires_grad_(True)
    Gaussian(mean, torch.ones_like(mean)).rsample().sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones_like(mean))


def test_gaussian_nll_matches_torch_up_to_the_constant():
    mean, logvar, target = torch.randn(7), torch.randn(7), torch.randn(7)
    expected = -D.Normal(mean, torch.exp(0.5 * logvar)).log_prob(target) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(gaussian_nll(mean, logvar, target), expected)


def test_soft_bound_logvar_stays_within_bounds():
    low, high = torch.tensor(-4.0), torch.tensor(0.5)
    logvar = torch.linspace(-100, 100, 2001)
    bounded = soft_bound_logvar(logvar, low, high)
    # The PETS formula (Chua et al. 2018; mbrl-lib) can overshoot the upper bound by the softplus
    # tail of the lower one, log(1 + exp(low - high)): 0.011 for a bound gap of 4.5.
    overshoot = float(torch.log1p(torch.exp(low - high)))
    assert (bounded >= low).all()  # softplus underflows to exactly low far below it
    assert float(bounded.max()) <= float(high) + overshoot + 1e-6
    assert float(bounded.max()) > float(high)  # saturates at the (soft) upper bound
    assert (bounded[1:] >= bounded[:-1]).all()  # monotone
    middle = torch.tensor([-1.5])
    assert abs(float(soft_bound_logvar(middle, low, high)) - (-1.5)) < 0.2  # ~identity inside
