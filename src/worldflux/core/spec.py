"""Observation/action specs, the IO contract of a model, and input validation.

Every public entry point of a :class:`~worldflux.core.model.WorldModel` checks its inputs against
``io_contract()`` and raises :class:`ContractError` naming the key, the shape or dtype seen and
the one expected, before any work is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from worldflux.core.errors import ContractError

ActionKind = Literal["continuous", "discrete"]


@dataclass(frozen=True)
class ObservationSpec:
    """Shape of one observation (no batch or time axes) and its storage dtype.

    ``dtype`` is ``"float32"`` for vectors or ``"uint8"`` for images ``[C, H, W]``.
    """

    shape: tuple[int, ...]
    dtype: Literal["float32", "uint8"] = "float32"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if not shape or any(s <= 0 for s in shape):
            raise ContractError(f"obs_shape: got {self.shape}, expected positive sizes such as (3,)")
        object.__setattr__(self, "shape", shape)
        if self.dtype not in ("float32", "uint8"):
            raise ContractError(f"obs dtype: got {self.dtype!r}, expected 'float32' or 'uint8'")


@dataclass(frozen=True)
class ActionSpec:
    """Action space of a model.

    ``continuous``: ``dim`` real actions, normalised to ``[low, high]`` (``[-1, 1]`` by default).
    ``discrete``: ``dim`` choices; batches carry them one-hot ``[..., dim]`` (float) or as
    indices ``[...]`` (int64), which models convert with :meth:`to_tensor`.
    """

    dim: int
    kind: ActionKind = "continuous"
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if int(self.dim) <= 0:
            raise ContractError(f"action_dim: got {self.dim}, expected a positive integer")
        object.__setattr__(self, "dim", int(self.dim))
        if self.kind not in ("continuous", "discrete"):
            raise ContractError(f"action kind: got {self.kind!r}, expected 'continuous' or 'discrete'")
        if not self.low < self.high:
            raise ContractError(f"action bounds: got low={self.low}, high={self.high}, expected low < high")

    def to_tensor(self, action: Tensor, name: str = "actions") -> Tensor:
        """Validated float actions ``[..., dim]`` (indices become one-hot for discrete spaces)."""
        if self.kind == "discrete" and not torch.is_floating_point(action):
            if action.dtype == torch.bool:
                raise ContractError(f"{name}: got dtype bool, expected int64 indices or float one-hot")
            if action.numel() and (int(action.min()) < 0 or int(action.max()) >= self.dim):
                raise ContractError(
                    f"{name}: got indices in [{int(action.min())}, {int(action.max())}], "
                    f"expected values in [0, {self.dim - 1}]"
                )
            return torch.nn.functional.one_hot(action.long(), self.dim).float()
        if not torch.is_floating_point(action):
            raise ContractError(
                f"{name}: got dtype {action.dtype}, expected a floating point tensor (continuous actions)"
            )
        if action.shape[-1:] != (self.dim,):
            raise ContractError(
                f"{name}: got shape {tuple(action.shape)}, expected last dimension {self.dim} "
                f"(action width)"
            )
        check_finite(action, name)
        return action


@dataclass(frozen=True)
class TensorSpec:
    """One batch key: symbolic shape (``"B"``, ``"T"``, ``"*obs"``, ``"A"`` or integers) and dtype kind.

    ``dtype`` is ``"float"``, ``"uint8"``, ``"bool"``, ``"obs"`` (the observation dtype; uint8 or
    float) or ``"action"`` (float one-hot/continuous, or int64 indices for discrete spaces).
    """

    shape: tuple[Any, ...]
    dtype: str = "float"
    doc: str = ""


def standard_batch_keys(sequence: bool = True) -> dict[str, TensorSpec]:
    """The batch keys every family understands (see :data:`worldflux.core.types.Batch`)."""
    lead = ("B", "T") if sequence else ("B",)
    return {
        "obs": TensorSpec((*lead, "*obs"), "obs", "observation at row t"),
        "actions": TensorSpec((*lead, "A"), "action", "action that led to obs[t] (zeros on first rows)"),
        "rewards": TensorSpec(lead, "float", "reward received on the transition into row t"),
        "terminated": TensorSpec(lead, "bool", "obs[t] is terminal (no bootstrapping past it)"),
        "truncated": TensorSpec(lead, "bool", "episode cut by a time limit at obs[t]"),
        "is_first": TensorSpec(lead, "bool", "obs[t] starts an episode"),
    }


@dataclass(frozen=True)
class IOContract:
    """What a model consumes and produces; used for validation and compatibility fingerprints."""

    observation: ObservationSpec
    action: ActionSpec
    batch_keys: Mapping[str, TensorSpec] = field(default_factory=standard_batch_keys)
    state_keys: tuple[str, ...] = ()
    predictions: tuple[str, ...] = ()
    min_sequence_length: int = 2

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))

    def fingerprint(self) -> str:
        """Short hash of the contract: two models with equal fingerprints accept the same data."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- validation -------------------------------------------------------------------------
    def validate_obs(self, obs: Any, name: str = "obs", lead: int = 1) -> Tensor:
        """Check ``obs [*lead_dims, *obs_shape]`` and return it (uint8 kept, others float32)."""
        obs = _as_tensor(obs, name)
        expected = self.observation.shape
        if obs.dim() != lead + len(expected) or tuple(obs.shape[lead:]) != expected:
            lead_names = ["B", "T"][:lead]
            raise ContractError(
                f"{name}: got shape {tuple(obs.shape)}, expected [{', '.join(lead_names)}, "
                f"{', '.join(str(s) for s in expected)}] (obs_shape {expected})"
            )
        if self.observation.dtype == "uint8":
            if obs.dtype != torch.uint8 and not torch.is_floating_point(obs):
                raise ContractError(f"{name}: got dtype {obs.dtype}, expected uint8 images or float")
        elif not torch.is_floating_point(obs):
            raise ContractError(
                f"{name}: got dtype {obs.dtype}, expected a floating point tensor (float32 vectors)"
            )
        if torch.is_floating_point(obs):
            check_finite(obs, name)
        return obs

    def validate_actions(self, actions: Any, name: str = "actions", lead: int = 1) -> Tensor:
        """Check actions with ``lead`` leading dims; returns float ``[*lead_dims, A]``."""
        actions = _as_tensor(actions, name)
        if self.action.kind == "discrete" and not torch.is_floating_point(actions):
            if actions.dim() != lead:
                raise ContractError(
                    f"{name}: got index shape {tuple(actions.shape)}, expected {lead} dims "
                    f"of indices or one-hot with last dimension {self.action.dim}"
                )
        elif actions.dim() != lead + 1:
            raise ContractError(
                f"{name}: got shape {tuple(actions.shape)}, expected {lead + 1} dims "
                f"[{', '.join(['B', 'T'][:lead])}, {self.action.dim}]"
            )
        return self.action.to_tensor(actions, name)

    def validate_batch(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Check every key ``loss`` needs: presence, shape, dtype, finiteness, matching B and T."""
        if not isinstance(batch, Mapping):
            raise ContractError(f"batch: got {type(batch).__name__}, expected a mapping of tensors")
        missing = [k for k in self.batch_keys if k not in batch]
        if missing:
            raise ContractError(
                f"batch: missing key '{missing[0]}', expected keys {sorted(self.batch_keys)}"
            )
        out: dict[str, Tensor] = dict(batch)
        obs = self.validate_obs(batch["obs"], "batch['obs']", lead=2)
        B, T = obs.shape[:2]
        if T < self.min_sequence_length:
            raise ContractError(
                f"batch['obs']: got sequence length T={T}, expected T >= {self.min_sequence_length}"
            )
        out["obs"] = obs
        for key, spec in self.batch_keys.items():
            if key == "obs":
                continue
            value = _as_tensor(batch[key], f"batch['{key}']")
            if spec.dtype == "action":
                value = self.validate_actions(value, f"batch['{key}']", lead=2)
            elif tuple(value.shape) != (B, T):
                raise ContractError(
                    f"batch['{key}']: got shape {tuple(value.shape)}, expected [B, T] = [{B}, {T}]"
                )
            elif spec.dtype == "bool":
                if value.dtype != torch.bool and torch.is_floating_point(value):
                    bad = ~((value == 0) | (value == 1))
                    if bool(bad.any()):
                        raise ContractError(f"batch['{key}']: got non-binary values, expected bool")
                value = value.bool()
            elif spec.dtype == "float":
                if not torch.is_floating_point(value):
                    raise ContractError(
                        f"batch['{key}']: got dtype {value.dtype}, expected a floating point tensor"
                    )
                check_finite(value, f"batch['{key}']")
            if value.shape[:2] != (B, T):
                raise ContractError(
                    f"batch['{key}']: got leading shape {tuple(value.shape[:2])}, "
                    f"expected [B, T] = [{B}, {T}] as in batch['obs']"
                )
            out[key] = value
        return out


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
    except ImportError:  # pragma: no cover
        pass
    raise ContractError(f"{name}: got {type(value).__name__}, expected a torch.Tensor")


def check_finite(value: Tensor, name: str) -> None:
    """Raise ContractError when ``value`` holds NaN or inf (names how many and where first)."""
    if torch.is_floating_point(value):
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad = (~finite).nonzero()
            first = tuple(int(i) for i in bad[0])
            raise ContractError(
                f"{name}: got {bad.shape[0]} non-finite value(s) (NaN or inf), first at index "
                f"{first}; expected finite numbers"
            )
