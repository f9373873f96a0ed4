"""The online training loop: collect with the agent, store rows, let the agent update, evaluate.

The loop owns the environment, the replay buffer, logging, evaluation and checkpoints; the agent
owns its models and decides when to train (see :mod:`worldflux.agents.base`). Run directory::

    RUN_DIR/
        config.json       {"agent", "agent_config", "train", "obs_spec", "action_spec",
                           "worldflux_version"}, written before the first step
        metrics.jsonl     one JSON object per log call (episodes, agent metrics, evaluations)
        eval.jsonl        one line per evaluation: {"step", "mean", "std", "returns", "lengths"}
        tb/               TensorBoard events (unless train.tensorboard is false)
        checkpoints/step_XXXXXXXX/   agent + loop state (see worldflux.training.checkpoint)
        model/            the final world model (save_pretrained), for agents that have one
        summary.json      final evaluation, wall time, steps/s, command-line arguments
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from worldflux.core.config import to_dict
from worldflux.core.device import resolve_device
from worldflux.core.errors import ConfigError
from worldflux.core.io import atomic_write_text
from worldflux.training.checkpoint import capture_rng_state, checkpoint_path, save_checkpoint
from worldflux.training.config import TrainConfig
from worldflux.training.environment import EVAL_SEED_OFFSET, env_action, make_env, specs_for
from worldflux.training.evaluate import evaluate
from worldflux.training.logger import Logger

logger = logging.getLogger(__name__)

__all__ = ["LoopState", "prepare_run_dir", "train"]


@dataclass
class LoopState:
    """Counters of the loop; saved in every checkpoint (what a future ``--resume`` restores)."""

    env_step: int = 0
    """Agent steps taken so far."""

    episodes: int = 0
    """Training episodes finished so far."""

    next_eval: int = 0
    """Evaluate at the first episode end at or after this step (0 = only at the end)."""

    next_checkpoint: int = 0
    """Checkpoint at the first episode end at or after this step (0 = only at the end)."""

    last_eval_step: int = -1
    last_checkpoint_step: int = -1
    recent_returns: list[float] = field(default_factory=list)
    """Returns of the last 100 training episodes."""


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool = False,
                    create: bool = True) -> Path:
    """Check ``run_dir`` and create it (unless ``create`` is False).

    A directory that already holds a run (``config.json``) is refused.

    Raises:
        ConfigError: the directory already holds a run, or ``resume`` was asked (not yet
            supported).
    """
    run_dir = Path(run_dir)
    if resume:
        # Hook for --resume: restore LoopState, the agent and the buffer from
        # latest_checkpoint(run_dir) instead of refusing. Needs the replay buffer in checkpoints.
        raise ConfigError(f"resume: continuing the run in {run_dir} is not supported yet; "
                          "start a new run with a new --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"out: {run_dir} exists and is not a directory")
    if (run_dir / "config.json").exists():
        raise ConfigError(
            f"out: {run_dir} already holds a run (config.json); choose a new --out "
            "(resuming a run is not supported yet)"
        )
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class _SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} steps/s" if speed else "- steps/s", style="progress.data.speed")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _SpeedColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console, disable=not enabled, refresh_per_second=4,
    )


class _MetricMeans:
    """Running means of the metrics the agent reports between two log points."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            value = float(value.item() if hasattr(value, "item") else value)
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return means


