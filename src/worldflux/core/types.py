"""Containers shared by every family: one type per concept, shapes in the docstrings.

Conventions: tensors are batch-major. ``B`` is the batch, ``T`` time, ``A`` the action width.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class State:
    """A world model's state: named tensors that all share the leading batch dimension ``[B, ...]``.

    Families choose their own keys (``"obs"`` for a fully observed model, ``"deter"`` and
    ``"stoch"`` for an RSSM, ``"latent"`` for an implicit model ...). ``meta`` carries anything
    that is not a batched tensor (the family name, a step counter).
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Tensor:
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def get(self, key: str, default: Tensor | None = None) -> Tensor | None:
        return self.tensors.get(key, default)

    @property
    def batch_size(self) -> int:
        """Size of the leading dimension shared by every tensor."""
        first = next(iter(self.tensors.values()))
        return int(first.shape[0])

    def replace(self, **tensors: Tensor) -> State:
        """A new state with some tensors replaced or added (meta is shared)."""
        return State({**self.tensors, **tensors}, dict(self.meta))

    def map(self, fn) -> State:
        """Apply ``fn`` to every tensor: ``state.map(lambda t: t.detach())``."""
        return State({k: fn(v) for k, v in self.tensors.items()}, dict(self.meta))

    def detach(self) -> State:
        return self.map(lambda t: t.detach())

    def to(self, device: torch.device | str) -> State:
        return self.map(lambda t: t.to(device))

    @staticmethod
    def stack(states: list[State], dim: int = 1) -> State:
        """Stack states ``[B, ...]`` along a new time axis -> ``[B, T, ...]`` (``dim=1``)."""
        if not states:
            raise ValueError("State.stack: got an empty list, expected at least one state")
        keys = states[0].tensors.keys()
        return State({k: torch.stack([s.tensors[k] for s in states], dim) for k in keys},
                     dict(states[0].meta))


@dataclass
class ModelOutput:
    """What :meth:`WorldModel.decode` predicts from a state.

    ``preds`` holds ``"obs"`` ``[B, *obs_shape]`` where the family reconstructs observations,
    ``"reward"`` ``[B]`` and ``"continue"`` ``[B]`` (probability of not terminating) where the
    family predicts them, plus any family-specific prediction.
    """

    preds: dict[str, Tensor]
    state: State | None = None


@dataclass
class Trajectory:
    """An imagined rollout of ``T`` steps from ``B`` start states.

    ``states`` holds each tensor stacked to ``[B, T, ...]`` (the states *after* each action),
    ``rewards`` ``[B, T]`` the predicted reward of each transition, ``continues`` ``[B, T]`` the
    predicted continuation probability where the family has a continue head (else ``None``).
    """

    states: State
    rewards: Tensor
    continues: Tensor | None = None
    preds: dict[str, Tensor] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[1])


@dataclass
class LossOutput:
    """Result of :meth:`WorldModel.loss`.

    ``loss`` is the scalar to differentiate, ``components`` the weighted terms that sum to it
    (tensors, so the caller can tell which one went non-finite), ``metrics`` plain floats to log.
    """

    loss: Tensor
    components: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


Batch = Mapping[str, Tensor]
"""A training batch: ``obs [B, T, *obs_shape]``, ``actions [B, T, A]``, ``rewards [B, T]``,
``terminated [B, T]``, ``truncated [B, T]``, ``is_first [B, T]``.

Row ``t`` holds ``obs[t]`` and the action ``actions[t]`` that *led to* it (zeros on first rows),
with ``rewards[t]`` received on that transition; see :mod:`worldflux.data`.
"""
