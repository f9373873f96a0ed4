"""``worldflux report RUN_DIR``: a self-contained HTML report of a run, with rollout fidelity.

Registered on the main app by :func:`register` (called from :mod:`worldflux.cli.main`).
Exit codes: 0 the report was written, 2 a user error (not a run directory, bad option).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""
    app.command("report")(report)


def parse_env_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` items -> dict; values are read as JSON (numbers, true/false) else text."""
    from worldflux.core.errors import ConfigError

    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--ood: got {item!r}, expected KEY=VALUE such as g=15 or "
                              "unwrapped.m=1.5")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options


def report(
    run_dir: Annotated[Path, typer.Argument(
        help="A run directory written by `worldflux train`.", show_default=False)],
    horizon: Annotated[int, typer.Option(
        "--horizon", help="Open-loop steps imagined from every start.")] = 50,
    episodes: Annotated[int, typer.Option(
        "--episodes", "-n", help="Fresh held-out episodes collected for the fidelity.")] = 5,
    fidelity: Annotated[bool, typer.Option(
        "--fidelity/--no-fidelity",
        help="Evaluate the run's world model (else only the run's logs and GIFs).")] = True,
    policy: Annotated[str, typer.Option(
        "--policy", help="Actions of the held-out episodes: random (fast, broad coverage) or "
                         "agent (the agent's greedy policy; slow with MPC planners).")] = "random",
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Sampled rollouts per start (default: the ensemble size).")] = None,
    starts: Annotated[int, typer.Option(
        "--starts", help="Start points per held-out episode.")] = 8,
    ood: Annotated[list[str] | None, typer.Option(
        "--ood", metavar="KEY=VALUE",
        help="Also evaluate out of distribution with this env option (repeatable): make() "
             "keyword arguments (g=15 for Pendulum-v1) or unwrapped.ATTR=VALUE.")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of the first held-out episode (default: train.seed + 20000).")
    ] = None,
    markdown: Annotated[bool, typer.Option(
        "--markdown", help="Also write report.md with its images in report_files/.")] = False,
    device: Annotated[str, typer.Option(
        "--device", help="Device the run's model is loaded on.")] = "cpu",
) -> None:
    """Write RUN_DIR/report.html: configuration, learning curve, evaluations,
    open-loop fidelity (error per horizon, spread-vs-error calibration) on fresh
    held-out episodes, optional out-of-distribution split, and GIFs of real vs
    imagined episodes. One self-contained file (images embedded). Fidelity
    results are also written to RUN_DIR/fidelity.json.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from worldflux.cli.main import _user_errors, console, err_console
    from worldflux.core.errors import ConfigError
    from worldflux.evaluation import write_report

    with _user_errors():
        if horizon < 1:
            raise ConfigError(f"--horizon: got {horizon}, expected an integer >= 1")
        if episodes < 1:
            raise ConfigError(f"--episodes: got {episodes}, expected an integer >= 1")
        if starts < 1:
            raise ConfigError(f"--starts: got {starts}, expected an integer >= 1")
        if samples is not None and samples < 1:
            raise ConfigError(f"--samples: got {samples}, expected an integer >= 1")
        if policy not in ("random", "agent"):
            raise ConfigError(f"--policy: got {policy!r}, expected random or agent")
        ood_options = parse_env_options(ood) or None
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=err_console,
                       disable=not err_console.is_terminal)
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        with bar:
            path = write_report(run_dir, compute_fidelity=fidelity, horizon=horizon,
                                episodes=episodes, policy=policy, num_samples=samples,
                                starts_per_episode=starts, ood_options=ood_options,
                                device=device, seed=seed, markdown=markdown,
                                progress=progress)
    fidelity_file = Path(run_dir) / "fidelity.json"
    console.print(f"report written to [bold]{path}[/]", soft_wrap=True, highlight=False)
    if fidelity and fidelity_file.is_file():
        results = json.loads(fidelity_file.read_text(encoding="utf-8")).get("results", {})
        for label, result in results.items():
            summary = result.get("summary", {})
            rho = summary.get("spearman")
            console.print(f"{label}: spread-error rank correlation "
                          f"{'n/a' if rho is None else f'{rho:.3f}'}, "
                          f"{summary.get('horizon_under_10pct')} steps under 10% relative error "
                          f"(horizon {result.get('horizon')})", soft_wrap=True, highlight=False)
        console.print(f"fidelity results in {fidelity_file}", soft_wrap=True, highlight=False)
