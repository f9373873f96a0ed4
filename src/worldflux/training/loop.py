"""The online training loop: collect with the agent, store rows, let the agent update, evaluate.

The loop owns the environment, the replay buffer, logging, evaluation and checkpoints; the agent
owns its models and decides when to train (see :mod:`worldflux.agents.base`). Run directory::

    RUN_DIR/
        config.json       {"agent", "agent_config", "train", "obs_spec", "action_spec",
                           "worldflux_version"} (+ "init_from": {network: source} after a
                           warm start), written before the first step
        metrics.jsonl     one JSON object per log call (episodes, agent metrics, evaluations)
        eval.jsonl        one line per evaluation: {"step", "mean", "std", "returns", "lengths"}
        eval_finals.jsonl the final evaluations of shorter budgets the run was extended past
                          (cut from eval.jsonl on extension), each with "final": true
        tb/               TensorBoard events (unless train.tensorboard is false)
        replay/episode-XXXXXXXX.npz  every finished training episode, written as it ends
                          (append-only; see worldflux.data.episodes for the schema)
        checkpoints/step_XXXXXXXX/   agent + loop state (see worldflux.training.checkpoint),
                          taken at episode ends; ``train.keep_checkpoints=N`` keeps the newest
                          N periodic ones (and the final one)
        checkpoints/discarded/       checkpoints a resume passed over (damaged, or newer than
                          the one it continued from)
        model/            the final world model (save_pretrained), for agents that have one
        summary.json      final evaluation, wall time, steps/s, command-line arguments

A run killed at any moment continues with ``train(..., resume=True)`` or
``worldflux train --resume RUN_DIR``; see :func:`train`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
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

from worldflux.agents.base import NonFiniteLossError
from worldflux.core.config import to_dict
from worldflux.core.device import resolve_device
from worldflux.core.distributed import init_distributed
from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.core.io import atomic_write_text
from worldflux.data.episodes import EPISODE_KEYS, load_episode, save_episode
from worldflux.training.checkpoint import (
    STATE_FILE,
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from worldflux.training.config import TrainConfig
from worldflux.training.environment import (
    EVAL_SEED_OFFSET,
    attach_env_reward,
    env_action,
    episode_seed,
    make_env,
    specs_for,
)
from worldflux.training.evaluate import evaluate
from worldflux.training.logger import Logger

logger = logging.getLogger(__name__)

__all__ = ["LoopState", "prepare_run_dir", "train"]


REPLAY_DIR = "replay"
"""Training episodes are written to ``RUN_DIR/replay/episode-XXXXXXXX.npz`` as they finish."""
FINAL_EVALS_FILE = "eval_finals.jsonl"
"""Final evaluations of the shorter budgets a run was extended past."""


@dataclass
class LoopState:
    """Counters of the loop; saved in every checkpoint and restored by ``resume``."""

    env_step: int = 0
    """Agent steps taken so far."""

    episodes: int = 0
    """Training episodes finished so far (= episode files in ``replay/`` the state covers)."""

    next_eval: int = 0
    """Evaluate at the first episode end at or after this step (0 = only at the end)."""

    next_checkpoint: int = 0
    """Checkpoint at the first episode end at or after this step (0 = only at the end)."""

    last_eval_step: int = -1
    last_checkpoint_step: int = -1
    recent_returns: list[float] = field(default_factory=list)
    """Returns of the last 100 training episodes."""

    last_log_step: int = 0
    """Step of the last ``log_every`` record (``perf/steps_per_s`` is measured from it)."""

    episode_open: bool = False
    """An episode was running when the state was saved (only a final checkpoint can be taken
    mid-episode). The env's internal state is not saved, so such a checkpoint is not continued."""

    replay_rows: int = 0
    """Rows in the episode files ``replay/episode-00000000.npz .. episodes - 1``."""

    metrics_bytes: int = 0
    """Size of ``metrics.jsonl`` when the state was saved; resuming truncates it to this."""

    eval_bytes: int = 0
    """Size of ``eval.jsonl`` when the state was saved; resuming truncates it to this."""

    elapsed_s: float = 0.0
    """Seconds of training (all sessions of the run) when the state was saved."""

    resumes: int = 0
    """How many times the run was resumed before the state was saved."""


