"""The ``worldflux`` command line: list models and envs, train, evaluate, run the demo.

Every :class:`~worldflux.core.errors.WorldFluxError` is reported as one red line on stderr with
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from worldflux.core.errors import ConfigError, WorldFluxError

app = typer.Typer(
    name="worldflux",
    help="World models and model-based RL: train, evaluate and inspect agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USER_ERROR = 2


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn worldflux errors (and missing optional extras) into one red line and exit code 2."""
    try:
        yield
    except (WorldFluxError, ImportError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True,
                          highlight=False)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _version_callback(value: bool) -> None:
    if value:
        from worldflux import __version__

        console.print(f"worldflux {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress messages.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """World models and model-based RL: train, evaluate and inspect agents."""
    _configure_logging(verbose)


def _configure_logging(verbose: bool) -> None:
    """Show worldflux's log records on stderr (INFO with -v, else WARNING); root is left alone."""
    package_logger = logging.getLogger("worldflux")
    if not any(getattr(h, "_worldflux_cli", False) for h in package_logger.handlers):
        handler = RichHandler(console=err_console, show_path=False)
        handler._worldflux_cli = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if verbose else logging.WARNING)


# -- models / envs -------------------------------------------------------------------------------
@app.command()
def models() -> None:
    """List the registered world-model families and agents."""
    import worldflux
    from worldflux.agents.base import AgentRegistry

    with _user_errors():
        families = worldflux.list_models()
        agents = AgentRegistry.entries()
    table = Table(title="World-model families")
    for column in ("name", "tier", "aliases", "description"):
        table.add_column(column)
    for family in families:
        table.add_row(family["name"], family["tier"], ", ".join(family["aliases"]) or "-",
                      family["description"])
    console.print(table)
    table = Table(title="Agents (worldflux train AGENT)")
    for column in ("name", "tier", "description"):
        table.add_column(column)
    for entry in agents:
        table.add_row(entry.name, entry.tier, entry.description)
    # Fast RL over batched envs (worldflux.rl), trained through the same command.
    table.add_row("ppo", "reference", "PPO over batched envs (discrete with masks, Gaussian)")
    table.add_row("alphazero", "reference", "AlphaZero: batched MCTS, self-play and puzzles")
    console.print(table)


@app.command()
def envs(
    contains: Annotated[str | None, typer.Argument(
        help="Only ids containing this text (case-insensitive), e.g. dmc or pendulum.")] = None,
) -> None:
    """List the environment ids worldflux knows (other gymnasium ids also work with --env)."""
    from worldflux.envs import list_envs

    with _user_errors():
        ids = list_envs()
    if contains:
        ids = [i for i in ids if contains.lower() in i.lower()]
    groups: dict[str, list[str]] = {}
    for env_id in ids:
        family = env_id.split("/", 1)[0] if "/" in env_id else "gymnasium"
        groups.setdefault(family, []).append(env_id)
    table = Table(title=f"Environments ({len(ids)})", show_lines=True)
    table.add_column("family")
    table.add_column("ids")
    for family, members in groups.items():
        table.add_row(f"{family} ({len(members)})", "  ".join(members))
    console.print(table)
    if not ids:
        console.print("no environment id matches" + (f" '{contains}'" if contains else ""))


