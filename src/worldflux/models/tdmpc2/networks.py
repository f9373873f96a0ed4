"""TD-MPC2 building blocks (official ``common/layers.py`` and ``common/init.py``).

* :class:`NormedLinear`: ``Linear -> (Dropout) -> LayerNorm -> activation`` (Mish by default).
* :func:`mlp`: hidden NormedLinear layers, then a plain ``Linear`` output layer, or a
  NormedLinear with SimNorm as its activation for the encoder and dynamics.
* :class:`QEnsemble`: ``num_q`` Q-functions evaluated in one batched matmul per layer, with
  target parameters (Polyak-averaged buffers) and a detached view for the policy loss.
* :class:`PixelEncoder`: random shift, 4 convolutions with ReLU, flatten, SimNorm (64x64 input).

Initialisation (official ``init.weight_init``): every ``Linear`` weight ``trunc_normal(std=0.02)``,
biases 0; the output layers of the reward head and of every Q-function start at zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.nn.latent import SimNorm


def mish(x: Tensor) -> Tensor:
    """Mish ``x * tanh(softplus(x))`` (TD-MPC2's activation).

    Without autograd (planning), computed as ``x * n / (n + 2)`` with ``n = e^x (e^x + 2)``,
    the same function in exponentials only, which runs about twice as fast on CPUs as
    ``F.mish``; with autograd, ``F.mish`` and its fused backward.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return F.mish(x)
    e = torch.exp(x.clamp(max=20.0))  # beyond 20, n / (n + 2) == 1 in float32
    n = e * (e + 2)
    return x * (n / (n + 2))


class Mish(nn.Module):
    """Module form of :func:`mish`."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


def weight_init(module: nn.Module) -> None:
    """TD-MPC2 initialisation of ``Linear`` layers (official ``common/init.py``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class NormedLinear(nn.Linear):
    """``[..., in] -> [..., out]``: Linear, Dropout (when ``dropout > 0``), LayerNorm, activation."""

    def __init__(self, in_features: int, out_features: int, *, dropout: float = 0.0,
                 act: nn.Module | None = None) -> None:
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else Mish()
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.act(self.ln(x))


def mlp(in_dim: int, hidden: list[int], out_dim: int, *, act: nn.Module | None = None,
        dropout: float = 0.0) -> nn.Sequential:
    """TD-MPC2 MLP ``[..., in_dim] -> [..., out_dim]`` (official ``layers.mlp``).

    Hidden layers are NormedLinear (Mish); only the first has ``dropout``. The output layer is a
    plain Linear, or a NormedLinear whose activation is ``act`` (SimNorm) when given.
    """
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = [NormedLinear(dims[i], dims[i + 1], dropout=dropout * (i == 0))
                               for i in range(len(dims) - 2)]
    layers.append(NormedLinear(dims[-2], dims[-1], act=act) if act is not None
                  else nn.Linear(dims[-2], dims[-1]))
    net = nn.Sequential(*layers)
    net.apply(weight_init)
    return net


class ShiftAug(nn.Module):
    """Random shift of images ``[N, C, H, W]`` (any dtype): replicate-pad by ``pad`` pixels, crop
    back at a random integer offset per image (official ``layers.ShiftAug``, from DrQ-v2).

    Integer shifts make the official bilinear ``grid_sample`` an exact crop, computed here as one
    gather: with replicate padding, output pixel ``(i, j)`` at offset ``(r, c)`` is the input
    pixel ``(clamp(i + r - pad), clamp(j + c - pad))``. No host synchronisation (CUDA graphs
    capture it); on uint8 frames it moves a quarter of the bytes of float32 ones.
    """

    def __init__(self, pad: int = 3) -> None:
        super().__init__()
        self.pad = int(pad)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.pad == 0:
            return x
        n, c, h, w = x.shape
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator,
                                device=x.device)
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device) - self.pad).clamp_(0, h - 1)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device) - self.pad).clamp_(0, w - 1)
        index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w)
        out = torch.gather(x.reshape(n, c, h * w), 2, index.expand(n, c, h * w))
        return out.view(n, c, h, w)


