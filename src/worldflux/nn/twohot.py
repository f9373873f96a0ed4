"""Discrete regression over symlog-spaced bins (DreamerV3, used by TD-MPC2's reward and Q heads).

A scalar ``x`` is squashed with ``symlog``, clipped to ``[vmin, vmax]`` and spread over the two
nearest of ``num_bins`` bins placed uniformly on ``[vmin, vmax]`` (a "two-hot" vector whose
weights interpolate linearly and sum to 1). A head predicts ``num_bins`` logits; its scalar is
``symexp`` of the softmax expectation over the bin centres; its loss is the cross-entropy against
the two-hot target (:func:`soft_ce`). TD-MPC2 defaults (official ``config.yaml``): ``num_bins``
101, ``vmin`` -10, ``vmax`` +10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bin_centres", "soft_ce", "symexp", "symlog", "two_hot", "two_hot_cross_entropy",
           "two_hot_inv"]


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``, elementwise."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``, elementwise."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def bin_centres(num_bins: int, vmin: float, vmax: float, *, device=None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``num_bins`` bin centres ``[num_bins]`` in symlog space, uniform on ``[vmin, vmax]``."""
    return torch.linspace(vmin, vmax, num_bins, device=device, dtype=dtype)


def two_hot(x: Tensor, num_bins: int, vmin: float, vmax: float) -> Tensor:
    """Two-hot encoding ``[...] -> [..., num_bins]`` of ``symlog(x)`` clipped to ``[vmin, vmax]``.

    With bin width ``w = (vmax - vmin) / (num_bins - 1)``, ``s = symlog(x)`` falls between bins
    ``k = floor((s - vmin) / w)`` and ``k + 1``; they get weights ``1 - f`` and ``f`` where
    ``f = (s - vmin) / w - k``. Values beyond the range land on the end bins.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins: got {num_bins}, expected >= 2")
    width = (vmax - vmin) / (num_bins - 1)
    position = (symlog(x).clamp(vmin, vmax) - vmin) / width
    low = torch.floor(position).clamp(0, num_bins - 1)
    frac = (position - low).unsqueeze(-1)
    low = low.long().unsqueeze(-1)
    high = (low + 1).clamp(max=num_bins - 1)
    out = torch.zeros(*x.shape, num_bins, device=x.device, dtype=x.dtype)
    out = out.scatter(-1, low, 1 - frac)
    # scatter_add: at the top bin low == high, and the two weights (1 and 0) must add up.
    return out.scatter_add(-1, high, frac)


def two_hot_inv(logits: Tensor, vmin: float, vmax: float) -> Tensor:
    """Decode logits ``[..., num_bins] -> [...]``: ``symexp(sum_k softmax(logits)_k * bin_k)``."""
    centres = bin_centres(logits.shape[-1], vmin, vmax, device=logits.device, dtype=logits.dtype)
    probs = F.softmax(logits, -1)
    if probs.requires_grad:
        return symexp((probs * centres).sum(-1))
    return symexp(probs.mul_(centres).sum(-1))  # in place: one [..., num_bins] tensor less


def soft_ce(logits: Tensor, target: Tensor, vmin: float, vmax: float) -> Tensor:
    """Cross-entropy of logits ``[..., num_bins]`` against ``two_hot(target [...])`` -> ``[...]``."""
    soft = two_hot(target, logits.shape[-1], vmin, vmax)
    return -(soft * F.log_softmax(logits, -1)).sum(-1)


def two_hot_cross_entropy(logits: Tensor, targets: Sequence[Tensor], scales: Sequence[float],
                          vmin: float, vmax: float) -> Tensor:
    """``sum_j scales[j] * soft_ce(logits, targets[j])`` -> ``[...]``, in one pass over the bins.

    The same value as the sum of :func:`soft_ce` terms (up to rounding), without building the
    ``[..., num_bins]`` two-hot tensors: the forward pass reads only the two bins each target
    falls between, and the gradient ``softmax(logits) * sum(w) - w`` (``w`` the scaled two-hot
    weights) is written into one tensor. No gradient flows to the targets.
    """
    num_bins = logits.shape[-1]
    index, weight = [], []
    for target, scale in zip(targets, scales, strict=True):
        low, high, frac = _two_hot_parts(target.detach(), num_bins, vmin, vmax)
        index += [low, high]
        weight += [scale * (1 - frac), scale * frac]
    return _TwoHotCE.apply(logits, torch.stack(index, -1), torch.stack(weight, -1))


class _TwoHotCE(torch.autograd.Function):
    """``-(log_softmax(logits).gather(index) * weight).sum(-1)`` with a one-tensor backward."""

    @staticmethod
    def forward(ctx, logits: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits, -1)
        ctx.save_for_backward(log_probs, index, weight)
        return -(log_probs.gather(-1, index) * weight).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_probs, index, weight = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        out = log_probs.exp().mul_(g * weight.sum(-1, keepdim=True))
        return out.scatter_add_(-1, index, -(g * weight)), None, None


def _two_hot_parts(x: Tensor, num_bins: int, vmin: float, vmax: float
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Bins ``low``, ``high`` (long) of ``x`` and the weight ``frac`` of ``high`` (see
    :func:`two_hot`)."""
    width = (vmax - vmin) / (num_bins - 1)
    position = (symlog(x).clamp(vmin, vmax) - vmin) / width
    low = torch.floor(position).clamp(0, num_bins - 1)
    frac = position - low
    low = low.long()
    return low, (low + 1).clamp(max=num_bins - 1), frac