# -- train ---------------------------------------------------------------------------------------
def split_overrides(items: list[str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """``--set`` items -> (train overrides without the ``train.`` prefix, agent overrides)."""
    from worldflux.core.config import parse_set_options

    train_sets: dict[str, str] = {}
    agent_sets: dict[str, str] = {}
    for key, value in parse_set_options(items).items():
        if key.startswith("train."):
            train_sets[key.removeprefix("train.")] = value
        else:
            agent_sets[key] = value
    return train_sets, agent_sets


def build_configs(agent: str, config_file: Path | None, options: dict[str, Any],
                  sets: list[str] | None) -> tuple[Any, Any]:
    """Compose (TrainConfig, agent config): defaults < ``--config`` file < options < ``--set``.

    ``config_file`` holds an agent config, or a run's ``config.json`` (then its ``train``
    section is used too). ``options`` are the explicit command-line options (None = not given).
    """
    from worldflux.agents import agent_config_class
    from worldflux.training import TrainConfig

    config_cls = agent_config_class(agent)
    train_sets, agent_sets = split_overrides(sets)
    train_config = TrainConfig()
    agent_config = config_cls()
    if config_file is not None:
        try:
            data = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--config {config_file}: cannot read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config {config_file}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and "agent_config" in data:
            if data.get("agent", agent) != agent:
                raise ConfigError(f"--config {config_file}: a run config of agent "
                                  f"'{data['agent']}', but training '{agent}'")
            if "train" in data:
                train_config = _config_from(TrainConfig, data["train"], f"--config {config_file}")
            data = data["agent_config"]
        agent_config = _config_from(config_cls, data, f"--config {config_file}")
    given = {k: v for k, v in options.items() if v is not None}
    train_config = _override(train_config, given, "--")
    train_config = _override(train_config, train_sets, "--set train.")
    if agent_sets and not dataclasses.fields(agent_config):
        key = next(iter(agent_sets))
        raise ConfigError(f"--set {key}: agent '{agent}' has no settings; training settings take "
                          f"the prefix train. (e.g. --set train.{key}=...)")
    for key in agent_sets:
        if key not in _field_names(agent_config) and key in _field_names(train_config):
            raise ConfigError(f"--set {key}: not a setting of agent '{agent}'; "
                              f"did you mean --set train.{key}?")
    agent_config = _override(agent_config, agent_sets, "--set ")
    train_config.validate()
    return train_config, agent_config


def _field_names(config: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


def _override(config: Any, overrides: dict[str, Any], label: str) -> Any:
    """Apply overrides one at a time so an error names the exact option that caused it."""
    from worldflux.core.config import apply_overrides

    for key, value in overrides.items():
        try:
            config = apply_overrides(config, {key: value})
        except ConfigError as exc:
            raise ConfigError(f"{label}{key.replace('_', '-') if label == '--' else key}: {exc}") from None
    return config


def _config_from(cls: type, data: Any, where: str) -> Any:
    from worldflux.core.config import from_dict

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@app.command()
def train(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(
        help="Agent to train; `worldflux models` lists them. May be left out with --resume.",
        show_default=False)] = None,
    env: Annotated[str | None, typer.Option(
        "--env", "-e", help="Environment id (default Pendulum-v1); `worldflux envs` lists them.")] = None,
    steps: Annotated[int | None, typer.Option(help="Agent steps to collect (default 10000).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default runs/AGENT-ENV-TIME); must be new "
                            "(use --resume to continue one).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE",
        help="Override a setting (repeatable): train.<field> for the training config "
             "(e.g. train.log_every=500), other keys for the agent config (e.g. planner.horizon=20).",
    )] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Agent config JSON, or a run's config.json to repeat it.")] = None,
    eval_every: Annotated[int | None, typer.Option(
        help="Evaluate every N steps, at the next episode end (default 0: only at the end).")] = None,
    eval_episodes: Annotated[int | None, typer.Option(help="Episodes per evaluation (default 5).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar (only on a terminal).")] = True,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="RUN|CHECKPOINT|MODEL",
        help="Start the networks from another run's newest checkpoint (or a checkpoint, or a "
             "saved model: world model only); optimisers, counters and replay start fresh and "
             "other settings may differ (e.g. --config RUN/config.json --set lr=1e-4).")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN_DIR",
        help="Continue the run in RUN_DIR from its newest valid checkpoint (after a crash or "
             "kill). Settings come from RUN_DIR/config.json; any given must match it, except "
             "--steps, which may grow to extend the run.")] = None,
) -> None:
    """Train AGENT online on an environment, evaluating and checkpointing into a run directory.

    A run that was killed (even with SIGKILL) continues with `worldflux train --resume RUN_DIR`:
    it restarts from the newest checkpoint that verifies (a damaged one is skipped and named),
    cuts metrics.jsonl and eval.jsonl back to that checkpoint, refills the replay buffer from
    RUN_DIR/replay/ and, with the same seed on the same machine, records exactly what the
    uninterrupted run would have. Checkpoints are taken at episode ends every
    train.checkpoint_every steps (--set train.checkpoint_every=N); with 0, only at the end.
    """
    from worldflux.training import train as run_training

    with _user_errors():
        options = {"env": env, "steps": steps, "seed": seed, "eval_every": eval_every,
                   "eval_episodes": eval_episodes, "device": device, "init_from": init_from}
        if resume is not None:
            summary = _resume_training(ctx, agent, resume, out, config, options, set_, progress)
            _print_summary(summary)
            return
        if agent is None:
            raise ConfigError("AGENT: missing; name the agent to train (`worldflux models` lists "
                              "them), or continue a run with --resume RUN_DIR")
        if agent in ("ppo", "alphazero"):  # fast RL over batched envs: worldflux.cli.rl
            from worldflux.cli.rl import train_rl_command

            if init_from is not None:
                raise ConfigError(f"--init-from: not available for {agent} (world-model agents "
                                  "only); continue a run of it with --resume RUN_DIR")

            cli_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()}
            _print_summary(train_rl_command(agent, env=env, steps=steps, seed=seed, out=out,
                                            sets=set_, config=config, device=device,
                                            eval_episodes=eval_episodes, cli_args=cli_args))
            return
        train_config, agent_config = build_configs(agent, config, options, set_)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{agent}-{train_config.env.replace('/', '_')}-{stamp}"
        cli_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()}
        summary = run_training(agent, train_config, None, out, agent_config=agent_config,
                               progress=None if progress else False, console=err_console,
                               cli_args=cli_args)
    _print_summary(summary)


