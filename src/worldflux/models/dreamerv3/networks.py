"""Building blocks of DreamerV3: normalised MLPs, the block-diagonal GRU core, categorical
latents with uniform mixing, free-bits KL, and the vector and 64x64 image encoders/decoders.

Sources: Hafner et al. 2023 (arXiv:2301.04104, paper v1) and the reference release
``danijar/dreamerv3`` (``nets.py``); each block names what it follows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.nn.twohot import symlog

__all__ = [
    "BlockLinear", "ConvDecoder", "ConvEncoder", "Linear", "MLP", "RSSMCore", "VectorDecoder",
    "VectorEncoder", "categorical_kl", "free_bits", "linear", "log_softmax", "sample_one_hot",
    "softmax", "straight_through", "straight_through_sample", "trunc_normal_in_",
    "unimix_logits", "unimix_probs",
]

_SMALL = 16
"""Below this many classes :func:`softmax` and :func:`log_softmax` reduce over a transposed view:
PyTorch's CPU kernels for a softmax over a short last dimension are 10-20x slower (per row
overhead) than over a non-last one, for the same values (they differ by rounding only)."""


def softmax(x: Tensor) -> Tensor:
    """``F.softmax(x, -1)``, fast for few classes (the 4-32 classes of the latents, actions)."""
    if x.dim() >= 2 and x.shape[-1] < _SMALL:
        return F.softmax(x.transpose(-1, -2), -2).transpose(-1, -2)
    return F.softmax(x, -1)


def log_softmax(x: Tensor) -> Tensor:
    """``F.log_softmax(x, -1)``, fast for few classes (see :func:`softmax`)."""
    if x.dim() >= 2 and x.shape[-1] < _SMALL:
        return F.log_softmax(x.transpose(-1, -2), -2).transpose(-1, -2)
    return F.log_softmax(x, -1)


def _tanh(x: Tensor) -> Tensor:
    """``tanh(x)`` as ``2 sigmoid(2x) - 1`` (equal up to rounding, ~2e-7 absolute): this CPU build's
    ``torch.tanh`` is about 10x slower than ``torch.sigmoid`` on large tensors."""
    return 2.0 * torch.sigmoid(2.0 * x) - 1.0


def trunc_normal_in_(weight: Tensor, fan_in: int, scale: float = 1.0) -> Tensor:
    """Truncated normal with variance ``scale / fan_in`` (reference ``winit: trunc_normal_in``).

    The standard deviation is corrected for truncation at two standard deviations (0.8796).
    """
    std = math.sqrt(scale / max(fan_in, 1)) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


_ONEDNN_MIN_ROWS = 128
"""Inputs with at least this many rows take oneDNN's kernel in :func:`linear`; below it the
default BLAS call is as fast (a 16-row step of the observe loop)."""
_onednn_ok: bool | None = None


def _onednn_available() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` exists here and gives ``F.linear``'s
    values (probed once)."""
    global _onednn_ok
    if _onednn_ok is None:
        try:
            x = torch.arange(12.0).reshape(4, 3).sin()   # not torch.randn: leaves the RNG alone
            w, b = torch.arange(6.0).reshape(2, 3).cos(), torch.tensor([0.5, -1.0])
            y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
            _onednn_ok = bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            _onednn_ok = False
    return _onednn_ok


class _OneDNNLinear(torch.autograd.Function):
    """``x @ w.T + b`` for ``x [M, I]`` through oneDNN (forward and input gradient); the weight
    gradient ``g.T @ x`` stays with the default BLAS (its reduction runs over the M rows)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.mkldnn._linear_pointwise(grad, weight.t().contiguous(), None,
                                                        "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``, through oneDNN's fp32 kernel for large float32 CPU inputs.

    The same products in float32 (summed in another order, so equal up to rounding). On this
    project's AMD EPYC CPU, oneDNN's kernel runs at about 200 GFLOP/s on one thread where the
    default BLAS (MKL) reaches 85-95, so the heads over the 15,360 imagined states take a half
    to a third of the time. Anything else (autocast, other dtypes or devices, few rows, builds
    without oneDNN) goes to ``F.linear``.
    """
    if _onednn_rows(x) and weight.dtype == torch.float32:
        lead = x.shape[:-1]
        out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight.contiguous(),
                                  bias)
        return out.reshape(*lead, out.shape[-1])
    return F.linear(x, weight, bias)


