"""Metric logging: one :class:`Logger` fanning out to backends (JSON lines, TensorBoard, W&B).

``metrics.jsonl`` is always written, one JSON object per ``log`` call::

    {"step": 1000, "wall_time": 1716200000.1, "elapsed": 12.3, "episode/return": -1200.5}

``step`` counts agent steps, ``wall_time`` is Unix time and ``elapsed`` seconds since the logger
was opened. Non-finite values are written as ``null`` (JSON has no NaN).

TensorBoard events go to ``RUN_DIR/tb`` (on by default). Weights & Biases
(``pip install "worldflux[wandb]"``) is opt-in: files under ``RUN_DIR/wandb``, the W&B run id in
``RUN_DIR/wandb_run_id.txt`` so that a resumed training run continues the same W&B run;
``WANDB_MODE=offline`` logs without an account (upload later with ``wandb sync RUN_DIR/wandb``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from worldflux.core.errors import ConfigError
from worldflux.core.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["JsonlBackend", "LogBackend", "Logger", "TensorBoardBackend", "WandbBackend"]

WANDB_ID_FILE = "wandb_run_id.txt"
"""Name of the file in the run directory holding the W&B run id (continued on resume)."""
WANDB_MODES = ("online", "offline", "disabled", "shared")


class LogBackend(Protocol):
    """Where metrics go. ``write`` receives plain floats keyed by metric name."""

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlBackend:
    """Appends one JSON object per call to ``path`` (flushed at once, so a crash loses nothing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None:
        record: dict[str, Any] = {"step": int(step), "wall_time": round(wall_time, 3),
                                  "elapsed": round(elapsed, 3)}
        record.update({k: (v if math.isfinite(v) else None) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class TensorBoardBackend:
    """Scalars into a TensorBoard event file under ``log_dir`` (``RUN_DIR/tb``).

    ``purge_step``: a resumed run passes its first new step, so TensorBoard drops the events
    at or after it that the interrupted run wrote past its checkpoint.
    """

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is a dependency, but may be stripped out
            raise ConfigError(
                "TensorBoard logging needs the `tensorboard` package (pip install tensorboard); "
                "or turn it off with --set train.tensorboard=false"
            ) from exc
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, global_step=int(step), walltime=wall_time)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class WandbBackend:
    """Scalars into a Weights & Biases run (``pip install "worldflux[wandb]"``).

    Each ``write`` becomes one W&B history row ``{"step": step, **metrics}``; every metric is
    plotted against ``step`` (agent steps, as in ``metrics.jsonl``) rather than W&B's own
    ``_step``, so a resumed run that repeats steps after its checkpoint loses no row.

    Args:
        run_dir: the training run directory; W&B writes under ``RUN_DIR/wandb``.
        project: W&B project name.
        config: run configuration shown in W&B (e.g. ``config.json``'s content).
        name: display name of the W&B run (default: W&B picks one).
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or ``"shared"``; None honours
            ``WANDB_MODE`` (online when unset).
        resume_id: W&B run id to continue. Default: the id stored in
            ``RUN_DIR/wandb_run_id.txt`` by an earlier session of this run, else a new one.
            The id used is written to that file before the W&B run starts.

    Raises:
        ConfigError: ``wandb`` is not installed, an unknown ``mode``, or W&B refused to start
            (not logged in while online...).
    """

    def __init__(self, run_dir: str | os.PathLike, project: str,
                 config: Mapping[str, Any] | None = None, name: str | None = None,
                 mode: str | None = None, resume_id: str | None = None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError(
                "Weights & Biases logging needs the `wandb` package: pip install "
                "\"worldflux[wandb]\"; or turn it off (train.wandb=false)"
            ) from exc
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError(f"wandb mode: got {mode!r}, expected one of {WANDB_MODES} or None "
                              "(use WANDB_MODE)")
        if not project or not isinstance(project, str):
            raise ConfigError(f"wandb project: got {project!r}, expected a non-empty name")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / WANDB_ID_FILE
        if resume_id is None and id_file.is_file():
            resume_id = id_file.read_text(encoding="utf-8").strip() or None
        self.run_id = resume_id or _new_wandb_id()
        atomic_write_text(id_file, self.run_id + "\n")
        try:
            self._run = wandb.init(
                project=project, dir=str(run_dir), id=self.run_id, resume="allow", name=name,
                mode=mode, config=dict(config) if config is not None else None,
                allow_val_change=True,  # an extended run changes train.steps
                settings=wandb.Settings(console="off"),  # stdout stays the terminal's
            )
        except wandb.errors.Error as exc:
            raise ConfigError(
                f"wandb: could not start run {self.run_id} of project {project!r} ({exc}); "
                "log in (`wandb login` or WANDB_API_KEY) or set WANDB_MODE=offline"
            ) from exc
        self._run.define_metric("step")
        self._run.define_metric("*", step_metric="step")
        self._closed = False

    @property
    def run(self):
        """The ``wandb`` run object (to log media, tables... next to the scalars)."""
        return self._run

    def write(self, step: int, wall_time: float, elapsed: float,
              metrics: Mapping[str, float]) -> None:
        self._run.log({"step": int(step), **metrics})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._run.finish()


def _new_wandb_id() -> str:
    """Eight random lowercase letters and digits, like the ids W&B generates itself."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Logger:
    """Sends scalar metrics to every backend; use as a context manager or call :meth:`close`.

    Example::

        with Logger.for_run(run_dir) as log:
            log.log({"episode/return": 12.5}, step=200)
    """

    def __init__(self, backends: list[LogBackend], *, elapsed_offset: float = 0.0) -> None:
        self.backends = list(backends)
        self._start = time.time() - float(elapsed_offset)
        self._closed = False

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, *, tensorboard: bool = True,
                elapsed_offset: float = 0.0, purge_step: int | None = None,
                wandb: bool = False, wandb_project: str | None = None,
                config: Mapping[str, Any] | None = None) -> Logger:
        """``RUN_DIR/metrics.jsonl``; events in ``RUN_DIR/tb`` when ``tensorboard``; and a W&B
        run under ``RUN_DIR/wandb`` when ``wandb`` (project ``wandb_project``, default
        ``"worldflux"``, with ``config`` as its configuration; see :class:`WandbBackend`).

        A resumed run passes ``elapsed_offset`` (seconds the run had already run) so
        ``elapsed`` continues, and ``purge_step`` (see :class:`TensorBoardBackend`); its W&B
        run continues through the id in ``RUN_DIR/wandb_run_id.txt``.
        """
        run_dir = Path(run_dir)
        backends: list[LogBackend] = [JsonlBackend(run_dir / "metrics.jsonl")]
        try:
            if tensorboard:
                backends.append(TensorBoardBackend(run_dir / "tb", purge_step=purge_step))
            if wandb:
                backends.append(WandbBackend(run_dir, wandb_project or "worldflux", config))
        except BaseException:
            for backend in backends:
                backend.close()
            raise
        return cls(backends, elapsed_offset=elapsed_offset)

    @property
    def elapsed(self) -> float:
        """Seconds since the logger was opened (plus ``elapsed_offset``)."""
        return time.time() - self._start

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write ``metrics`` (numbers, numpy scalars or 0-d tensors) at agent step ``step``."""
        if self._closed:
            raise RuntimeError("Logger.log: the logger is closed")
        values = {key: _to_float(key, value) for key, value in metrics.items()}
        if not values:
            return
        now = time.time()
        for backend in self.backends:
            backend.write(step, now, now - self._start, values)

    def close(self) -> None:
        """Flush and close every backend (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for backend in self.backends:
            try:
                backend.close()
            except Exception:  # one failing backend must not keep the others open
                logger.exception("closing log backend %s failed", type(backend).__name__)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metric '{key}': got {type(value).__name__} {value!r}, expected a number"
        ) from exc