def train(
    agent_name: str,
    train_config: TrainConfig | None = None,
    agent_overrides: Mapping[str, str] | None = None,
    out_dir: str | os.PathLike = "runs/run",
    *,
    agent_config: Any = None,
    progress: bool | None = None,
    console: Console | None = None,
    cli_args: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train agent ``agent_name`` online and return the run summary (also in ``summary.json``).

    Args:
        agent_name: a registered agent (``worldflux models`` lists them), e.g. ``"pets"``.
        train_config: env, budget, seed, evaluation and checkpoint schedule.
        agent_overrides: dotted agent-config overrides, e.g. ``{"planner.horizon": "20"}``.
        out_dir: the run directory (created; must not already hold a run).
        agent_config: a ready agent config instance (``agent_overrides`` apply on top).
        progress: show a rich progress bar; None = only when ``console`` is a terminal.
        console: where the progress bar goes (default: stderr).
        cli_args: the command-line arguments, recorded in ``summary.json``.
        resume: continue an existing run (not supported yet: raises ConfigError).

    Returns:
        The summary: ``final_eval`` (mean, std, returns), ``wall_time_s``, ``steps``,
        ``env_steps_per_s``, ``episodes``, paths of the final checkpoint and model.

    Raises:
        ConfigError, RegistryError: invalid settings, unknown agent or env, or a run directory
            that already holds a run; raised before the run directory is created.
    """
    from worldflux import __version__
    from worldflux.agents import build_agent
    from worldflux.data import ReplayBuffer

    cfg = train_config or TrainConfig()
    cfg.validate()
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(out_dir, resume=resume, create=False)
    console = console or Console(stderr=True)
    show_progress = console.is_terminal if progress is None else progress

    torch.manual_seed(cfg.seed)  # network initialisation draws from the global generator
    env = make_env(cfg, seed=cfg.seed)
    eval_env = None
    log = None
    try:
        eval_env = make_env(cfg, seed=cfg.seed + EVAL_SEED_OFFSET)
        obs_spec, action_spec = specs_for(env)
        agent = build_agent(agent_name, obs_spec, action_spec, device=device, seed=cfg.seed,
                            config=agent_config, overrides=dict(agent_overrides or {}))
        buffer = ReplayBuffer(cfg.buffer_capacity, obs_spec.shape, action_spec.dim,
                              obs_dtype=np.dtype(obs_spec.dtype), seed=cfg.seed)
        prepare_run_dir(run_dir)  # created only once the env and the agent could be built
        run_config = {"agent": agent_name, "agent_config": to_dict(agent.config),
                      "train": to_dict(cfg), "obs_spec": asdict(obs_spec),
                      "action_spec": asdict(action_spec), "worldflux_version": __version__}
        atomic_write_text(run_dir / "config.json", json.dumps(run_config, indent=2))
        log = Logger.for_run(run_dir, tensorboard=cfg.tensorboard)
        state = LoopState(next_eval=cfg.eval_every, next_checkpoint=cfg.checkpoint_every)
        start = time.perf_counter()
        with _progress(console, show_progress) as bar:
            task = bar.add_task(f"{agent_name} on {cfg.env}", total=cfg.steps, info="")
            _collect(agent, env, eval_env, buffer, log, cfg, state, run_dir,
                     lambda info: bar.update(task, advance=1, info=info))
        collect_time = time.perf_counter() - start
        final_eval = _finish(agent, eval_env, log, cfg, state, run_dir)
        wall_time = time.perf_counter() - start
    finally:
        for closable in (env, eval_env, log):
            if closable is not None:
                closable.close()

    model_dir = None
    if agent.world_model is not None:
        model_dir = run_dir / "model"
        agent.world_model.save_pretrained(str(model_dir))
    summary = {
        "agent": agent_name, "env": cfg.env, "seed": cfg.seed, "steps": state.env_step,
        "episodes": state.episodes, "wall_time_s": round(wall_time, 3),
        "env_steps_per_s": round(state.env_step / max(collect_time, 1e-9), 2),
        "final_eval": {k: final_eval[k] for k in ("mean", "std", "returns", "lengths")},
        "recent_train_returns": state.recent_returns[-10:],
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint_path(run_dir, state.env_step)),
        "model": str(model_dir) if model_dir is not None else None,
        "cli_args": dict(cli_args) if cli_args is not None else None,
        "worldflux_version": __version__,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _collect(agent, env, eval_env, buffer, log: Logger, cfg: TrainConfig, state: LoopState,
             run_dir: Path, advance) -> None:
    """Take ``cfg.steps`` agent steps, storing rows and calling ``agent.update`` after each."""
    zero_action = np.zeros(agent.action_spec.dim, dtype=np.float32)

    def begin_episode():
        obs, _ = env.reset()
        agent.reset()
        buffer.add(obs, zero_action, 0.0, False, False, True)
        return obs

    obs = begin_episode()
    episode_return, episode_length = 0.0, 0
    means = _MetricMeans()
    last_log_step, last_log_time = 0, time.perf_counter()
    info = ""
    while state.env_step < cfg.steps:
        action, stored = env_action(agent.act(obs, explore=True), agent.action_spec)
        obs, reward, terminated, truncated, _ = env.step(action)
        terminated, truncated = bool(terminated), bool(truncated)
        buffer.add(obs, stored, float(reward), terminated, truncated, False)
        state.env_step += 1
        episode_return += float(reward)
        episode_length += 1
        done = terminated or truncated
        means.add(agent.update(buffer, env_step=state.env_step, episode_done=done) or {})

        if done:
            state.episodes += 1
            state.recent_returns = [*state.recent_returns[-99:], episode_return]
            log.log({"episode/return": episode_return, "episode/length": episode_length,
                     "episode/terminated": float(terminated), "episode/count": state.episodes},
                    step=state.env_step)
            info = f"return {episode_return:.1f}"
            logger.info("step %d: episode %d return %.2f (%d steps)", state.env_step,
                        state.episodes, episode_return, episode_length)
            if state.next_eval and state.env_step >= state.next_eval and state.env_step < cfg.steps:
                result = _evaluate(agent, eval_env, log, cfg, state, run_dir)
                info += f" | eval {result['mean']:.1f}"
                state.next_eval = (state.env_step // cfg.eval_every + 1) * cfg.eval_every
            if (state.next_checkpoint and state.env_step >= state.next_checkpoint
                    and state.env_step < cfg.steps):
                _checkpoint(agent, state, run_dir)
                state.next_checkpoint = ((state.env_step // cfg.checkpoint_every + 1)
                                         * cfg.checkpoint_every)
            if state.env_step < cfg.steps:
                obs = begin_episode()
            episode_return, episode_length = 0.0, 0

        if cfg.log_every and state.env_step % cfg.log_every == 0:
            now = time.perf_counter()
            metrics = {f"train/{k}": v for k, v in means.pop().items()}
            metrics.update({k if k.startswith("planner/") else f"planner/{k}": v
                            for k, v in agent.planner_metrics().items()})
            metrics["perf/steps_per_s"] = (state.env_step - last_log_step) / max(now - last_log_time, 1e-9)
            metrics["buffer/rows"] = len(buffer)
            log.log(metrics, step=state.env_step)
            last_log_step, last_log_time = state.env_step, now
        advance(info)
    leftover = means.pop()
    if leftover:
        log.log({f"train/{k}": v for k, v in leftover.items()}, step=state.env_step)


def _evaluate(agent, eval_env, log: Logger, cfg: TrainConfig, state: LoopState,
              run_dir: Path) -> dict[str, Any]:
    result = evaluate(agent, eval_env, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
    log.log({"eval/return_mean": result["mean"], "eval/return_std": result["std"],
             "eval/length_mean": float(np.mean(result["lengths"]))}, step=state.env_step)
    line = {"step": state.env_step, "wall_time": round(time.time(), 3), **result}
    with open(run_dir / "eval.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    state.last_eval_step = state.env_step
    logger.info("step %d: eval return %.2f +- %.2f", state.env_step, result["mean"], result["std"])
    return result


def _checkpoint(agent, state: LoopState, run_dir: Path) -> Path:
    loop = {**asdict(state), "rng": capture_rng_state()}
    path = save_checkpoint(run_dir, state.env_step, {"agent": agent.state_dict(), "loop": loop})
    state.last_checkpoint_step = state.env_step
    return path


def _finish(agent, eval_env, log: Logger, cfg: TrainConfig, state: LoopState,
            run_dir: Path) -> dict[str, Any]:
    """Final evaluation and checkpoint (unless one was just made at this very step)."""
    if state.last_checkpoint_step != state.env_step:
        _checkpoint(agent, state, run_dir)
    return _evaluate(agent, eval_env, log, cfg, state, run_dir)
