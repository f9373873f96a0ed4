"""``worldflux verify TARGET``: quality gates for a run, a saved model or a family.

Registered on the main app by :func:`register` (called from :mod:`worldflux.cli.main`).
Exit codes: 0 every gate passed, 1 a gate failed, 2 a user error (bad target, damaged model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_GATE_FAILED = 1


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""
    app.command("verify")(verify)


def verify(
    target: Annotated[str, typer.Argument(
        help="A run directory (from `worldflux train`), a saved-model directory (config.json + "
             "model.safetensors + worldflux.json) or a registered family name (e.g. pets).",
        metavar="TARGET", show_default=False)],
    seeds: Annotated[int, typer.Option(
        "--seeds", help="Smoke-task seeds for seed_success; >= 80% must learn.")] = 5,
    full: Annotated[bool, typer.Option(
        "--full", help="Longer training budgets (the default quick form is the CI one).")] = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json", metavar="FILE", help="Also write the report as JSON to FILE.")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="Device the model is loaded and trained on (cpu, cuda, cuda:N).")] = "cpu",
) -> None:
    """Run the quality gates on TARGET, print a table, exit 1 if any fails.

    finite_metrics: every number in RUN_DIR/metrics.jsonl and eval.jsonl is
    finite (null, NaN or inf fail; the first bad key and step are named);
    every model parameter and buffer is finite, and so is a forward pass
    (encode, decode, rollout) on random contract-valid inputs.

    save_load_parity: the model is saved with save_pretrained and loaded
    back with from_pretrained; outputs on the same inputs and seed must be
    bit-identical (max abs diff 0).

    loss_decrease: a copy of the model trains for a short budget (60 steps,
    300 with --full) on the run's replay episodes, else on synthetic data
    matching the model's contract; the mean loss of the last 10 steps must
    be at least 1% (relative) below that of the first 10.

    seed_success: the family's smoke task (what "learning" means for it;
    PETS fits Pendulum-v1 one-step dynamics) runs for --seeds seeds; at
    least 80% of them must pass.

    Exit codes: 0 all gates passed, 1 a gate failed, 2 TARGET is not a run,
    a saved model or a family name, or could not be loaded (damaged files).
    """
    from rich.markup import escape
    from rich.table import Table

    from worldflux.cli.main import _user_errors, console, err_console
    from worldflux.quality import verify as run_verify

    with _user_errors():
        with err_console.status("verifying ...") as status:
            report = run_verify(target, seeds=seeds, quick=not full, device=device,
                                progress=lambda name: status.update(f"gate {name} ..."))
        if json_out is not None:
            report.write_json(json_out)
    table = Table(title=f"worldflux verify {escape(report.target)} ({report.kind}"
                        f"{', ' + report.family if report.family else ''}"
                        f"{', full' if not report.quick else ', quick'})")
    for column in ("gate", "status", "value", "threshold", "time"):
        table.add_column(column, no_wrap=True)
    styles = {"pass": "green", "FAIL": "bold red", "skip": "yellow"}
    for gate in report.gates:
        table.add_row(gate.name, f"[{styles[gate.status]}]{gate.status}[/]", _number(gate.value),
                      _number(gate.threshold), f"{gate.seconds:.1f} s")
    console.print(table)
    for gate in report.gates:
        console.print(f"[{styles[gate.status]}]{gate.name}[/]: {escape(gate.detail)}",
                      soft_wrap=True, highlight=False)
    console.print(f"model: {escape(report.model_source)}", soft_wrap=True, highlight=False)
    if json_out is not None:
        console.print(f"report written to {escape(str(json_out))}", highlight=False)
    if report.passed:
        console.print("[green]all gates passed[/]")
        return
    console.print(f"[bold red]failed:[/] {', '.join(report.failed)}")
    raise typer.Exit(EXIT_GATE_FAILED)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
