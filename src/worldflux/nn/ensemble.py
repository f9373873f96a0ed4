"""Batched ensembles of MLPs: one ``baddbmm`` per layer for all members, never a Python loop."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied at once: ``[E, N, in] -> [E, N, out]``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        # Truncated normal as in the PETS reference models; each member draws its own weights.
        nn.init.trunc_normal_(self.weight, std=bound, a=-2 * bound, b=2 * bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        e, i, o = self.weight.shape
        return f"ensemble_size={e}, in_features={i}, out_features={o}"


def activation(name: str) -> nn.Module:
    """``"silu"`` (swish, PETS), ``"relu"``, ``"elu"``, ``"mish"`` (TD-MPC2), ``"tanh"``."""
    table = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU,
             "mish": nn.Mish, "tanh": nn.Tanh}
    if name not in table:
        from worldflux.core.errors import ConfigError, close_matches

        raise ConfigError(f"activation: got {name!r}, expected one of {sorted(table)}."
                          f"{close_matches(name, table)}")
    return table[name]()


class EnsembleMLP(nn.Module):
    """``E`` MLPs with ``num_layers`` hidden layers of ``hidden_size``: ``[E, N, in] -> [E, N, out]``.

    :meth:`fast_weights` returns the weights cast to a dtype once, so a planner can run many
    forward passes in bfloat16 through :meth:`forward_with` without re-casting per call.
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int,
                 hidden_size: int, num_layers: int, activation_name: str = "silu") -> None:
        super().__init__()
        sizes = [in_features] + [hidden_size] * num_layers + [out_features]
        self.layers = nn.ModuleList(
            EnsembleLinear(ensemble_size, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.act = activation(activation_name)

    @property
    def ensemble_size(self) -> int:
        return self.layers[0].weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x

    def fast_weights(self, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
        """Detached ``(weight [E, in, out], bias [E, 1, out])`` per layer, cast to ``dtype``."""
        return [(layer.weight.detach().to(dtype), layer.bias.detach().to(dtype))
                for layer in self.layers]

    def forward_with(self, weights: list[tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
        """Forward ``[E, N, in] -> [E, N, out]`` with weights from :meth:`fast_weights`."""
        x = x.to(weights[0][0].dtype)
        last = len(weights) - 1
        for i, (weight, bias) in enumerate(weights):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.act(x)
        return x
