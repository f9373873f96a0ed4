"""Batched ensembles and the normaliser."""

from __future__ import annotations

import pytest
import torch

from worldflux.core.errors import ConfigError
from worldflux.nn import EnsembleLinear, EnsembleMLP, Normalizer, activation


def test_ensemble_linear_applies_each_member_separately():
    layer = EnsembleLinear(3, 4, 2)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, 4)
    out = layer(x)
    assert out.shape == (3, 5, 2)
    for e in range(3):
        torch.testing.assert_close(out[e], x[e] @ layer.weight[e] + layer.bias[e])


def test_members_differ():
    torch.manual_seed(0)
    mlp = EnsembleMLP(4, 3, 2, hidden_size=16, num_layers=2)
    x = torch.randn(1, 8, 3).expand(4, -1, -1)
    out = mlp(x)
    assert out.shape == (4, 8, 2)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j]), (i, j)
    assert len(mlp.layers) == 3 and mlp.ensemble_size == 4


def test_forward_with_float32_fast_weights_equals_forward():
    torch.manual_seed(1)
    mlp = EnsembleMLP(3, 5, 4, hidden_size=32, num_layers=3, activation_name="mish")
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.normal_()
    x = torch.randn(3, 7, 5)
    weights = mlp.fast_weights(torch.float32)
    assert all(not w.requires_grad and not b.requires_grad for w, b in weights)
    torch.testing.assert_close(mlp.forward_with(weights, x), mlp(x), rtol=0, atol=0)


def test_forward_with_bfloat16_is_close():
    torch.manual_seed(2)
    mlp = EnsembleMLP(2, 4, 3, hidden_size=16, num_layers=2)
    x = torch.randn(2, 6, 4)
    out = mlp.forward_with(mlp.fast_weights(torch.bfloat16), x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), mlp(x), atol=0.05, rtol=0.05)


def test_activation_names():
    assert isinstance(activation("swish"), torch.nn.SiLU)
    with pytest.raises(ConfigError, match="activation: got 'rleu'.*Did you mean: relu"):
        activation("rleu")


def test_normalizer_fit_round_trip():
    data = torch.randn(1000, 3) * torch.tensor([1.0, 5.0, 0.0]) + torch.tensor([2.0, -1.0, 3.0])
    norm = Normalizer(3)
    norm.fit(data)
    torch.testing.assert_close(norm.mean, data.mean(0))
    assert float(norm.std[2]) == pytest.approx(norm.min_std)  # constant feature: std floored, no division by 0
    z = norm.normalize(data)
    torch.testing.assert_close(z[:, :2].mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    torch.testing.assert_close(norm.denormalize(z), data, atol=1e-4, rtol=0)
    assert {"mean", "std"} <= set(norm.state_dict())