def lock_run_dir(run_dir: str | os.PathLike):
    """Hold ``run_dir/.lock`` exclusively for this process; returns the open lock file (close
    it, or let the process end, to release). Two processes training one run directory would
    truncate each other's logs and replay on resume, so the second one is refused. The lock is
    the operating system's (``flock``): a crashed or killed run leaves no stale lock behind.
    Where ``fcntl`` is missing (Windows) no lock is taken and ``None`` is returned.

    Raises:
        ConfigError: another process holds the lock (its pid is named when it wrote one).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path = Path(run_dir) / ".lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"out: {run_dir} is being trained by another process (pid {holder}, holding "
            f"{path}); stop that process first, or train into another directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool = False,
                    create: bool = True) -> Path:
    """Check ``run_dir`` and create it (unless ``create`` is False).

    A new run refuses a directory that already holds a run (``config.json``); ``resume``
    requires one.

    Raises:
        ConfigError: the directory already holds a run, or (``resume``) holds none.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"out: {run_dir} exists and is not a directory")
    if resume:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(
                f"resume: {run_dir / 'config.json'} is missing; {run_dir} is not a run directory "
                "written by `worldflux train` (or its run never started)"
            )
        return run_dir
    if (run_dir / "config.json").exists():
        raise ConfigError(
            f"out: {run_dir} already holds a run (config.json); choose a new --out, or continue "
            f"it with --resume {run_dir}"
        )
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class _SpeedColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:,.2f}" if speed and speed < 10 else f"{speed:,.0f}" if speed else "-"
        return Text(f"{text} {self.unit}/s", style="progress.data.speed")


