"""Results of ``worldflux verify``: one :class:`GateResult` per gate, gathered in a report."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from worldflux.core.io import atomic_write_text

__all__ = ["GateResult", "VerifyReport"]


@dataclass
class GateResult:
    """One row of the verify table."""

    name: str
    """Gate name: ``finite_metrics``, ``save_load_parity``, ``loss_decrease`` or ``seed_success``."""
    passed: bool
    """Whether the gate holds (a skipped gate counts as passed)."""
    value: float | None = None
    """The measured number (``None`` when nothing was measured)."""
    threshold: float | None = None
    """The bound ``value`` is compared with; ``detail`` says which side passes."""
    detail: str = ""
    """One or two lines a person can act on: what was measured, and the first problem found."""
    skipped: bool = False
    """The gate does not apply to this target (e.g. a run whose agent has no world model)."""
    seconds: float = 0.0
    """Wall time the gate took."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extra machine-readable results (per-seed smoke results, loss curve ends ...)."""

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"skip"``."""
        return "skip" if self.skipped else ("pass" if self.passed else "FAIL")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "status": self.status,
                "value": _json_number(self.value), "threshold": _json_number(self.threshold),
                "detail": self.detail, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "info": _json_safe(self.info)}


@dataclass
class VerifyReport:
    """Everything ``verify`` found about one target."""

    target: str
    """The path or family name given."""
    kind: str
    """``"run"``, ``"model"`` or ``"family"``."""
    family: str | None
    """World-model family checked (``None`` for a run whose agent has no world model)."""
    model_source: str
    """Where the model came from (``RUN/model``, a checkpoint, or a fresh default model)."""
    quick: bool
    """Quick (CI) budgets or the full ones."""
    seeds: int
    """Seeds of the smoke task in ``seed_success``."""
    gates: list[GateResult] = field(default_factory=list)
    """One result per gate, in the order they ran."""

    @property
    def passed(self) -> bool:
        """Every gate passed (or was skipped)."""
        return all(gate.passed for gate in self.gates)

    @property
    def failed(self) -> list[str]:
        """Names of the gates that failed."""
        return [gate.name for gate in self.gates if not gate.passed]

    def gate(self, name: str) -> GateResult:
        """The result of the gate ``name`` (KeyError when it did not run)."""
        for gate in self.gates:
            if gate.name == name:
                return gate
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "family": self.family,
                "model_source": self.model_source, "quick": self.quick, "seeds": self.seeds,
                "passed": self.passed, "failed": self.failed,
                "gates": [gate.to_dict() for gate in self.gates]}

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` atomically (strict JSON: non-finite -> null)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")


def _json_number(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
