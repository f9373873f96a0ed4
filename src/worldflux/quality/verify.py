""":func:`verify`: run the quality gates on a run directory, a saved model or a family."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from worldflux.core.errors import ConfigError
from worldflux.quality import gates
from worldflux.quality.report import GateResult, VerifyReport
from worldflux.quality.target import Subject, resolve_target

__all__ = ["GATES", "verify"]

logger = logging.getLogger(__name__)

GATES = ("finite_metrics", "save_load_parity", "loss_decrease", "seed_success")
"""Gate names, in the order they run."""


def verify(target: str | os.PathLike, *, seeds: int = 5, quick: bool = True,
           device: str = "cpu", progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Run every gate on ``target`` and return the report (``report.passed``: all passed).

    Args:
        target: a run directory (``config.json`` from ``worldflux train``, ``metrics.jsonl``,
            ``checkpoints/``, ``model/``), a saved-model directory (``config.json``,
            ``model.safetensors``, ``worldflux.json``) or a registered family name (a fresh
            model with the family's defaults and ``smoke_specs()`` is checked).
        seeds: smoke-task seeds for ``seed_success`` (>= 1); >= 80% of them must learn.
        quick: CI budgets (about a second per smoke seed); ``False`` trains longer.
        device: where the model is loaded and trained (smoke tasks run on the CPU).
        progress: called with each gate's name before it runs (for a CLI status line).

    A gate that raises fails with the error in its detail; loading the target does not: a
    damaged saved model raises :class:`~worldflux.core.errors.CheckpointError`.

    Raises:
        ConfigError: ``target`` is none of the three kinds, or ``seeds < 1``.
        CheckpointError: the model or checkpoint cannot be loaded.
    """
    if int(seeds) != seeds or seeds < 1:
        raise ConfigError(f"seeds: got {seeds!r}, expected an integer >= 1")
    subject = resolve_target(target, device=device)
    report = VerifyReport(str(target), subject.kind, subject.family, subject.model_source,
                          bool(quick), int(seeds))
    for name in GATES:
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        result = _run_gate(name, subject, seeds=int(seeds), quick=bool(quick))
        result.seconds = time.perf_counter() - start
        report.gates.append(result)
    return report


def _run_gate(name: str, subject: Subject, *, seeds: int, quick: bool) -> GateResult:
    model = subject.model
    if name != "finite_metrics" and model is None:
        return GateResult(name, True, None, None, "not applicable: the run's agent has no world "
                          "model", skipped=True)
    try:
        if name == "finite_metrics":
            return gates.finite_metrics(model, subject.run_dir)
        if name == "save_load_parity":
            return gates.save_load_parity(model)
        if name == "loss_decrease":
            return gates.loss_decrease(model, subject.run_dir, quick=quick)
        return gates.seed_success(subject.family_cls, seeds, quick=quick)
    except Exception as exc:  # a gate that crashes fails, with the reason in the table
        logger.debug("gate %s raised", name, exc_info=True)
        return GateResult(name, False, None, None, f"raised {type(exc).__name__}: {exc}")