def _progress(console: Console, enabled: bool, unit: str = "steps") -> Progress:
    """Rich progress bar: done/total, speed in ``unit``/s, elapsed time, ETA, an info field."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        _SpeedColumn(unit),
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

    def state(self) -> dict[str, Any]:
        # Lists, not a dict: metric names contain '/', which checkpoint keys may not.
        return {"names": list(self._sums), "sums": list(self._sums.values()),
                "counts": [self._counts[k] for k in self._sums]}

    def load(self, state: Mapping[str, Any]) -> None:
        self._sums = {k: float(v) for k, v in zip(state["names"], state["sums"], strict=True)}
        self._counts = {k: int(v) for k, v in zip(state["names"], state["counts"], strict=True)}


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
        out_dir: the run directory (created; must not already hold a run unless ``resume``).
        agent_config: a ready agent config instance (``agent_overrides`` apply on top).
        progress: show a rich progress bar; None = only when ``console`` is a terminal.
        console: where the progress bar goes (default: stderr).
        cli_args: the command-line arguments, recorded in ``summary.json``.
        resume: continue the run in ``out_dir`` (see below).

    Resuming: a run killed at any moment (SIGKILL included) continues from its newest
    checkpoint that verifies; a damaged one is skipped with a warning naming it (and moved to
    ``checkpoints/discarded/`` with any newer one). ``train_config`` and ``agent_config`` default
    to the saved ones; anything given must equal ``config.json`` except ``steps``, which may grow
    (the run is then extended). Checkpoints are taken only at episode ends and every training
    episode starts from ``env.reset(seed=episode_seed(seed, episode))``, so the env needs no
    saved state; the checkpoint holds the agent (models, optimisers, planner, generators), the
    loop counters and pending metric means, the global RNG states, the buffer's sampling
    generator, and how many episode files of ``replay/`` (append-only) it covers. On resume,
    ``metrics.jsonl`` and ``eval.jsonl`` are cut back to their size at the checkpoint, episode
    files past it are deleted, and the buffer is refilled from the covered ones; with a fixed
    seed on one machine the resumed run then records exactly what the uninterrupted run would
    (wall times and steps/s aside). A final checkpoint taken mid-episode cannot be extended; the
    newest episode-end checkpoint is used instead. A run without any checkpoint starts over; a
    finished run (``summary.json`` present, no more steps asked) returns its saved summary.

    Returns:
        The summary: ``final_eval`` (mean, std, returns), ``wall_time_s``, ``steps``,
        ``env_steps_per_s``, ``episodes``, paths of the final checkpoint and model,
        ``resumed_from`` (the checkpoint this session started from, or None).

    Raises:
        ConfigError, RegistryError: invalid settings, unknown agent or env, or a run directory
            that already holds a run (without ``resume``); raised before the run directory is
            created. With ``resume``: no ``config.json``, settings that conflict with it, or no
            checkpoint that can be continued.
        NonFiniteLossError: ``train.max_nonfinite_steps`` optimiser steps in a row had a
            non-finite loss or gradient; the newest checkpoint is the last good one.
    """
    from worldflux import __version__
    from worldflux.agents import build_agent
    from worldflux.data import ReplayBuffer

    run_dir = Path(out_dir)
    saved = None
    if resume:
        saved = _resume_configs(run_dir, agent_name, train_config, agent_config, agent_overrides)
        agent_name, cfg, agent_config, agent_overrides = saved["agent"], *saved["configs"], None
    else:
        cfg = train_config or TrainConfig()
    cfg.validate()
    dist = init_distributed(resolve_device(cfg.device))
    device = dist.device if dist.enabled else resolve_device(cfg.device)
    if dist.is_main:  # other ranks see rank 0's files appear; they never write any
        prepare_run_dir(run_dir, resume=resume, create=False)
    console = console or Console(stderr=True)
    show_progress = console.is_terminal if progress is None else progress

    torch.manual_seed(cfg.seed)  # network initialisation draws from the global generator
    env = make_env(cfg, seed=cfg.seed)
    eval_env = None
    log = None
    resumed_from = None
    distributed = None
    buffer = None
    lock = None
    try:
        eval_env = make_env(cfg, seed=cfg.seed + EVAL_SEED_OFFSET)
        obs_spec, action_spec = specs_for(env)
        agent = build_agent(agent_name, obs_spec, action_spec, device=device, seed=cfg.seed,
                            config=agent_config, overrides=dict(agent_overrides or {}))
        agent.configure_training(precision=cfg.precision,
                                 nonfinite_limit=cfg.max_nonfinite_steps, dist=dist)
        attach_env_reward(agent, env)
        if not dist.is_main:
            return _serve(agent, agent_name, cfg, run_dir)
        storage: dict[str, Any] = {}
        if cfg.replay_storage == "disk":  # refilled from replay/*.npz on resume, so overwritten
            storage = {"storage": "disk", "overwrite": True,
                       "directory": cfg.replay_directory or run_dir / "replay_storage"}
        buffer = ReplayBuffer(cfg.buffer_capacity, obs_spec.shape, action_spec.dim,
                              obs_dtype=np.dtype(obs_spec.dtype), seed=cfg.seed, **storage)
        run_config = {"agent": agent_name, "agent_config": to_dict(agent.config),
                      "train": to_dict(cfg), "obs_spec": asdict(obs_spec),
                      "action_spec": asdict(action_spec), "worldflux_version": __version__}
        means = _MetricMeans()
        if saved is not None:
            lock = lock_run_dir(run_dir)  # before _restore cuts logs and replay back
            _check_specs(run_dir, saved["run_config"], run_config)
            restored = _restore(run_dir, cfg, agent, buffer, means)
            if restored is None:  # finished, nothing more asked
                return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            state, resumed_from = restored
            run_config["worldflux_version"] = saved["run_config"].get("worldflux_version")
            if "init_from" in saved["run_config"]:  # the warm start is not repeated on resume
                run_config["init_from"] = saved["run_config"]["init_from"]
            if run_config["worldflux_version"] != __version__:
                logger.warning("resume: the run was started with worldflux %s, this is %s",
                               run_config["worldflux_version"], __version__)
        else:
            if cfg.init_from:  # before the run directory exists: a bad source leaves nothing
                from worldflux.training.warm_start import warm_start

                run_config["init_from"] = warm_start(agent, agent_name, cfg.init_from)
            prepare_run_dir(run_dir)  # created only once the env and the agent could be built
            lock = lock_run_dir(run_dir)
            state = LoopState(next_eval=cfg.eval_every, next_checkpoint=cfg.checkpoint_every)
        # Rewritten on resume too: an extended run records its new steps.
        atomic_write_text(run_dir / "config.json", json.dumps(run_config, indent=2))
        log = Logger.for_run(run_dir, tensorboard=cfg.tensorboard, elapsed_offset=state.elapsed_s,
                             purge_step=state.env_step + 1 if resume else None,
                             wandb=cfg.wandb, wandb_project=cfg.wandb_project, config=run_config)
        run = _Run(agent, env, eval_env, buffer, log, cfg, state, run_dir, means,
                   clock_start=time.perf_counter(), elapsed_before=state.elapsed_s)
        start_step = state.env_step
        try:
            with _progress(console, show_progress) as bar:
                task = bar.add_task(f"{agent_name} on {cfg.env}", total=cfg.steps,
                                    completed=state.env_step, info="")
                _collect(run, lambda info: bar.update(task, advance=1, info=info))
            collect_time = time.perf_counter() - run.clock_start
            final_eval = _finish(run)
            distributed = agent.stop_workers() if dist.enabled else None
        except NonFiniteLossError as exc:
            good = (checkpoint_path(run_dir, state.last_checkpoint_step)
                    if state.last_checkpoint_step >= 0 else None)
            raise NonFiniteLossError(
                f"{exc}. The run stopped at step {state.env_step}; "
                + (f"its last good checkpoint is {good} (`worldflux eval {run_dir}` uses it)"
                   if good else "no checkpoint had been written yet")
            ) from exc
        wall_time = run.elapsed_before + time.perf_counter() - run.clock_start
    finally:
        for closable in (env, eval_env, log, lock):
            if closable is not None:
                closable.close()
        if buffer is not None and cfg.replay_storage == "disk":
            buffer.close()  # flushed and unmapped; ReplayBuffer.open(directory) reads it back
        dist.close()

    model_dir = None
    if agent.world_model is not None:
        model_dir = run_dir / "model"
        agent.world_model.save_pretrained(str(model_dir))
    summary = {
        "agent": agent_name, "env": cfg.env, "seed": cfg.seed, "steps": state.env_step,
        "episodes": state.episodes, "wall_time_s": round(wall_time, 3),
        "env_steps_per_s": round((state.env_step - start_step) / max(collect_time, 1e-9), 2),
        "final_eval": {k: final_eval[k] for k in ("mean", "std", "returns", "lengths")},
        "recent_train_returns": state.recent_returns[-10:],
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint_path(run_dir, state.env_step)),
        "model": str(model_dir) if model_dir is not None else None,
        "resumed_from": str(resumed_from) if resumed_from is not None else None,
        "cli_args": dict(cli_args) if cli_args is not None else None,
        "worldflux_version": __version__,
        "precision": cfg.precision,
    }
    if distributed is not None:
        summary["distributed"] = distributed
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _serve(agent, agent_name: str, cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """A rank other than 0: train in step with rank 0's rounds; no files are written."""
    logger.info("rank %d of %d: serving the training rounds of rank 0", agent.dist.rank,
                agent.dist.world_size)
    metrics = agent.serve()
    return {"agent": agent_name, "env": cfg.env, "run_dir": str(run_dir),
            "rank": agent.dist.rank, "distributed": metrics}


@dataclass
class _Run:
    """What the loop's helpers share during one session of a run."""

    agent: Any
    env: Any
    eval_env: Any
    buffer: Any
    log: Logger
    cfg: TrainConfig
    state: LoopState
    run_dir: Path
    means: _MetricMeans
    clock_start: float
    """``time.perf_counter()`` when this session started collecting."""
    elapsed_before: float
    """Seconds the run had trained in earlier sessions."""


def _collect(run: _Run, advance) -> None:
    """Take agent steps up to ``cfg.steps``, storing rows and calling ``agent.update`` after each.

    Order within a step that ends an episode: episode file, episode log, the agent's update
    (which may checkpoint within itself, see :func:`_save_point`), evaluation, periodic log,
    checkpoint, then the next episode's reset; so everything up to the checkpoint's step is on
    disk when it is taken, and nothing after it. Where an evaluation and a checkpoint fall on
    the same step, a checkpoint is also taken before the evaluation (see :func:`_end_of_step`).
    """
    agent, env, buffer, log, cfg, state = run.agent, run.env, run.buffer, run.log, run.cfg, run.state
    zero_action = np.zeros(agent.action_spec.dim, dtype=np.float32)
    rows: dict[str, list] = {}

    def record(obs, action, reward, terminated, truncated, is_first) -> None:
        buffer.add(obs, action, reward, terminated, truncated, is_first)
        if is_first:
            rows.clear()
        row = (np.array(obs, copy=True), action, reward, terminated, truncated, is_first)
        for key, value in zip(EPISODE_KEYS, row, strict=True):
            rows.setdefault(key, []).append(value)

    def begin_episode():
        obs, _ = env.reset(seed=episode_seed(cfg.seed, state.episodes))
        agent.reset()
        record(obs, zero_action, 0.0, False, False, True)
        return obs

    agent.save_point = _save_point(run)
    last_log_time = time.perf_counter()
    if agent.update_pending():
        # Resumed from a checkpoint taken within a burst of updates at an episode end: finish
        # the burst, then that step, as the uninterrupted run did.
        logger.info("resume: finishing the update interrupted at step %d", state.env_step)
        run.means.add(agent.finish_update(buffer) or {})
        last_log_time = _end_of_step(run, True, last_log_time)[1]
    if 0 < state.env_step < cfg.steps and not state.episode_open and _eval_due(state, cfg):
        # Resumed from the checkpoint taken just before an evaluation, or extended from a final
        # step that was an evaluation step: finish that step first, as a run asked for this
        # budget from the start does, then go on.
        logger.info("resume: running the evaluation due at step %d", state.env_step)
        last_log_time = _end_of_step(run, True, last_log_time)[1]
    obs = begin_episode() if state.env_step < cfg.steps else None
    episode_return, episode_length = 0.0, 0
    info = ""
    while state.env_step < cfg.steps:
        action, stored = env_action(agent.act(obs, explore=True), agent.action_spec)
        obs, reward, terminated, truncated, _ = env.step(action)
        terminated, truncated = bool(terminated), bool(truncated)
        record(obs, stored, float(reward), terminated, truncated, False)
        state.env_step += 1
        episode_return += float(reward)
        episode_length += 1
        done = terminated or truncated
        state.episode_open = not done
        if done:  # on disk before the update, which may checkpoint within itself (save_point)
            save_episode(run.run_dir / REPLAY_DIR / f"episode-{state.episodes:08d}.npz",
                         {key: np.asarray(value) for key, value in rows.items()})
            state.replay_rows += len(rows["rewards"])
            state.episodes += 1
            state.recent_returns = [*state.recent_returns[-99:], episode_return]
            log.log({"episode/return": episode_return, "episode/length": episode_length,
                     "episode/terminated": float(terminated), "episode/count": state.episodes},
                    step=state.env_step)
            info = f"return {episode_return:.1f}"
            logger.info("step %d: episode %d return %.2f (%d steps)", state.env_step,
                        state.episodes, episode_return, episode_length)
        run.means.add(agent.update(buffer, env_step=state.env_step, episode_done=done) or {})
        result, last_log_time = _end_of_step(run, done, last_log_time)
        if result is not None:
            info += f" | eval {result['mean']:.1f}"
        if done and state.env_step < cfg.steps:
            obs = begin_episode()
            episode_return, episode_length = 0.0, 0
        advance(info)
    leftover = run.means.pop()
    if leftover:
        log.log({f"train/{k}": v for k, v in leftover.items()}, step=state.env_step)


def _eval_due(state: LoopState, cfg: TrainConfig) -> bool:
    return bool(state.next_eval and state.next_eval <= state.env_step < cfg.steps)


def _checkpoint_due(state: LoopState, cfg: TrainConfig) -> bool:
    return bool(state.next_checkpoint and state.next_checkpoint <= state.env_step < cfg.steps)


def _end_of_step(run: _Run, done: bool,
                 last_log_time: float) -> tuple[dict[str, Any] | None, float]:
    """What follows a step once its row (and, at an episode end, its episode file and log) is
    stored: the due evaluation, the periodic log, the due checkpoint. Returns the evaluation's
    result (None when none ran) and the time of the last periodic log.

    A checkpoint due at the step of an evaluation is taken before the evaluation as well as
    after it: a run killed during a long evaluation (minutes of planning on a CPU) resumes from
    that step and runs the evaluation again (:func:`_collect`), instead of redoing every step
    since the previous checkpoint. The RNGs are saved before the evaluation, so the resumed run
    still records exactly what the uninterrupted one does.
    """
    agent, cfg, state = run.agent, run.cfg, run.state
    result = None
    if done and _eval_due(state, cfg):
        if _checkpoint_due(state, cfg) and state.last_checkpoint_step != state.env_step:
            _checkpoint(run)
        result = _evaluate(run)
        state.next_eval = (state.env_step // cfg.eval_every + 1) * cfg.eval_every
    # (last_log_step: a run extended from its final step logged that step before it ended)
    if (cfg.log_every and state.env_step % cfg.log_every == 0
            and state.last_log_step != state.env_step):
        now = time.perf_counter()
        metrics = {f"train/{k}": v for k, v in run.means.pop().items()}
        metrics.update({k if k.startswith("planner/") else f"planner/{k}": v
                        for k, v in agent.planner_metrics().items()})
        metrics["perf/steps_per_s"] = ((state.env_step - state.last_log_step)
                                       / max(now - last_log_time, 1e-9))
        metrics["buffer/rows"] = len(run.buffer)
        run.log.log(metrics, step=state.env_step)
        state.last_log_step, last_log_time = state.env_step, now
    if done and _checkpoint_due(state, cfg):
        _checkpoint(run)
        prune_checkpoints(run.run_dir, cfg.keep_checkpoints, counts=_resumable)
        state.next_checkpoint = ((state.env_step // cfg.checkpoint_every + 1)
                                 * cfg.checkpoint_every)
    return result, last_log_time


def _evaluate(run: _Run, *, final: bool = False) -> dict[str, Any]:
    cfg, state = run.cfg, run.state
    result = evaluate(run.agent, run.eval_env, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
    rates = {f"eval/{k}": result[k] for k in ("success_rate", "collision_rate",
                                               "collisions_per_episode") if k in result}
    run.log.log({"eval/return_mean": result["mean"], "eval/return_std": result["std"],
                 "eval/length_mean": float(np.mean(result["lengths"])), **rates},
                step=state.env_step)
    previous = max(state.last_eval_step, 0)
    if cfg.video_every and (final or state.env_step // cfg.video_every
                            > previous // cfg.video_every):
        _write_videos(run)
    line = {"step": state.env_step, "wall_time": round(time.time(), 3), **result}
    with open(run.run_dir / "eval.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    state.last_eval_step = state.env_step
    logger.info("step %d: eval return %.2f +- %.2f", state.env_step, result["mean"], result["std"])
    return result


def _write_videos(run: _Run) -> None:
    """GIFs of a greedy episode and of the model's imagination (see worldflux.training.video);
    the agent's state and the RNGs are restored afterwards, so training is unchanged."""
    from worldflux.training.video import make_render_env, write_videos

    seed = run.cfg.seed + EVAL_SEED_OFFSET
    video_env = make_render_env(run.cfg, seed=seed)
    try:
        videos = write_videos(run.run_dir, run.agent, video_env, run.state.env_step, seed)
    finally:
        video_env.close()
    run.log.log(videos["metrics"], step=run.state.env_step)


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _checkpoint(run: _Run, *, within_update: bool = False) -> Path:
    """Save everything a resumed run needs (the episode files are already on disk).

    ``within_update``: taken part-way through the step's update (:func:`_save_point`); such a
    checkpoint does not count as the step's (``last_checkpoint_step`` keeps the previous one),
    so the checkpoints due after the update are still taken.
    """
    state = run.state
    if not within_update:
        state.last_checkpoint_step = state.env_step
    state.elapsed_s = run.elapsed_before + time.perf_counter() - run.clock_start
    state.metrics_bytes = _file_size(run.run_dir / "metrics.jsonl")  # flushed at every log
    state.eval_bytes = _file_size(run.run_dir / "eval.jsonl")
    loop = {**asdict(state), "metric_means": run.means.state(), "rng": capture_rng_state()}
    return save_checkpoint(run.run_dir, state.env_step,
                           {"agent": run.agent.state_dict(), "loop": loop,
                            "buffer": {"sampler": run.buffer.sampler_state()}})


def _save_point(run: _Run) -> Callable[[int], None]:
    """The agent's ``save_point``: within a burst of updates at an episode end, a checkpoint
    after every ``checkpoint_every`` updates (an update costs about what a step with its update
    does). The newest replaces the previous one at the same step."""
    def save_point(done: int) -> None:
        every = run.cfg.checkpoint_every
        if run.state.episode_open or not every or done % every:
            return  # mid-episode checkpoints cannot be continued from (_why_not_continued)
        _checkpoint(run, within_update=True)
        logger.info("step %d: checkpoint after %d updates of the step's update",
                    run.state.env_step, done)
    return save_point


def _why_not_continued(loop: Mapping[str, Any], steps: int | None) -> str | None:
    """Why a run cannot go on to ``steps`` (None: any further step) from a checkpoint's loop
    state; None when it can."""
    if "replay_rows" not in loop:
        return "written by a worldflux without resume support (no replay buffer state)"
    if loop["episode_open"] and (steps is None or steps > loop["env_step"]):
        return "taken mid-episode (the final one), so it cannot be extended"
    return None


def _resumable(path: Path) -> bool:
    """Whether a run can continue from checkpoint ``path`` (read without verifying weights)."""
    try:
        loop = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))["state"]["loop"]
        return _why_not_continued(loop, None) is None
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _finish(run: _Run) -> dict[str, Any]:
    """Final checkpoint (unless one was just made at this very step), then final evaluation."""
    if run.state.last_checkpoint_step != run.state.env_step:
        _checkpoint(run)
    return _evaluate(run, final=True)


# -- resuming -------------------------------------------------------------------------------------
_MAY_CHANGE_ON_RESUME = ("train.steps", "train.keep_checkpoints")  # steps may only grow


def _resume_configs(run_dir: Path, agent_name: str | None, train_config: TrainConfig | None,
                    agent_config: Any, agent_overrides: Mapping[str, str] | None) -> dict[str, Any]:
    """Saved run config, and the configs to continue with; refuses settings that conflict."""
    from worldflux.agents import agent_config_class
    from worldflux.agents.base import AgentRegistry
    from worldflux.core.config import apply_overrides, from_dict

    prepare_run_dir(run_dir, resume=True)
    config_file = run_dir / "config.json"
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        saved_agent = AgentRegistry.get(saved["agent"]).name
        saved_train = from_dict(TrainConfig, saved["train"])
        saved_agent_config = from_dict(agent_config_class(saved_agent), saved["agent_config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"resume: {config_file} is not a valid run config ({exc!r})") from None
    if agent_name is not None and AgentRegistry.get(agent_name).name != saved_agent:
        raise ConfigError(f"resume: {run_dir} is a run of agent '{saved_agent}', "
                          f"got agent '{agent_name}'")
    cfg = train_config if train_config is not None else saved_train
    given_agent = agent_config if agent_config is not None else saved_agent_config
    if agent_overrides:
        given_agent = apply_overrides(given_agent, dict(agent_overrides))
    conflicts = _differences(to_dict(saved_train), to_dict(cfg), "train.")
    conflicts = [c for c in conflicts if c[0] not in _MAY_CHANGE_ON_RESUME]
    if cfg.steps < saved_train.steps:
        conflicts.append(("train.steps", saved_train.steps, cfg.steps))
    conflicts += _differences(to_dict(saved_agent_config), to_dict(given_agent), "")
    added = (_absent(saved["train"], to_dict(cfg), "train.")
             + _absent(saved["agent_config"], to_dict(given_agent), ""))
    if added:
        # The saved side of such a setting is only the default filled in on reading, so the value
        # given now is no conflict: it is what the run takes from here on.
        conflicts = [c for c in conflicts if c[0] not in {k for k, _ in added}]
        logger.warning(
            "resume: %s has no value for settings added to worldflux after the run started; "
            "they take the values given now: %s", config_file,
            ", ".join(f"{k}={v!r}" for k, v in added))
    if conflicts:
        listed = "; ".join(f"{key}: saved {old!r}, given {new!r}" for key, old, new in conflicts)
        raise ConfigError(
            f"resume: settings conflict with {config_file}: {listed}. A resumed run keeps its "
            "settings (only train.steps may grow); start a new run to change them"
        )
    return {"agent": saved_agent, "configs": (cfg, given_agent), "run_config": saved}


def _differences(saved: Mapping[str, Any], given: Mapping[str, Any],
                 prefix: str) -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(saved) | set(given)):
        old, new = saved.get(key), given.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append((f"{prefix}{key}", old, new))
    return out


def _absent(saved: Mapping[str, Any], given: Mapping[str, Any],
            prefix: str) -> list[tuple[str, Any]]:
    """Settings of ``given`` that the saved config does not name at all, with their values."""
    out = []
    for key, value in given.items():
        if key not in saved:
            out.append((f"{prefix}{key}", value))
        elif isinstance(value, Mapping) and isinstance(saved[key], Mapping):
            out += _absent(saved[key], value, f"{prefix}{key}.")
    return out


def _check_specs(run_dir: Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    for key in ("obs_spec", "action_spec"):
        if key in saved and json.loads(json.dumps(now[key])) != saved[key]:
            raise ConfigError(f"resume: the env's {key} is now {now[key]}, the run in {run_dir} "
                              f"was trained with {saved[key]} (env or wrapper changed?)")


def _repair_checkpoint_dir(run_dir: Path) -> None:
    """Undo what a kill during :func:`save_checkpoint` leaves behind."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(".old-step_"):  # killed between the two renames of a re-save
            final = root / path.name[len(".old-"):].rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)
        elif path.name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)


def _pick_checkpoint(run_dir: Path, cfg: TrainConfig) -> tuple[Path, dict[str, Any], list[Path]]:
    """Newest checkpoint that verifies and can be continued; also the newer ones passed over."""
    passed: list[Path] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("resume: skipping damaged checkpoint %s: %s", path.name, exc)
            passed.append(path)
            continue
        reason = _why_not_continued(loaded["state"].get("loop", {}), cfg.steps)
        if reason is None:
            return path, loaded["state"], passed
        logger.warning("resume: skipping checkpoint %s: %s", path.name, reason)
        passed.append(path)
    raise ConfigError(
        f"resume: no checkpoint in {run_dir / 'checkpoints'} can be continued ("
        + ", ".join(p.name for p in passed) + "); start a new run with a new --out"
    )


def _truncate(path: Path, size: int) -> None:
    current = _file_size(path)
    if current < size:
        raise CheckpointError(f"resume: {path} has {current} bytes, fewer than the {size} "
                              "the checkpoint recorded (the file was cut or replaced)")
    if path.exists():
        os.truncate(path, size)


def _keep_final_evaluations(run_dir: Path, eval_bytes: int) -> None:
    """Copy the final evaluation of a finished run, which its extension cuts from
    ``eval.jsonl`` (the longer run does not evaluate at that step), to ``eval_finals.jsonl``,
    marked ``"final": true``; a line already there (an extension killed and resumed) is not
    repeated."""
    path, kept = run_dir / "eval.jsonl", run_dir / FINAL_EVALS_FILE
    try:
        final_step = int(json.loads((run_dir / "summary.json").read_text("utf-8"))["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable summary: nothing known to be final
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        fh.seek(eval_bytes)
        tail = fh.read().decode("utf-8", errors="replace").splitlines()
    present = {line for line in kept.read_text(encoding="utf-8").splitlines()} \
        if kept.is_file() else set()
    lines = []
    for line in tail:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if not isinstance(record, dict) or record.get("step") != final_step:
            continue  # evaluations the resumed run will make again
        line = json.dumps({**record, "final": True})
        if line not in present:
            lines.append(line)
    if lines:
        with open(kept, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        logger.info("resume: the final evaluation at step %s of the shorter run is kept in %s",
                    ", ".join(str(json.loads(line)["step"]) for line in lines), kept)


def _restore(run_dir: Path, cfg: TrainConfig, agent, buffer,
             means: _MetricMeans) -> tuple[LoopState, Path | None] | None:
    """Bring the run directory, agent, buffer and RNGs back to the newest usable checkpoint.

    Returns ``(loop state, checkpoint)``, or None when the run is finished and no more steps
    are asked. A run killed before its first checkpoint starts over (checkpoint None).
    """
    _repair_checkpoint_dir(run_dir)
    for folder in (run_dir, run_dir / REPLAY_DIR):  # atomic writes cut short by the kill
        for leftover in folder.glob(".*.tmp") if folder.is_dir() else ():
            leftover.unlink(missing_ok=True)
    if not list_checkpoints(run_dir):
        logger.warning("resume: %s has no checkpoint yet; starting the run over from step 0",
                       run_dir)
        path, saved, passed = None, None, []
        loop: dict[str, Any] = asdict(LoopState(next_eval=cfg.eval_every,
                                                next_checkpoint=cfg.checkpoint_every))
    else:
        path, saved, passed = _pick_checkpoint(run_dir, cfg)
        loop = dict(saved["loop"])
        if loop["env_step"] >= cfg.steps and (run_dir / "summary.json").is_file():
            logger.info("resume: %s is finished (step %d); nothing to do", run_dir,
                        loop["env_step"])
            return None
        if passed:
            logger.warning("resume: continuing from %s (step %d) instead of %s", path.name,
                           loop["env_step"], ", ".join(p.name for p in passed))
    for newer in passed:  # out of list_checkpoints' sight, kept for inspection
        discarded = run_dir / "checkpoints" / "discarded" / newer.name
        if discarded.exists():
            shutil.rmtree(discarded)
        discarded.parent.mkdir(parents=True, exist_ok=True)
        os.replace(newer, discarded)

    if (run_dir / "summary.json").is_file():  # a finished run, extended to more steps
        _keep_final_evaluations(run_dir, int(loop["eval_bytes"]))
    _truncate(run_dir / "metrics.jsonl", int(loop["metrics_bytes"]))
    _truncate(run_dir / "eval.jsonl", int(loop["eval_bytes"]))
    (run_dir / "summary.json").unlink(missing_ok=True)

    episodes, replay = int(loop["episodes"]), run_dir / REPLAY_DIR
    files = sorted(replay.glob("episode-*.npz")) if replay.is_dir() else []
    for file in files[episodes:]:  # written after the checkpoint; they will be written again
        file.unlink()
    rows = 0
    for index in range(episodes):
        episode = load_episode(replay / f"episode-{index:08d}.npz", obs_shape=buffer.obs_shape,
                               action_dim=buffer.action_dim, obs_dtype=buffer.obs_dtype)
        buffer.add_episode(episode)
        rows += len(episode["rewards"])
    if rows != loop["replay_rows"]:
        raise CheckpointError(f"resume: {replay} holds {rows} rows in episodes 0..{episodes - 1}, "
                              f"the checkpoint {path} recorded {loop['replay_rows']}")

    if saved is not None:
        buffer.load_sampler_state(saved["buffer"]["sampler"])
        agent.load_state_dict(saved["agent"])
        means.load(loop.pop("metric_means"))
        rng = loop.pop("rng")
        state = LoopState(**{f.name: loop[f.name] for f in fields(LoopState) if f.name in loop})
        restore_rng_state(rng)  # last: building the agent reseeded torch
    else:
        state = LoopState(**loop)
    state.resumes += 1
    logger.info("resume: continuing %s from step %d (%d episodes, %d replay rows)", run_dir,
                state.env_step, state.episodes, rows)
    return state, path