def _resume_training(ctx: typer.Context, agent: str | None, run_dir: Path, out: Path | None,
                     config: Path | None, options: dict[str, Any], sets: list[str] | None,
                     progress: bool) -> dict[str, Any]:
    """``train --resume RUN_DIR``: the saved config plus the given options, checked by train()."""
    from worldflux.training import train as run_training
    from worldflux.training.loop import prepare_run_dir

    if config is not None:
        raise ConfigError("--config: cannot be combined with --resume (the run's own "
                          "config.json is used)")
    if out is not None and Path(out).resolve() != Path(run_dir).resolve():
        raise ConfigError(f"--out {out}: differs from --resume {run_dir}; give only --resume")
    prepare_run_dir(run_dir, resume=True)
    config_file = Path(run_dir) / "config.json"
    try:
        saved_agent = json.loads(config_file.read_text(encoding="utf-8"))["agent"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"--resume: {config_file} is not a valid run config ({exc!r})") from None
    cli_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()}
    if saved_agent in ("ppo", "alphazero"):  # fast RL runs: worldflux.cli.rl
        from worldflux.cli.rl import train_rl_command

        return train_rl_command(saved_agent, env=options["env"], steps=options["steps"],
                                seed=options["seed"], out=Path(run_dir), sets=sets,
                                config=config_file, device=options["device"],
                                eval_episodes=options["eval_episodes"], cli_args=cli_args,
                                resume=True)
    train_config, agent_config = build_configs(saved_agent, config_file, options, sets)
    return run_training(agent or saved_agent, train_config, None, run_dir,
                        agent_config=agent_config, progress=None if progress else False,
                        console=err_console, cli_args=cli_args, resume=True)


def _print_summary(summary: dict[str, Any]) -> None:
    if summary.get("rank", 0) != 0:  # a torchrun worker: rank 0 prints the run's summary
        return
    final = summary["final_eval"]
    table = Table(title=f"{summary['agent']} on {summary['env']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("final eval return", f"{final['mean']:.2f} ± {final['std']:.2f} "
                                       f"({len(final['returns'])} episodes)")
    table.add_row("steps / episodes", f"{summary['steps']} / {summary['episodes']}")
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s "
                               f"({summary['env_steps_per_s']:.0f} steps/s)")
    table.add_row("run directory", summary["run_dir"])
    if summary.get("model"):
        table.add_row("model", summary["model"])
    console.print(table)


# -- eval / demo ---------------------------------------------------------------------------------
@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `worldflux train`.")],
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="Episodes to run.")] = 10,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the first episode (default: the seed of the evaluations during training).",
    )] = None,
    device: Annotated[str | None, typer.Option(help="Device (default: the run's).")] = None,
) -> None:
    """Evaluate the newest valid checkpoint of RUN_DIR; writes RUN_DIR/eval.json."""
    from worldflux.core.io import atomic_write_text
    from worldflux.training import evaluate_run

    with _user_errors():
        if episodes < 1:
            raise ConfigError(f"--episodes: got {episodes}, expected an integer >= 1")
        from worldflux.training.loop import _progress

        with _progress(err_console, err_console.is_terminal, unit="episodes") as bar:
            task = bar.add_task("eval", total=episodes, info="")
            steps = [0]

            def on_step(episode: int, done: bool) -> None:
                steps[0] += 1
                bar.update(task, advance=1 if done else 0,
                           info=f"episode {episode + 1}, {steps[0]} steps")

            result = evaluate_run(run_dir, episodes, seed=seed, device=device, on_step=on_step)
        atomic_write_text(Path(run_dir) / "eval.json", json.dumps(result, indent=2))
    console.print(f"return [bold]{result['mean']:.2f} ± {result['std']:.2f}[/] over {episodes} "
                  f"episodes (checkpoint step {result['step']}, seed {result['seed']}); "
                  f"written to {Path(run_dir) / 'eval.json'}", soft_wrap=True)


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default runs/demo-TIME).")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar (only on a terminal).")] = True,
) -> None:
    """Uncertainty-aware MPC on Nav3D: train PETS, compare risk-neutral and risk-averse planning
    with baselines, measure open-loop fidelity, write RUN_DIR/report.html (a few minutes)."""
    from worldflux.training.demo import run_demo

    with _user_errors():
        run_demo(console, out_dir=out, progress=None if progress else False)


def _register_subcommands() -> None:
    """Commands defined in their own modules (each has ``register(app)``)."""
    import importlib

    for module in ("worldflux.cli.export", "worldflux.cli.verify", "worldflux.cli.report",
                   "worldflux.cli.play"):
        try:
            importlib.import_module(module).register(app)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it imports is missing
                raise


_register_subcommands()


def main() -> None:
    """Entry point of the ``worldflux`` script and ``python -m worldflux``."""
    app()


if __name__ == "__main__":
    main()