def _onednn_rows(x: Tensor) -> bool:
    """Whether :func:`linear` sends ``x`` to oneDNN (float32 on the CPU, 128+ rows, no autocast,
    oneDNN present)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() >= 2
            and x.numel() >= _ONEDNN_MIN_ROWS * x.shape[-1]
            and not torch.is_autocast_enabled("cpu") and _onednn_available())


class Linear(nn.Linear):
    """``nn.Linear`` whose product is :func:`linear` while ``fast`` (the same parameters and
    state dict; ``fast = False`` gives ``F.linear`` itself)."""

    fast: bool = True

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias) if self.fast else F.linear(x, self.weight,
                                                                            self.bias)


def _linear(in_features: int, out_features: int, bias: bool = True,
            scale: float = 1.0) -> nn.Linear:
    layer = Linear(in_features, out_features, bias=bias)
    if scale == 0.0:  # reference outscale 0: zero output layers (reward and critic heads)
        nn.init.zeros_(layer.weight)
    else:
        trunc_normal_in_(layer.weight, in_features, scale)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """``layers`` x (Linear -> LayerNorm -> SiLU) of width ``units``: ``[..., in] -> [..., units]``
    (``[..., in]`` unchanged when ``layers`` is 0). Paper v1: layer norm and SiLU everywhere."""

    def __init__(self, in_features: int, units: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            mods += [_linear(width, units, bias=False), nn.LayerNorm(units, eps=1e-3), nn.SiLU()]
            width = units
        self.net = nn.Sequential(*mods)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BlockLinear(nn.Module):
    """Block-diagonal linear map ``[N, G * I] -> [N, G * O]`` (reference ``BlockLinear``): ``G``
    independent ``I x O`` matrices, ``G`` times fewer weights than a dense layer."""

    def __init__(self, in_features: int, out_features: int, blocks: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, in_features // blocks,
                                               out_features // blocks))
        self.bias = nn.Parameter(torch.zeros(out_features))
        trunc_normal_in_(self.weight, in_features // blocks)

    def forward(self, x: Tensor) -> Tensor:
        G = self.blocks
        lead = x.shape[:-1]
        x = x.reshape(-1, G, x.shape[-1] // G).transpose(0, 1)           # [G, N, I]
        out = torch.baddbmm(self.bias.reshape(G, 1, -1), x, self.weight)  # [G, N, O]
        return out.transpose(0, 1).reshape(*lead, -1)


class RSSMCore(nn.Module):
    """Recurrent deterministic step ``(deter [N, D], stoch [N, S*K], action [N, A]) -> deter'``.

    Reference ``rssm._core``: ``deter``, ``stoch`` and ``action`` are each embedded to ``hidden``
    (Linear -> LayerNorm -> SiLU); the embedding is appended to every block of ``deter``, passed
    through ``dyn_layers`` block-linear layers (LayerNorm, SiLU) and a block-linear GRU:
    ``r = sigmoid(.)``, ``c = tanh(r * .)``, ``u = sigmoid(. - 1)``,
    ``deter' = u * c + (1 - u) * deter`` (the -1 bias favours keeping the state early on).
    """

    def __init__(self, deter: int, stoch_flat: int, action_dim: int, hidden: int, blocks: int,
                 dyn_layers: int) -> None:
        super().__init__()
        self.deter, self.blocks, self.hidden = deter, blocks, hidden
        self.in_deter = MLP(deter, hidden, 1)
        self.in_stoch = MLP(stoch_flat, hidden, 1)
        self.in_action = MLP(action_dim, hidden, 1)
        width = blocks * (deter // blocks + 3 * hidden)
        layers: list[nn.Module] = []
        for _ in range(dyn_layers):
            layers += [BlockLinear(width, deter, blocks), nn.LayerNorm(deter, eps=1e-3), nn.SiLU()]
            width = deter
        self.hidden_layers = nn.Sequential(*layers)
        self.gates = BlockLinear(width, 3 * deter, blocks)
        self.fast = True
        """Products of many rows through oneDNN (see :func:`linear`); False: BLAS only."""

    def forward(self, deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
        return self.prepare()(deter, stoch, action)

    def prepare(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """This step as a function, with the weight rearrangement it needs done once: call it
        before a loop over time steps and use the function inside (``forward`` does both)."""
        G, D = self.blocks, self.deter
        d = D // G
        first = self.hidden_layers[0] if len(self.hidden_layers) else self.gates
        # The first block-linear layer reads ``concat(deter_g, x)`` in every block g. Rather than
        # copying x into each block, split its weights: x times the x-rows of every block (one
        # dense product) plus block g's own rows of ``deter`` (a block-diagonal product); the
        # same multiply-adds, summed in another order.
        w = first.weight                                                    # [G, d + 3H, O]
        width = w.shape[-1]
        w_x = w[:, d:].transpose(0, 1).reshape(-1, G * width)              # [3H, G * O]
        w_d = w[:, :d]                                                      # [G, d, O]
        rest = self.hidden_layers[1:] if len(self.hidden_layers) else None  # LayerNorm, SiLU..
        gates = self.gates
        bias = gates.bias.view(G, 1, 3 * d) if rest is not None else None
        # For many rows (imagination: 1,024 starts) the products go through oneDNN's kernel
        # (see :func:`linear`) block by block, in row-major layout; the weights are transposed
        # to its [out, in] format here, once per loop.
        fast = self.fast and _onednn_available() and w.dtype == torch.float32
        if fast:
            w_x_t = w_x.t().contiguous()                                    # [G * O, 3H]
            w_d_t = [w_d[k].t().contiguous() for k in range(G)]             # [O, d]
            w_g_t = ([gates.weight[k].t().contiguous() for k in range(G)]   # [3d, I]
                     if rest is not None else None)
            b_g = gates.bias.view(G, 3 * d) if rest is not None else None

        def step(deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
            lead = deter.shape[:-1]
            deter2 = deter.reshape(-1, D)
            N = deter2.shape[0]
            x = torch.cat([self.in_deter(deter2), self.in_stoch(stoch.reshape(N, -1)),
                           self.in_action(action.reshape(N, -1))], -1)      # [N, 3H]
            if fast and _onednn_rows(x):
                h = _OneDNNLinear.apply(x, w_x_t, first.bias)               # [N, G * O]
                h = h + torch.cat([_OneDNNLinear.apply(deter2[:, k * d:(k + 1) * d], w_d_t[k],
                                                       None) for k in range(G)], 1)
                if rest is not None:
                    h = rest(h)
                    i = h.shape[1] // G
                    g = torch.cat([_OneDNNLinear.apply(h[:, k * i:(k + 1) * i], w_g_t[k], b_g[k])
                                   for k in range(G)], 1).view(N, G, 3 * d)
                else:
                    g = h.view(N, G, 3 * d)
                # ``g`` is not needed after the gate math, which may overwrite it in place.
                out = _gru(g[..., :d], g[..., d:2 * d], g[..., 2 * d:],
                           deter2.reshape(N, G, d), fresh=True)             # [N, G, d]
                return out.reshape(*lead, D)
            deter_g = deter2.reshape(N, G, d).transpose(0, 1)               # [G, N, d]
            h = torch.addmm(first.bias, x, w_x).view(N, G, width)
            h = (h + torch.bmm(deter_g, w_d).transpose(0, 1)).reshape(N, G * width)
            if rest is not None:
                h = rest(h)
                g = torch.baddbmm(bias, h.view(N, G, -1).transpose(0, 1), gates.weight)
            else:
                g = h.view(N, G, 3 * d).transpose(0, 1)                    # [G, N, 3d]
            # The GRU in block layout (per block: reset, candidate, update), transposed back
            # once. Few rows (the observe loop's 16): fewer, smaller operations win.
            reset = torch.sigmoid(g[..., :d])
            cand = torch.tanh(reset * g[..., d:2 * d])
            update = torch.sigmoid(g[..., 2 * d:] - 1)
            out = update * cand + (1 - update) * deter_g                    # [G, N, d]
            return out.transpose(0, 1).reshape(*lead, D)
        return step


def _gru(r: Tensor, c: Tensor, u: Tensor, deter: Tensor, fresh: bool) -> Tensor:
    """``u' * tanh(sigmoid(r) * c) + (1 - u') * deter`` with ``u' = sigmoid(u - 1)``.

    Without a graph and with ``r``, ``c``, ``u`` free to overwrite (``fresh``), in place (the same
    operations in the same order, so the same values; fewer passes over fresh memory).
    """
    if fresh and not torch.is_grad_enabled():
        reset = r.sigmoid_()
        cand = c.mul_(reset).mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)   # _tanh in place
        update = u.sub_(1).sigmoid_()
        keep = torch.sub(1, update).mul_(deter)
        return update.mul_(cand).add_(keep)
    reset = torch.sigmoid(r)
    cand = _tanh(reset * c)
    update = torch.sigmoid(u - 1)
    return update * cand + (1 - update) * deter


def unimix_logits(logits: Tensor, unimix: float) -> Tensor:
    """Logits ``[..., K]`` of ``(1 - unimix) * softmax(logits) + unimix / K`` (paper: 1%).

    Mixing in a uniform distribution keeps every probability above ``unimix / K``, which bounds
    the KL terms and the log-probabilities (paper, Section "Robust predictors").
    """
    if unimix <= 0:
        return logits
    return torch.log(unimix_probs(logits, unimix))


def unimix_probs(logits: Tensor, mix: float) -> Tensor:
    """The probabilities ``(1 - mix) * softmax(logits) + mix / K`` ``[..., K]`` whose log
    :func:`unimix_logits` returns (``softmax`` of those logits gives them back up to rounding)."""
    probs = softmax(logits)
    if mix <= 0:
        return probs
    return (1 - mix) * probs + mix / logits.shape[-1]


def straight_through_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One-hot sample ``[..., K]`` of ``Categorical(logits)`` with straight-through gradients.

    ``sample + probs - sg(probs)``: the forward value is the one-hot sample, the gradient that of
    the probabilities (paper, following DreamerV2).
    """
    return straight_through(softmax(logits), generator)


