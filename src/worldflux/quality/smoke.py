"""Smoke tasks: does a fresh model of a family learn something real in about a second?

:meth:`WorldModel.smoke_task` returns a :class:`SmokeResult` for one seed; ``worldflux verify``
runs it over several seeds (the ``seed_success`` gate). Families override it with a task of
their own; the default, :func:`generic_smoke_task`, trains the family's ``loss(batch)`` on data
from :class:`LinearGaussianSystem` and passes when the held-out loss falls by a set fraction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldflux.core.errors import ConfigError
from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec

__all__ = [
    "LinearGaussianSystem",
    "SmokeResult",
    "build_smoke_model",
    "generic_smoke_task",
    "random_env_transitions",
    "relative_decrease",
]

QUICK_STEPS = 200
"""Gradient steps of the generic smoke task in its quick (CI) form."""
FULL_STEPS = 600
"""Gradient steps of the generic smoke task in its full form."""
GENERIC_DROP = 0.3
"""The generic smoke task passes when the held-out loss falls by at least this fraction."""


@dataclass(frozen=True)
class SmokeResult:
    """Outcome of one seed of a family's smoke task."""

    passed: bool
    """Whether the model learned (``metric`` compared with ``threshold`` as ``description`` says)."""
    metric: float
    """The measured number (e.g. relative loss decrease, or MSE as a fraction of a baseline)."""
    threshold: float
    """The bound ``metric`` had to reach."""
    description: str
    """One line: the task, the metric and which side of the threshold passes."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative_decrease(before: float, after: float) -> float:
    """``(before - after) / |before|``: 0.3 means the value fell by 30% (works for negative NLLs)."""
    if not (math.isfinite(before) and math.isfinite(after)):
        return float("nan")
    return (before - after) / max(abs(before), 1e-8)


class LinearGaussianSystem:
    """Random stable linear dynamics sized to an :class:`IOContract`, to make contract batches.

    Latent ``z [d]`` follows ``z' = M z + N a + 0.05 eps`` (``M`` = 0.9 x a random rotation),
    reward ``r = c.z' + e.a``. Observations are ``z`` itself for flat float specs ``(d,)``, a
    fixed random projection of ``z`` for other float shapes, and ``255 * sigmoid(P z)`` pixels
    for uint8 specs. Actions are uniform in ``[low, high]`` (continuous) or one-hot (discrete).
    """

    def __init__(self, contract: IOContract, seed: int = 0, latent_dim: int = 8) -> None:
        self.contract = contract
        self.obs_spec, self.action_spec = contract.observation, contract.action
        self.generator = torch.Generator().manual_seed(int(seed))
        shape = self.obs_spec.shape
        flat = self.obs_spec.dtype == "float32" and len(shape) == 1
        self.latent_dim = shape[0] if flat else int(latent_dim)
        d, a = self.latent_dim, self.action_spec.dim
        q, _ = torch.linalg.qr(self._randn(d, d))
        self.M = 0.9 * q
        self.N = 0.5 * self._randn(d, a) / math.sqrt(a)
        self.c = self._randn(d) / math.sqrt(d)
        self.e = 0.3 * self._randn(a) / math.sqrt(a)
        size = int(np.prod(shape))
        self.P = None if flat else self._randn(size, d) / math.sqrt(d)
        for key, spec in contract.batch_keys.items():
            if key not in _STANDARD_KEYS and (tuple(spec.shape) != ("B", "T")
                                              or spec.dtype not in ("float", "bool")):
                raise ConfigError(
                    f"batch key '{key}': got spec {spec.shape} {spec.dtype}, expected a standard "
                    f"key or a [B, T] float/bool key; the family must override smoke_task"
                )

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator)

    def _actions(self, count: int) -> Tensor:
        spec = self.action_spec
        if spec.kind == "discrete":
            index = torch.randint(spec.dim, (count,), generator=self.generator)
            return torch.nn.functional.one_hot(index, spec.dim).float()
        u = torch.rand(count, spec.dim, generator=self.generator)
        return spec.low + (spec.high - spec.low) * u

    def _observe(self, z: Tensor) -> Tensor:
        if self.P is None:
            return z.clone()
        x = z @ self.P.T
        if self.obs_spec.dtype == "uint8":
            return (255 * torch.sigmoid(x)).round().to(torch.uint8).view(-1, *self.obs_spec.shape)
        return x.view(-1, *self.obs_spec.shape)

    def batch(self, batch_size: int, seq_len: int) -> dict[str, Tensor]:
        """One batch of ``batch_size`` episodes of ``seq_len`` rows (standard keys, ``[B, T, ...]``).

        Row 0 starts each episode (zero action and reward, ``is_first``); row ``t`` holds the
        action that led to ``obs[t]`` and the reward of that transition.
        """
        B, T = int(batch_size), int(seq_len)
        z = self._randn(B, self.latent_dim)
        obs, actions, rewards = [self._observe(z)], [torch.zeros(B, self.action_spec.dim)], [
            torch.zeros(B)]
        for _ in range(T - 1):
            a = self._actions(B)
            u = a if self.action_spec.kind == "discrete" else a / max(abs(self.action_spec.low),
                                                                      abs(self.action_spec.high))
            z = z @ self.M.T + u @ self.N.T + 0.05 * self._randn(B, self.latent_dim)
            obs.append(self._observe(z))
            actions.append(a)
            rewards.append(z @ self.c + u @ self.e)
        is_first = torch.zeros(B, T, dtype=torch.bool)
        is_first[:, 0] = True
        out = {
            "obs": torch.stack(obs, 1),
            "actions": torch.stack(actions, 1),
            "rewards": torch.stack(rewards, 1),
            "terminated": torch.zeros(B, T, dtype=torch.bool),
            "truncated": torch.zeros(B, T, dtype=torch.bool),
            "is_first": is_first,
        }
        for key, spec in self.contract.batch_keys.items():
            if key not in out:
                out[key] = torch.zeros(B, T, dtype=torch.bool if spec.dtype == "bool" else None)
        return {key: out[key] for key in self.contract.batch_keys}


_STANDARD_KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "is_first")


def build_smoke_model(cls: type, obs_spec: ObservationSpec | None = None,
                      action_spec: ActionSpec | None = None, device: str = "cpu",
                      **config_overrides: Any):
    """A fresh model of the family ``cls`` with its default config (plus overrides).

    The specs default to ``cls.smoke_specs()``. A registered family is built through
    :func:`worldflux.create_world_model`; an unregistered class is called with config ``None``.
    """
    from worldflux.core.factory import create_world_model
    from worldflux.core.registry import WorldModelRegistry

    default_obs, default_action = cls.smoke_specs()
    obs_spec, action_spec = obs_spec or default_obs, action_spec or default_action
    name = getattr(cls, "family", "")
    if name and name in WorldModelRegistry and WorldModelRegistry.get(name).cls is cls:
        return create_world_model(name, obs_spec=obs_spec, action_spec=action_spec,
                                  device=device, **config_overrides)
    if config_overrides:
        raise ConfigError(f"{cls.__name__}: not a registered family, so config overrides "
                          f"{sorted(config_overrides)} cannot be applied")
    return cls(None, obs_spec, action_spec).to(device)


def learning_rate(model) -> float:
    """The family config's ``learning_rate`` when it has one, else 1e-3."""
    value = getattr(model.config, "learning_rate", None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1e-3


def held_out_loss(model, batch: dict[str, Tensor], seed: int) -> float:
    """``model.loss(batch)`` in eval mode without gradients, with a fixed RNG (reproducible)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            return float(model.loss(batch).loss)
    finally:
        model.train(was_training)


def generic_smoke_task(cls: type, seed: int, quick: bool = True, *,
                       obs_spec: ObservationSpec | None = None,
                       action_spec: ActionSpec | None = None, steps: int | None = None,
                       drop: float = GENERIC_DROP, batch_size: int = 16,
                       config_overrides: dict[str, Any] | None = None):
    """Train a fresh ``cls`` model on a :class:`LinearGaussianSystem`; pass on a loss drop.

    The model (default config, ``cls.smoke_specs()``) takes ``steps`` Adam steps (quick: 200,
    full: 600) on fresh batches ``[batch_size, T]``; the loss on a fixed held-out batch is
    measured before and after. Passes when it fell by at least ``drop`` (relative).
    ``config_overrides`` change the family config (e.g. a smaller size preset).
    The global torch RNG is left as it was.
    """
    steps = int(steps if steps is not None else (QUICK_STEPS if quick else FULL_STEPS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_smoke_model(cls, obs_spec, action_spec, **(config_overrides or {}))
        contract = model.io_contract()
        seq_len = max(int(contract.min_sequence_length), 8)
        system = LinearGaussianSystem(contract, seed=int(seed))
        held_out = system.batch(4 * batch_size, seq_len)
        before = held_out_loss(model, held_out, seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate(model))
        model.train()
        for _ in range(steps):
            out = model.loss(system.batch(batch_size, seq_len))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
        after = held_out_loss(model, held_out, seed)
    decrease = relative_decrease(before, after)
    return _smoke_result(decrease, drop, f"generic linear-Gaussian task, {steps} steps: held-out "
                         f"loss {before:.4g} -> {after:.4g}; relative decrease must be >= {drop}")


def _smoke_result(decrease: float, drop: float, description: str):
    passed = math.isfinite(decrease) and decrease >= drop
    return SmokeResult(bool(passed), float(decrease), float(drop), description)


def random_env_transitions(env_id: str, steps: int, seed: int) -> dict[str, Tensor]:
    """``steps`` uniformly random-action transitions of a worldflux env (episodes restart).

    Returns float32 tensors ``obs [N, D]``, ``actions [N, A]``, ``rewards [N]``,
    ``next_obs [N, D]`` (``N = steps``; actions in the env's normalised ``[-1, 1]``).
    """
    from worldflux.envs import make

    env = make(env_id, seed=int(seed))
    env.action_space.seed(int(seed))
    rows: dict[str, list] = {"obs": [], "actions": [], "rewards": [], "next_obs": []}
    try:
        obs, _ = env.reset(seed=int(seed))
        for _ in range(int(steps)):
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(rows, (obs, action, reward, next_obs), strict=True):
                rows[key].append(np.asarray(value, dtype=np.float32))
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return {key: torch.from_numpy(np.stack(values)) for key, values in rows.items()}
