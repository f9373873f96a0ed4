"""``worldflux export RUN_DIR --onnx FILE``: ONNX export of a trained run.

Registered on the main app by :func:`register` (called from :mod:`worldflux.cli.main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

VALIDATION_ATOL = 1e-3
"""Largest onnxruntime-vs-PyTorch difference accepted before the command exits with 1."""


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command("export")(export)


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `worldflux train`.")],
    onnx: Annotated[Path, typer.Option(
        "--onnx", help="ONNX file to write (a description goes next to it as FILE.json).")],
    what: Annotated[str, typer.Option(
        "--what", help="policy: the whole MPC decision (planner + ensemble) as one graph; "
                       "dynamics: the ensemble one-step model.")] = "policy",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 18).")] = 18,
    device: Annotated[str, typer.Option(
        "--device", help="Device the graph is traced on (cpu, cuda or cuda:N).")] = "cpu",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE",
        help="Planner setting of the exported policy (repeatable), e.g. planner.population=100, "
             "planner.name=cem, num_particles=10, propagation=ts1.")] = None,
) -> None:
    """Export the newest valid checkpoint of RUN_DIR to ONNX and check it in onnxruntime.

    The policy graph takes the observation, the warm-start mean and every random draw as inputs
    (see the FILE.json it writes); `worldflux.export.OnnxMPCPolicy(FILE)` runs it as a
    controller with numpy and onnxruntime only.
    """
    from worldflux.cli.main import _user_errors, console, err_console
    from worldflux.core.config import parse_set_options
    from worldflux.core.errors import ConfigError
    from worldflux.export import export_run

    with _user_errors():
        if what not in ("policy", "dynamics"):
            raise ConfigError(f"--what: got {what!r}, expected 'policy' or 'dynamics'")
        result = export_run(run_dir, onnx, what=what, opset=opset, device=device,  # type: ignore[arg-type]
                            overrides=parse_set_options(set_) or None)
    meta = result.metadata
    source = meta.get("source", {})
    detail = (f"{meta['planner']['name']}, population {meta['planner']['population']}, "
              f"{meta['planner']['iterations']} iterations, horizon {meta['planner']['horizon']}, "
              f"{meta['num_particles']} particles, {meta['propagation']}"
              if what == "policy" else f"ensemble of {meta['ensemble_size']}")
    size_kib = result.path.stat().st_size / 1024
    console.print(f"wrote {result.path} ({size_kib:.0f} KiB; {what}: {detail}) from checkpoint "
                  f"step {source.get('step')}; description in {result.sidecar}", soft_wrap=True,
                  highlight=False)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_diff.items())
    console.print(f"onnx.checker ok; onnxruntime vs PyTorch max abs difference "
                  f"{result.max_diff:.2e} ({diffs})", soft_wrap=True, highlight=False)
    if not result.max_diff <= VALIDATION_ATOL:
        err_console.print(f"[bold red]error:[/] onnxruntime differs from PyTorch by "
                          f"{result.max_diff:.2e} (> {VALIDATION_ATOL:g}); the file was written "
                          "but should not be trusted", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