def straight_through(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """:func:`straight_through_sample` from the probabilities ``[..., K]`` (differentiable)."""
    one_hot = sample_one_hot(probs.detach(), generator)
    if not probs.requires_grad:
        return one_hot
    return one_hot + probs - probs.detach()


def sample_one_hot(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One-hot samples ``[..., K]`` of categoricals with probabilities ``probs [..., K]``.

    Inverse-CDF sampling (one uniform per distribution): the index is the number of cumulative
    probabilities below ``u``; several times faster on CPUs than ``torch.multinomial`` for many
    small distributions.
    """
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
    K = probs.shape[-1]
    cdf = probs.cumsum(-1)
    index = (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1, keepdim=True).clamp_(max=K - 1)
    return (index == torch.arange(K, device=probs.device)).to(probs.dtype)  # one-hot


def categorical_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """``KL(p || q)`` of independent categoricals ``[..., S, K]`` summed over ``S`` -> ``[...]``."""
    log_p = log_softmax(logits_p)
    log_q = log_softmax(logits_q)
    return (log_p.exp() * (log_p - log_q)).sum((-2, -1))


def free_bits(kl: Tensor, free: float) -> Tensor:
    """``max(kl, free)`` elementwise: no gradient while the KL is below ``free`` nats (paper: 1).

    Applied to the KL of each time step after summing over the latent variables, as in the paper
    ("free bits ... clip the dynamics and representation losses below the value of 1 nat").
    """
    return torch.clamp(kl, min=free)


class VectorEncoder(nn.Module):
    """``obs [N, D] -> embed [N, units]``: symlog inputs, then ``layers`` normalised MLP layers
    (paper: symlog on vector inputs; reference ``enc.simple``)."""

    def __init__(self, obs_dim: int, units: int, layers: int) -> None:
        super().__init__()
        self.mlp = MLP(obs_dim, units, layers)
        self.out_features = self.mlp.out_features

    def forward(self, obs: Tensor) -> Tensor:
        return self.mlp(symlog(obs.float()))


class VectorDecoder(nn.Module):
    """``feat [N, F] -> symlog(obs) prediction [N, D]`` (trained with the symlog MSE)."""

    def __init__(self, feat: int, obs_dim: int, units: int, layers: int) -> None:
        super().__init__()
        self.mlp = MLP(feat, units, layers)
        self.out = _linear(self.mlp.out_features, obs_dim)

    def forward(self, feat: Tensor) -> Tensor:
        return self.out(self.mlp(feat))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of ``[N, C, H, W]`` at each pixel (reference conv norm).

    Computed in float32 on a contiguous channels-last copy and cast back to the input's dtype,
    as the reference's ``Norm`` computes in float32. Under CPU bf16 autocast this is also about
    2x faster than LayerNorm's bf16 kernel on the permuted view, whose backward is slow for the
    few channels of the first stages (8 at 32x32 in ``size1m``: 0.6 s of a 3 s pixel update).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = self.norm(x.permute(0, 2, 3, 1)
                          .to(torch.promote_types(x.dtype, torch.float32)).contiguous())
        return y.to(x.dtype).permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    """``uint8 [N, C, S, S] -> embed [N, depth * mults[-1] * 16]``.

    Reference ``enc.simple`` (images): pixels scaled to ``[-0.5, 0.5]``; per stage a convolution
    of ``depth * mult`` channels (kernel 5, stride 1) and a 2x2 max-pool (or one stride-2
    convolution when ``strided``), channel LayerNorm and SiLU, down to 4x4; flattened.
    """

    def __init__(self, in_channels: int, depth: int, mults: tuple[int, ...], kernel: int,
                 strided: bool) -> None:
        super().__init__()
        self.strided = strided
        stages = []
        width = in_channels
        for mult in mults:
            out = depth * mult
            conv = nn.Conv2d(width, out, kernel, stride=2 if strided else 1, padding=kernel // 2,
                             bias=False)
            trunc_normal_in_(conv.weight, width * kernel * kernel)
            stages.append(nn.ModuleList([conv, ChannelNorm(out)]))
            width = out
        self.stages = nn.ModuleList(stages)
        self.out_features = width * 16

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.to(torch.float32, copy=True).div_(255.0).sub_(0.5)  # one new tensor, not three
        for conv, norm in self.stages:
            x = conv(x)
            if not self.strided:
                x = F.max_pool2d(x, 2)
            x = F.silu(norm(x))
        return x.flatten(1)


class ConvDecoder(nn.Module):
    """``feat [N, F] -> image [N, C, S, S]`` in ``[-0.5, 0.5]`` units (trained with the MSE).

    Reference ``dec.simple``: a linear layer to ``4 x 4 x depth * mults[-1]``, then per stage a
    2x nearest upsampling and a convolution (channel LayerNorm, SiLU), the last one to ``C``
    channels without normalisation (with ``strided``: 4x4 stride-2 transposed convolutions).
    """

    def __init__(self, feat: int, out_channels: int, depth: int, mults: tuple[int, ...],
                 kernel: int, strided: bool) -> None:
        super().__init__()
        self.strided = strided
        self.start = depth * mults[-1]
        self.linear = _linear(feat, 16 * self.start)
        widths = [depth * m for m in reversed(mults[:-1])] + [out_channels]
        convs, norms = [], []
        width = self.start
        for i, out in enumerate(widths):
            if strided:
                conv: nn.Module = nn.ConvTranspose2d(width, out, 4, stride=2, padding=1)
                trunc_normal_in_(conv.weight, width * 16)
            else:
                conv = nn.Conv2d(width, out, kernel, padding=kernel // 2)
                trunc_normal_in_(conv.weight, width * kernel * kernel)
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            norms.append(ChannelNorm(out) if i < len(widths) - 1 else nn.Identity())
            width = out
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)

    def forward(self, feat: Tensor) -> Tensor:
        x = self.linear(feat).reshape(feat.shape[0], self.start, 4, 4)
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if not self.strided:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x)
            if i < last:
                x = F.silu(norm(x))
        return x