class PixelEncoder(nn.Module):
    """``uint8 [N, C, 64, 64] -> [N, num_channels * 16]`` on the simplex groups of SimNorm.

    Official ``layers.conv``: pixels scaled to ``[-0.5, 0.5]``, conv 7/2, 5/2, 3/2, 3/1 with
    ``num_channels`` channels and ReLU between them, flatten, SimNorm. The random shift is
    applied when ``augment`` is true (training batches).
    """

    def __init__(self, in_channels: int, num_channels: int, simnorm_dim: int,
                 shift_pad: int) -> None:
        super().__init__()
        self.shift = ShiftAug(shift_pad)
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, num_channels, 7, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 5, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, stride=1), nn.Flatten())
        self.simnorm = SimNorm(simnorm_dim)

    def forward(self, obs: Tensor, augment: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        if augment:  # on the stored frames (uint8): the shift only moves pixels
            obs = self.shift(obs, generator)
        # Channels-last input (reordered while still uint8): oneDNN's convolutions run faster on
        # it than on NCHW (the 5M update 1.17x, 1M 1.05x here), for the same values up to
        # rounding; the flatten is logical. ``copy=True``: the in-place scaling never touches
        # the caller's tensor.
        x = obs.contiguous(memory_format=torch.channels_last).to(torch.float32, copy=True)
        return self.simnorm(self.convs(x.div_(255.0).sub_(0.5)))


class StateEncoder(nn.Module):
    """``[N, D] -> [N, latent_dim]``: NormedLinear hidden layers, then Linear-LayerNorm-SimNorm."""

    def __init__(self, obs_dim: int, enc_dim: int, num_enc_layers: int, latent_dim: int,
                 simnorm_dim: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, max(num_enc_layers - 1, 1) * [enc_dim], latent_dim,
                       act=SimNorm(simnorm_dim))

    def forward(self, obs: Tensor, augment: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        return self.net(obs.float())


class QEnsemble(nn.Module):
    """``num_q`` Q-functions ``[..., in] -> [E, ..., num_bins]`` as one batched network.

    Each member is the official ``mlp(in, [mlp_dim, mlp_dim], num_bins, dropout=0.01)``: a
    NormedLinear with dropout before its LayerNorm, a NormedLinear, and a zero-initialised
    Linear output. Parameters are stacked over members (``w0 [E, in, H]`` ...). The target
    network is the same layout in buffers (``target_w0`` ...), updated by :meth:`soft_update`.

    ``forward(x, heads=idx)`` evaluates only the members ``idx`` (e.g. the two drawn for a
    target); ``params="target"`` uses the target buffers, ``params="detached"`` the online
    parameters cut from the graph (the policy's Q, official ``_detach_Qs``).
    """

    NAMES = ("w0", "b0", "g0", "c0", "w1", "b1", "g1", "c1", "w2", "b2")

    def __init__(self, num_q: int, in_dim: int, hidden: int, out_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.num_q, self.dropout = num_q, float(dropout)
        shapes = {"w0": (in_dim, hidden), "w1": (hidden, hidden), "w2": (hidden, out_dim)}
        for layer, (fan_in, fan_out) in enumerate(shapes.values()):
            weight = torch.empty(num_q, fan_in, fan_out)
            if layer < 2:
                nn.init.trunc_normal_(weight, std=0.02)
            else:
                nn.init.zeros_(weight)  # official: zero_ on the Q output layers
            setattr(self, f"w{layer}", nn.Parameter(weight))
            setattr(self, f"b{layer}", nn.Parameter(torch.zeros(num_q, 1, fan_out)))
            if layer < 2:  # LayerNorm gain and shift of the hidden layers
                setattr(self, f"g{layer}", nn.Parameter(torch.ones(num_q, 1, fan_out)))
                setattr(self, f"c{layer}", nn.Parameter(torch.zeros(num_q, 1, fan_out)))
        for name in self.NAMES:
            self.register_buffer(f"target_{name}", getattr(self, name).detach().clone())

    def _params(self, kind: str) -> list[Tensor]:
        if kind == "target":
            return [getattr(self, f"target_{n}") for n in self.NAMES]
        params = [getattr(self, n) for n in self.NAMES]
        return [p.detach() for p in params] if kind == "detached" else params

    def forward(self, x: Tensor, *, heads: Tensor | None = None, params: str = "online") -> Tensor:
        """``x [..., in] -> logits [E', ..., out]`` with ``E' = len(heads)`` or ``num_q``."""
        w0, b0, g0, c0, w1, b1, g1, c1, w2, b2 = self._params(params)
        if heads is not None:
            w0, b0, g0, c0, w1, b1, g1, c1, w2, b2 = (
                p[heads] for p in (w0, b0, g0, c0, w1, b1, g1, c1, w2, b2))
        lead = x.shape[:-1]
        h = torch.matmul(x.reshape(1, -1, x.shape[-1]), w0) + b0  # [E, N, H]
        if self.dropout and self.training and params != "target":
            h = F.dropout(h, self.dropout, training=True)
        h = mish(F.layer_norm(h, h.shape[-1:]) * g0 + c0)
        h = mish(F.layer_norm(torch.baddbmm(b1, h, w1), h.shape[-1:]) * g1 + c1)
        out = torch.baddbmm(b2, h, w2)
        return out.reshape(out.shape[0], *lead, out.shape[-1])

    @torch.no_grad()
    def soft_update(self, tau: float) -> None:
        """Polyak averaging ``target <- (1 - tau) * target + tau * online`` (official
        ``soft_update_target_Q``: ``lerp_(online, tau)``)."""
        for name in self.NAMES:
            getattr(self, f"target_{name}").lerp_(getattr(self, name).detach(), tau)


def squash(mean: Tensor, pre_tanh: Tensor, log_prob: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Tanh squashing with its log-density correction (official ``math.squash``):
    ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2 + 1e-6)`` for ``a = tanh(u)``."""
    action = torch.tanh(pre_tanh)
    correction = torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1)
    return torch.tanh(mean), action, log_prob - correction


HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
