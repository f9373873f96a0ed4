"""Policy networks of the fast RL core: the small interface and three architectures.

A policy is an ``nn.Module`` with::

    forward(obs [B, *obs_shape]) -> (action_out [B, A], value [B])

``action_out`` is the logits of a categorical distribution (discrete spaces, masked by the
learner) or the mean of a Gaussian (continuous spaces, whose state-independent ``log_std [A]``
parameter the policy owns). Write a custom architecture by subclassing :class:`Policy` and
implementing ``forward``; the base class holds the observation normaliser (applied by
:meth:`Policy.normalize`, exported with the policy) and ``log_std``. Register it in
:data:`POLICIES` to select it by name (``policy.name`` in the configs)::

    class MyPolicy(Policy):
        def __init__(self, obs_shape, action_dim, continuous, config):
            super().__init__(obs_shape, action_dim, continuous, config)
            self.net = nn.Linear(int(np.prod(obs_shape)), action_dim + 1)

        def forward(self, obs):
            out = self.net(self.normalize(obs).flatten(1))
            return out[:, :-1], out[:, -1]

    POLICIES["mine"] = MyPolicy

Provided: :class:`MLPPolicy` (any observation, flattened), :class:`Conv1dPolicy` (``[C, L]``)
and :class:`Conv2dPolicy` (``[C, H, W]``, e.g. board planes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from worldflux.core.errors import ConfigError, RegistryError, close_matches

__all__ = ["POLICIES", "Conv1dPolicy", "Conv2dPolicy", "MLPPolicy", "Policy", "PolicyConfig",
           "RunningNormalizer", "build_policy", "space_dims"]


@dataclass
class PolicyConfig:
    """Architecture of a policy network."""

    name: str = "mlp"
    """``mlp``, ``conv1d``, ``conv2d`` or a name added to :data:`POLICIES`."""

    hidden: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers (MLP layers; after the convolutions for conv policies)."""

    channels: tuple[int, ...] = (32, 32)
    """Convolution channels (conv policies): kernel 3, padding 1, stride 1."""

    activation: str = "tanh"
    """``tanh``, ``relu`` or ``silu``."""

    shared: bool = False
    """One trunk for the actor and the critic (False: two separate networks, the usual choice
    for PPO on small control tasks; CleanRL ppo.py)."""

    normalize_obs: bool = False
    """Standardise observations with running statistics (updated by the learner)."""

    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian (continuous actions)."""


_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}


class RunningNormalizer(nn.Module):
    """Running mean / variance of features ``[..., *shape]`` (parallel-variance update)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(1e-4))
        self.clip = clip

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        """Fold ``batch [B, *shape]`` into the statistics."""
        batch = batch.reshape(-1, *self.mean.shape).to(self.mean)
        mean, var, count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = mean - self.mean
        total = self.count + count
        self.mean += delta * count / total
        self.var.copy_((self.var * self.count + var * count + delta.square() * self.count * count
                        / total) / total)
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)


def space_dims(action_space: spaces.Space) -> tuple[int, bool]:
    """``(action dimension, continuous)`` of a Discrete or 1-D Box action space."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n), False
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return int(action_space.shape[0]), True
    raise ConfigError(f"action_space: got {action_space}, expected Discrete or a 1-D Box")


def _layer(inputs: int, outputs: int, gain: float) -> nn.Linear:
    # Orthogonal init, sqrt(2) for hidden layers, 0.01 for the policy head and 1 for the value
    # head (Engstrom et al. 2020, "Implementation matters"; CleanRL ppo.py).
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(inputs: int, hidden: tuple[int, ...], activation: str) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(inputs, width, math.sqrt(2)), _ACTIVATIONS[activation]()]
        inputs = width
    return nn.Sequential(*layers), inputs


class Policy(nn.Module):
    """Base class: holds the observation normaliser and (continuous) ``log_std``.

    Args:
        obs_shape: observation shape (without the batch dimension).
        action_dim: number of actions (discrete) or action dimension (continuous).
        continuous: Gaussian actions instead of categorical.
        config: the architecture settings.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, continuous: bool,
                 config: PolicyConfig) -> None:
        super().__init__()
        if config.activation not in _ACTIVATIONS:
            raise ConfigError(f"policy.activation: got {config.activation!r}, expected one of "
                              f"{sorted(_ACTIVATIONS)}")
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.action_dim = int(action_dim)
        self.continuous = bool(continuous)
        self.config = config
        self.obs_normalizer = RunningNormalizer(self.obs_shape) if config.normalize_obs else None
        if continuous:
            self.log_std = nn.Parameter(torch.full((self.action_dim,), config.init_log_std))

    def normalize(self, obs: Tensor) -> Tensor:
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class _Heads(nn.Module):
    """Actor and critic heads over features: shared trunk, or two trunks from the input."""

    def __init__(self, features: int, config: PolicyConfig, action_dim: int) -> None:
        super().__init__()
        self.shared = config.shared
        self.actor, width = _mlp(features, config.hidden, config.activation)
        self.critic = None if config.shared else _mlp(features, config.hidden, config.activation)[0]
        self.action_head = _layer(width, action_dim, 0.01)
        self.value_head = _layer(width, 1, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.actor(x)
        value_hidden = hidden if self.critic is None else self.critic(x)
        return self.action_head(hidden), self.value_head(value_hidden).squeeze(-1)


class MLPPolicy(Policy):
    """Observations flattened, then MLP heads (``config.hidden``)."""

    def __init__(self, obs_shape, action_dim, continuous, config) -> None:
        super().__init__(obs_shape, action_dim, continuous, config)
        self.heads = _Heads(int(np.prod(self.obs_shape)), config, action_dim)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.heads(self.normalize(obs).flatten(1))


class _ConvPolicy(Policy):
    conv: type[nn.Module]
    dims: int

    def __init__(self, obs_shape, action_dim, continuous, config) -> None:
        super().__init__(obs_shape, action_dim, continuous, config)
        if len(self.obs_shape) != self.dims + 1:
            raise ConfigError(f"policy.name={config.name}: got observations of shape "
                              f"{self.obs_shape}, expected {self.dims + 1} dims (channels first)")
        layers: list[nn.Module] = []
        channels = self.obs_shape[0]
        for out in config.channels:
            layers += [self.conv(channels, out, 3, padding=1), _ACTIVATIONS[config.activation]()]
            channels = out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        features = channels * int(np.prod(self.obs_shape[1:]))
        self.heads = _Heads(features, config, action_dim)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.heads(self.trunk(self.normalize(obs)))


class Conv1dPolicy(_ConvPolicy):
    """1-D convolutions over ``[C, L]`` observations, then MLP heads."""

    conv = nn.Conv1d
    dims = 1


class Conv2dPolicy(_ConvPolicy):
    """2-D convolutions over ``[C, H, W]`` observations (e.g. board planes), then MLP heads."""

    conv = nn.Conv2d
    dims = 2


POLICIES: dict[str, type[Policy]] = {"mlp": MLPPolicy, "conv1d": Conv1dPolicy,
                                      "conv2d": Conv2dPolicy}
"""Policy architectures by name."""


def build_policy(config: PolicyConfig, observation_space: spaces.Box,
                 action_space: spaces.Space) -> Policy:
    """The policy named ``config.name`` for these spaces."""
    if config.name not in POLICIES:
        raise RegistryError(f"policy.name: unknown policy '{config.name}'; known: "
                            f"{', '.join(POLICIES)}." + close_matches(config.name, POLICIES))
    action_dim, continuous = space_dims(action_space)
    return POLICIES[config.name](tuple(observation_space.shape), action_dim, continuous, config)
